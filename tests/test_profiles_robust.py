"""profiles.py at scale and against real-world servers: one test (or more) per property, each
against the loopback server of tests/openai_server.py (real HTTP on 127.0.0.1, no mocks).

Run: python -m pytest -q tests/test_profiles_robust.py
"""
import json
import os
import pickle
import re
import socket
import time

import numpy as np
import pytest

from test_profiles import DIM, FILES, flags, journal_records, make_dataset, read_outputs  # noqa: F401
from test_profiles import api_key, reference, server  # noqa: F401 (fixtures)
import profiles  # noqa: E402
from openai_server import FakeOpenAI, text_vector  # noqa: E402


def load(folder, name):
    path = os.path.join(folder, name)
    return json.load(open(path)) if name.endswith('.json') else pickle.load(open(path, 'rb'))


# ---------------------------------------------------------------------------- formats and parser

@pytest.mark.parametrize('k', [2, 4, 6])
@pytest.mark.parametrize('side', ['user', 'item'])
def test_every_shown_format_is_valid_json_with_its_fields_but_no_answer(side, k):
    for step in ('F1', 'F2', 'F3', 'F4'):
        shown = profiles.system_prompt(side, step, k).rsplit('\n', 1)[-1]
        obj = json.loads(shown)  # raises if the format is not JSON
        schema = profiles.step_schema(side, step, k)
        fields = profiles.check_schema(obj, schema)  # the fields the schema asks for ...
        if step == 'F4':
            assert len(fields['profiles']) == k - 1
        with pytest.raises(profiles.BadReply, match='placeholder <'):  # ... but placeholders, not an answer
            profiles.check_reply(step, obj, schema, {'op': 'the original profile'})


def test_server_that_copies_the_shown_format_completes(tmp_path):
    s = FakeOpenAI(dim=DIM, literal=True)
    try:
        folder = make_dataset(tmp_path)
        assert profiles.main(flags(s, tmp_path)) == 0
    finally:
        s.close()
    nps = load(folder, 'usr_prf_2.json')
    assert len(nps) == 6 and all(t.startswith('new profile 2 ') for t in nps)
    assert not any(r['n_messages'] > 2 for r in s.requests('chat'))  # no re-ask was needed


def check(step, obj, k=4):
    return profiles.check_reply(step, obj, profiles.step_schema('user', step, k), {'op': 'op'})


def test_parser_takes_line_breaks_inside_strings():
    assert profiles.parse_reply('{"summarization": "two\nlines", "reasoning": "r"}')['summarization'] == 'two\nlines'


def test_parser_takes_a_string_for_a_list_and_a_list_of_one_for_a_string():
    assert check('F3', {'latent_preferences': 'quiet evenings'}) == ['quiet evenings']
    assert check('F2', {'positive': 'x', 'negative': []}) == {'positive': ['x'], 'negative': []}
    assert check('F1', {'summarization': ['a profile'], 'reasoning': 'r'}) == 'a profile'
    assert check('F4', {'profiles': 'only one'}, k=2) == ['only one']
    with pytest.raises(profiles.BadReply):
        check('F1', {'summarization': ['a', 'b'], 'reasoning': 'r'})
    with pytest.raises(profiles.BadReply):
        check('F4', {'profiles': 'only one'})


def test_prompts_follow_the_paper():
    f4 = profiles.system_prompt('user', 'F4', 4)
    assert 'different perspectives' in f4 and 'as different as possible from the original profile' in f4
    everything = ' '.join(profiles.system_prompt(side, step, 4) for side in ('user', 'item')
                          for step in ('F1', 'F2', 'F3', 'F4'))
    assert 'second person' not in everything and 'only what the profile supports' not in everything


def test_placeholder_copies_are_found_numbered_cased_or_inside_a_text():
    with pytest.raises(profiles.BadReply, match='placeholder <new profile 1>'):
        check('F4', {'profiles': ['<new profile 1>', '<new profile 2>', '<new profile 3>']})
    for copied in ('<New Profile 7>', 'A fan of quiet films. <new  profile>', '< new profile 2 >'):
        with pytest.raises(profiles.BadReply, match='placeholder'):
            check('F4', {'profiles': ['a', 'b', copied]})
    with pytest.raises(profiles.BadReply, match='placeholder <at most two sentences>'):
        check('F1', {'summarization': 'a profile', 'reasoning': '<at most two sentences>'})
    with pytest.raises(profiles.BadReply, match='placeholder <aspect>'):
        check('F2', {'positive': ['comedies'], 'negative': ['<aspect>']})
    # angle brackets that are no placeholder of the step's own format are text
    assert check('F4', {'profiles': ['<<OP 1>> a', '<aspect> b', 'new profile 1 c']}) == \
        ['<<OP 1>> a', '<aspect> b', 'new profile 1 c']


class PlaceholderServer(FakeOpenAI):
    """The loopback server, where fault kind 'placeholder' answers a chat request with the format its
    system prompt shows, copied as it stands (what small models do)."""

    def answer(self, route, body, fault):
        if fault and fault['kind'] == 'placeholder':
            shown = body['messages'][0]['content'].rstrip().rsplit('\n', 1)[-1]
            usage = {'prompt_tokens': 10, 'completion_tokens': 5, 'total_tokens': 15}
            return 200, {'object': 'chat.completion', 'model': body['model'], 'usage': usage,
                         'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': shown},
                                      'finish_reason': 'stop'}]}, None
        return super().answer(route, body, fault)


def test_placeholder_reply_is_asked_again_and_the_next_reply_is_used(tmp_path, reference):
    s = PlaceholderServer(dim=DIM)
    try:
        folder = make_dataset(tmp_path)
        s.fault('placeholder', 'chat', times=1, step='F4', match='<<u003>>')
        s.fault('placeholder', 'chat', times=1, step='F2', match='<<i001>>')
        assert profiles.main(flags(s, tmp_path, '--max-reasks', '1')) == 0
    finally:
        s.close()
    assert all(f['times'] == 0 for f in s.faults)
    for match, step in (('<<u003>>', 'F4'), ('<<i001>>', 'F2')):
        asked = [r for r in s.requests('chat') if r['step'] == step and match in r['text']]
        assert [r['n_messages'] for r in asked] == [2, 4]  # the placeholder reply, then the re-ask
    assert read_outputs(folder) == reference  # the reply after the re-ask is used, as without the copy
    records = journal_records(os.path.join(folder, 'usr_prf_journal.jsonl'))
    assert [r['usage']['chat_calls'] for r in records if r['id'] == 3] == [4]
    assert all(r['status'] == 'done' for r in records)


def test_server_that_always_answers_placeholders_ends_in_the_fallback(tmp_path, capsys):
    s = PlaceholderServer(dim=DIM)
    try:
        folder = make_dataset(tmp_path)
        s.fault('placeholder', 'chat', times=-1, step='F4', match='<<u002>>')
        assert profiles.main(flags(s, tmp_path, '--side', 'user', '--max-reasks', '2')) == 3
    finally:
        s.close()
    asked = [r for r in s.requests('chat') if r['step'] == 'F4' and '<<u002>>' in r['text']]
    assert [r['n_messages'] for r in asked] == [2, 4, 4]  # first try and the two re-asks
    ops = load(folder, 'usr_prf.json')
    nps = [load(folder, f'usr_prf_{k}.json') for k in (1, 2, 3)]
    assert all(t[2] == ops[2] for t in nps)  # the NPs of user 2 fall back to its OP
    assert not any('<new profile' in t[i] for t in nps for i in range(6))
    assert 'fallback user 2: F4: no usable reply in 3 tries, last: it repeats the placeholder <new profile 1>' \
        in capsys.readouterr().out


# ---------------------------------------------------------------------------- fallbacks

def test_entity_whose_reply_stays_malformed_falls_back_and_retry_resumes_at_that_step(server, tmp_path, capsys):
    folder = make_dataset(tmp_path)
    server.fault('not_json', 'chat', times=-1, step='F4', match='<<u003>>')
    args = flags(server, tmp_path, '--side', 'user', '--max-reasks', '1', '--report')
    assert profiles.main(args) == 3
    ops, nps = load(folder, 'usr_prf.json'), load(folder, 'usr_prf_1.json')
    assert nps[3] == ops[3] and all(nps[i] != ops[i] for i in range(6) if i != 3)  # NPs of 3 fall back to its OP
    c0, c1 = load(folder, 'usr_emb_np.pkl'), load(folder, 'usr_emb_np_1.pkl')
    np.testing.assert_array_equal(c1[3], c0[3])
    out = capsys.readouterr().out
    assert 'user summary: 5 done and 1 with fallback' in out and 'fallback user 3: F4: no usable reply in 2 tries' in out
    report = load(folder, 'usr_prf_report.json')
    assert report['fallbacks'] == 1 and report['n'] == 5
    server.faults.clear()
    n_log = len(server.log)
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--retry-fallbacks')) == 0
    again = server.log[n_log:]
    assert [r['step'] for r in again if r['route'] == 'chat'] == ['F4']  # F2, F3 of entity 3 were kept
    assert load(folder, 'usr_prf_1.json')[3] != ops[3]


def test_input_too_long_for_the_embedding_model_is_cut_once(tmp_path, capsys):
    s = FakeOpenAI(dim=DIM, max_input_chars=60)
    try:
        folder = make_dataset(tmp_path)
        ops = load(folder, 'usr_prf.json')
        ops[2] = ops[2] + ' and more' * 20  # longer than the server takes
        json.dump(ops, open(os.path.join(folder, 'usr_prf.json'), 'w'))
        assert profiles.main(flags(s, tmp_path, '--side', 'user', '--max-input-chars', '50')) == 3
    finally:
        s.close()
    c = load(folder, 'usr_emb_np.pkl')
    np.testing.assert_array_equal(c[2], text_vector(ops[2][:50], DIM))  # the cut text was embedded
    np.testing.assert_array_equal(c[1], text_vector(ops[1], DIM))
    assert [r['status'] for r in s.requests('embeddings') if r['text'].startswith('<<u002>>')] == [400, 200]
    assert 'embedding inputs cut to 50 characters after: embeddings: HTTP 400' in capsys.readouterr().out


def test_embeddings_failing_for_good_give_the_mean_row(server, tmp_path):
    folder = make_dataset(tmp_path)
    server.fault('wrong_dim', 'embeddings', times=-1, match='<<u001>>')
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--max-attempts', '2')) == 3
    for name in FILES['user'][3:]:
        c = load(folder, name)
        np.testing.assert_allclose(c[1], c[[0, 2, 3, 4, 5]].mean(0), rtol=1e-6)
    record = [r for r in journal_records(os.path.join(folder, 'usr_prf_journal.jsonl')) if r['id'] == 1][0]
    assert record['emb_fallback'] and 'mean embedding' in record['reason']


# ---------------------------------------------------------------------------- fail fast

def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_no_server_stops_within_seconds(tmp_path, capsys):
    make_dataset(tmp_path)
    url = f'http://127.0.0.1:{free_port()}/v1'
    t0 = time.time()
    assert profiles.main(['--dataset', 'toy', '--data-dir', str(tmp_path), '--base-url', url,
                          '--embed-dim', str(DIM), '--concurrency', '1']) == 1  # default retries and backoff
    assert time.time() - t0 < 6
    err = capsys.readouterr().err
    assert f'error: cannot connect to {url}/chat/completions (step F2)' in err and 'Connection refused' in err


@pytest.mark.parametrize('kind,route,step,says', [
    ('403', 'chat', 'F2', 'HTTP 403: not allowed'),
    ('404', 'chat', 'F2', 'HTTP 404: The model `x` does not exist'),
    ('quota', 'chat', 'F2', 'HTTP 429: You exceeded your current quota'),
    ('404', 'embeddings', 'embeddings', 'HTTP 404'),
])
def test_failures_that_do_not_go_away_stop_the_run(server, tmp_path, capsys, kind, route, step, says):
    folder = make_dataset(tmp_path)
    server.fault(kind, route, times=-1)
    t0 = time.time()
    args = flags(server, tmp_path, '--backoff', '2', '--max-attempts', '6', '--concurrency', '2')
    assert profiles.main(args) == 1
    assert time.time() - t0 < 5
    err = capsys.readouterr().err
    assert f'error: {server.url}/{route.replace("chat", "chat/completions")} (step {step}) answered {says}' in err
    assert len(server.requests(route)) <= 2 * profiles.FAIL_FAST  # not retried as a rate limit
    assert not journal_records(os.path.join(folder, 'usr_prf_journal.jsonl'))  # nobody falls back: stopped


# ---------------------------------------------------------------------------- timeouts

def test_reset_mid_body_costs_no_read_timeout(server, tmp_path):
    make_dataset(tmp_path)
    server.fault('reset', 'chat', times=3)
    server.fault('reset', 'embeddings', times=2)
    t0 = time.time()
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--timeout', '60', '--limit', '2')) == 0
    assert time.time() - t0 < 5  # 5 resets, each retried at once (not after the 60 s read timeout)
    assert all(f['times'] == 0 for f in server.faults)


def test_stalled_body_costs_the_read_timeout_only(server, tmp_path):
    make_dataset(tmp_path)
    server.fault('stall', 'chat', times=1, delay=3)
    t0 = time.time()
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--timeout', '0.3', '--limit', '1')) == 0
    assert time.time() - t0 < 2.5
    args = profiles.parse_args(['--dataset', 'x', '--connect-timeout', '3', '--timeout', '50'])
    assert profiles.Endpoint('u', '', args, 'KEY').timeout == (3, 50)


# ---------------------------------------------------------------------------- max_tokens, usage

def test_max_tokens_sent_and_a_cut_reply_is_asked_once_with_more(server, tmp_path, capfd):
    make_dataset(tmp_path)
    server.fault('length', 'chat', times=1, step='F4')
    server.fault('no_usage', 'chat', times=2)
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--limit', '1', '--concurrency', '1')) == 0
    chats = server.requests('chat')
    assert [r['max_tokens'] for r in chats] == [400, 400, 750, 1500]  # F2, F3, F4 cut by length, F4 again
    assert chats[-1]['n_messages'] == 2  # the same messages, not a longer conversation
    err = capfd.readouterr().err
    assert err.count('sends no "usage" with its chat replies') == 1


# ---------------------------------------------------------------------------- scale: store, journal

def test_journal_holds_no_vectors_and_a_cut_store_block_is_redone(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--limit', '3')) == 0
    store = os.path.join(folder, 'usr_emb_store.f32')
    assert os.path.getsize(store) == 3 * 4 * DIM * 4  # [K, d] float32 per entity
    journal = open(os.path.join(folder, 'usr_prf_journal.jsonl')).read()
    assert '"emb"' not in journal and '"row": 2' in journal
    with open(store, 'ab') as f:
        f.write(b'\0' * 100)  # a block cut short by a kill (no journal line names it)
    assert profiles.main(flags(server, tmp_path)) == 0
    assert os.path.getsize(store) == 6 * 4 * DIM * 4
    assert read_outputs(folder) == reference


def test_read_journal_keeps_offsets_not_texts(tmp_path):
    path = tmp_path / 'j.jsonl'
    lines = [{'header': {'n': 3}}] + [{'id': i, 'status': 'done', 'op': 'x' * 1000, 'nps': ['y'], 'row': i}
                                      for i in range(3)]
    text = [json.dumps(r) + '\n' for r in lines]
    path.write_text(''.join(text) + '{"id": 3, "sta')  # and a line cut by a kill
    header, index, steps, batches = profiles.read_journal(str(path))
    assert header == {'n': 3} and steps == {} and batches == {} and path.read_text() == ''.join(text)
    assert vars(index[1]) == {'status': 'done', 'offset': len(text[0]) + len(text[1]), 'row': 1,
                              'emb_fallback': False}
    with open(path, 'rb') as f:
        assert profiles.read_record(f, index[2])['id'] == 2


def test_output_files_get_the_usual_permissions(server, tmp_path):
    old = os.umask(0o022)
    try:
        folder = make_dataset(tmp_path)
        assert profiles.main(flags(server, tmp_path, '--report')) == 0
    finally:
        os.umask(old)
    for name in FILES['user'] + FILES['item'] + ['usr_prf_report.json']:
        assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o644, name


# ---------------------------------------------------------------------------- dry run

def test_dry_run_prices_at_the_word_cap_and_estimates_time(server, tmp_path, capsys):
    make_dataset(tmp_path)
    args = flags(server, tmp_path, '--dry-run', '--side', 'user', '--price-in', '2', '--price-out', '0',
                 '--concurrency', '3')
    assert profiles.main(args) == 0
    out = capsys.readouterr().out
    prompt = float(re.search(r'~([\d,]+) prompt', out).group(1).replace(',', ''))
    completion = float(re.search(r'\+ ~([\d,]+) completion', out).group(1).replace(',', ''))
    cost = float(re.search(r'cost ~\$([\d.]+) online', out).group(1))
    assert cost == pytest.approx(2 * prompt / 1e6, abs=0.006)
    assert completion >= 6 * 3 * 100 * 4 / 3  # 6 users x 3 NPs at the 100-word cap
    minutes = float(re.search(r'time ~([\d.]+) min at --concurrency 3', out).group(1))
    assert minutes > 0 and server.log == []


# ---------------------------------------------------------------------------- end to end at fault rate

def test_random_faults_give_the_reference_files(tmp_path, reference):
    s = FakeOpenAI(dim=DIM, fault_rate=0.3, seed=1)
    try:
        folder = make_dataset(tmp_path)
        assert profiles.main(flags(s, tmp_path, '--max-attempts', '8', '--max-reasks', '4')) == 0
    finally:
        s.close()
    assert read_outputs(folder) == reference
    assert len(s.requests()) > 44  # faults were served (44 requests without any)
