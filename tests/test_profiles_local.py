"""profiles.py against servers that behave like local LLM servers (llama.cpp, vLLM, Ollama): structured
outputs (--json-schema), a separate embedding server (--embed-base-url), token-level embeddings.
All against the loopback server of tests/openai_server.py.

Run: python -m pytest -q tests/test_profiles_local.py
"""
import json
import os

import pytest

from test_profiles import DIM, FILES, flags, journal_records, make_dataset, read_outputs  # noqa: F401
from test_profiles import api_key, reference, server  # noqa: F401 (fixtures)
import profiles  # noqa: E402
from openai_server import FakeOpenAI  # noqa: E402


@pytest.mark.parametrize('step', ['F1', 'F2', 'F3', 'F4'])
def test_prompt_shows_its_schema_and_the_parser_checks_it(step):
    schema = profiles.step_schema('user', step, 4)
    shown = json.loads(profiles.system_prompt('user', step, 4).rsplit('\n', 1)[-1])
    assert sorted(shown) == sorted(schema['properties']) == sorted(schema['required'])
    for key, spec in schema['properties'].items():
        assert isinstance(shown[key], str if spec['type'] == 'string' else list)
        if spec.get('maxItems'):
            assert len(shown[key]) == spec['maxItems'] == 3  # F4: K-1 new profiles
    missing = dict(shown)
    missing.pop(schema['required'][0])
    with pytest.raises(profiles.BadReply):
        profiles.check_schema(missing, schema)


def test_json_schema_lets_a_format_blind_model_complete(tmp_path, capsys):
    s = FakeOpenAI(dim=DIM, needs_schema=True)
    try:
        folder = make_dataset(tmp_path)
        assert profiles.main(flags(s, tmp_path, '--side', 'user', '--max-reasks', '1')) == 3  # off-format
        assert 'no usable reply' in capsys.readouterr().out
        out = tmp_path / 'schema'
        assert profiles.main(flags(s, tmp_path, '--side', 'user', '--json-schema', '--out-dir', str(out))) == 0
    finally:
        s.close()
    chats = [r for r in s.requests('chat') if r['response_format'] == 'json_schema']
    assert len(chats) == 3 * 6 and all(r['n_messages'] == 2 for r in chats)  # no re-ask needed
    nps = json.load(open(out / 'usr_prf_3.json'))
    assert all(t.startswith('new profile 3 ') for t in nps)
    assert json.load(open(os.path.join(folder, 'usr_prf_3.json'))) == json.load(open(folder + '/usr_prf.json'))


def test_json_schema_refused_falls_back_once(tmp_path, reference, capfd):
    s = FakeOpenAI(dim=DIM, schema_400=400)
    try:
        folder = make_dataset(tmp_path)
        assert profiles.main(flags(s, tmp_path, '--json-schema', '--concurrency', '1')) == 0
    finally:
        s.close()
    assert read_outputs(folder) == reference
    assert [r['status'] for r in s.requests('chat') if r['response_format'] == 'json_schema'] == [400]
    assert capfd.readouterr().err.count('refused response_format json_schema') == 1


def test_json_schema_refused_then_the_llama_cpp_python_form(tmp_path, capfd):
    s = FakeOpenAI(dim=DIM, needs_schema=True, schema_400=500)  # llama-cpp-python: a 500, not retried
    try:
        make_dataset(tmp_path)
        assert profiles.main(flags(s, tmp_path, '--side', 'user', '--json-schema', '--concurrency', '1')) == 0
    finally:
        s.close()
    formats = [(r['response_format'], r['status']) for r in s.requests('chat')]
    assert formats[0] == ('json_schema', 500) and set(formats[1:]) == {('json_object', 200)}
    assert len(formats) == 1 + 3 * 6  # no re-ask: the schema still constrains the reply


def test_embeddings_from_another_server_with_its_own_key(tmp_path, reference, monkeypatch):
    chat_server, embed_server = FakeOpenAI(dim=DIM), FakeOpenAI(dim=DIM, api_key='embed-key-42')
    monkeypatch.setenv('EMBED_KEY', 'embed-key-42')
    chat_server.fault('404', 'embeddings', times=-1)  # a chat-only server
    try:
        folder = make_dataset(tmp_path)
        args = flags(chat_server, tmp_path, '--embed-base-url', embed_server.url, '--embed-api-key-env', 'EMBED_KEY')
        i = args.index('--embed-dim')
        assert profiles.main(args[:i] + args[i + 2:]) == 0  # the dimension probe goes there too
    finally:
        chat_server.close()
        embed_server.close()
    assert read_outputs(folder) == reference
    assert chat_server.requests('embeddings') == [] and len(embed_server.requests('embeddings')) == 11 + 2
    assert {r['auth'] for r in embed_server.log} == {'Bearer embed-key-42'}


def test_token_level_embeddings_are_mean_pooled_with_one_warning(tmp_path, reference, capfd):
    s = FakeOpenAI(dim=DIM, token_level=True)
    try:
        folder = make_dataset(tmp_path)
        args = flags(s, tmp_path)
        i = args.index('--embed-dim')
        assert profiles.main(args[:i] + args[i + 2:]) == 0
    finally:
        s.close()
    assert read_outputs(folder) == reference
    assert len(s.requests('embeddings')) == 11 + 2  # never retried
    err = capfd.readouterr().err
    assert err.count('returns one vector per token') == 1 and '--pooling mean' in err
