"""Tests of profiles.py against a real local HTTP server (tests/openai_server.py), no mocks.

Run: python -m pytest -q tests/test_profiles.py
"""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
import data  # noqa: E402
import profiles  # noqa: E402
from openai_server import API_KEY, FakeOpenAI, text_vector  # noqa: E402

DIM = 16
FILES = {side: [f'{p}_prf_1.json', f'{p}_prf_2.json', f'{p}_prf_3.json', f'{p}_emb_np.pkl',
                f'{p}_emb_np_1.pkl', f'{p}_emb_np_2.pkl', f'{p}_emb_np_3.pkl']
         for side, p in (('user', 'usr'), ('item', 'itm'))}


def make_dataset(root, n_users=6, n_items=5, name='toy'):
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'usr_prf.json'), 'w') as f:
        json.dump([f'<<u{i:03d}>> enjoys films of kind {i}' for i in range(n_users)], f)
    with open(os.path.join(folder, 'itm_prf.json'), 'w') as f:
        json.dump([f'<<i{i:03d}>> a film of kind {i}' for i in range(n_items)], f)
    return folder


def flags(server, data_dir, *extra):
    return ['--dataset', 'toy', '--data-dir', str(data_dir), '--base-url', server.url, '--model', 'chat-m',
            '--embed-model', 'embed-m', '--embed-dim', str(DIM), '--timeout', '0.5', '--backoff', '0.01',
            '--max-attempts', '4', '--concurrency', '3', *extra]


def read_outputs(folder, side='both'):
    names = FILES['user'] + FILES['item'] if side == 'both' else FILES[side]
    return {name: open(os.path.join(folder, name), 'rb').read() for name in names}


def journal_records(path):
    """The final line of each entity (done or fallback), in journal order."""
    with open(path) as f:
        return [r for r in map(json.loads, f) if 'status' in r]


@pytest.fixture
def server():
    s = FakeOpenAI(dim=DIM)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', API_KEY)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """Output files of an uninterrupted, fault-free run on the toy dataset."""
    root = tmp_path_factory.mktemp('reference')
    folder = make_dataset(root)
    s = FakeOpenAI(dim=DIM)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('OPENAI_API_KEY', API_KEY)
            assert profiles.main(flags(s, root)) == 0
    finally:
        s.close()
    return read_outputs(folder)


# ----------------------------------------------------------------------------

def test_clean_run_writes_official_files(server, tmp_path, capsys):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path)) == 0
    for p, n in (('usr', 6), ('itm', 5)):
        texts = [json.load(open(os.path.join(folder, f'{p}_prf.json')))]
        texts += [json.load(open(os.path.join(folder, f'{p}_prf_{k}.json'))) for k in (1, 2, 3)]
        for k in range(4):
            name = f'{p}_emb_np.pkl' if k == 0 else f'{p}_emb_np_{k}.pkl'
            c = pickle.load(open(os.path.join(folder, name), 'rb'))
            assert c.dtype == np.float32 and c.shape == (n, DIM)
            expected = np.stack([text_vector(t, DIM) for t in texts[k]])  # row i = f_text(profile k of id i)
            np.testing.assert_array_equal(c, expected)
        for i in range(n):  # K-1 distinct NPs per entity, all different from the OP
            assert len({texts[k][i] for k in range(4)}) == 4
        assert len(journal_records(os.path.join(folder, f'{p}_prf_journal.jsonl'))) == n
    assert len(server.requests('chat')) == 3 * 11 and len(server.requests('embeddings')) == 11
    assert {r['auth'] for r in server.log} == {f'Bearer {API_KEY}'}
    out = capsys.readouterr().out
    assert 'user summary: 6 done and 0 with fallback' in out and '18 chat + 6 embedding calls' in out
    assert 'tokens: 180 prompt, 90 completion, 42 embedding' in out  # summed from `usage`


def test_finished_run_rerun_is_a_noop(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path)) == 0
    stamps = {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in reference}
    n_requests = len(server.log)
    assert profiles.main(flags(server, tmp_path)) == 0
    assert len(server.log) == n_requests
    assert stamps == {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in reference}
    assert read_outputs(folder) == reference


def test_refuses_to_overwrite_existing_files(server, tmp_path, reference, capsys):
    folder = make_dataset(tmp_path)
    old = os.path.join(folder, 'itm_emb_np.pkl')
    open(old, 'wb').write(b'released embeddings')
    assert profiles.main(flags(server, tmp_path)) == 2
    assert 'refusing to overwrite' in capsys.readouterr().err
    assert server.log == [] and open(old, 'rb').read() == b'released embeddings'
    assert not os.path.exists(os.path.join(folder, 'usr_prf_journal.jsonl'))  # nothing started, no side
    out_dir = tmp_path / 'out'
    assert profiles.main(flags(server, tmp_path, '--out-dir', str(out_dir))) == 0
    assert read_outputs(out_dir) == reference and open(old, 'rb').read() == b'released embeddings'
    assert profiles.main(flags(server, tmp_path, '--overwrite')) == 0
    assert read_outputs(folder) == reference


TRANSIENT = [  # (kind, route, step, options, what the server log shows)
    ('429', 'chat', None, {'retry_after': 0}, 429),
    ('500', 'chat', None, {}, 500),
    ('500', 'embeddings', None, {}, 500),
    ('slow', 'chat', 'F3', {'delay': 0.8}, None),
    ('malformed', 'chat', None, {}, None),
    ('malformed', 'embeddings', None, {}, None),
    ('not_json', 'chat', 'F2', {}, 'reask'),
    ('few_profiles', 'chat', 'F4', {}, 'reask'),
    ('wrong_dim', 'embeddings', None, {}, None),
    ('wrong_count', 'embeddings', None, {}, None),
]


@pytest.mark.parametrize('kind,route,step,options,seen', TRANSIENT, ids=[f'{t[0]}-{t[1]}' for t in TRANSIENT])
def test_transient_fault_still_gives_correct_files(server, tmp_path, reference, kind, route, step, options, seen):
    folder = make_dataset(tmp_path)
    server.fault(kind, route, times=2, step=step, **options)
    assert profiles.main(flags(server, tmp_path)) == 0
    assert read_outputs(folder) == reference
    assert all(f['times'] == 0 for f in server.faults)  # the faults were really served
    if seen == 'reask':  # the bad reply was answered with a correction message
        assert sum(r['n_messages'] == 4 for r in server.requests('chat')) == 2
    elif seen:
        assert len(server.requests(route, status=seen)) == 2


PERMANENT = [  # (kind, route, options, reason in the journal)
    ('500', 'chat', {}, 'HTTP 500'),
    ('429', 'embeddings', {'retry_after': 0}, 'HTTP 429'),
    ('slow', 'chat', {'delay': 0.4}, 'ReadTimeout'),
    ('malformed', 'embeddings', {}, 'unusable response'),
    ('not_json', 'chat', {}, 'no usable reply'),
    ('wrong_dim', 'embeddings', {}, 'embedding dimension 17, expected 16'),
]


@pytest.mark.parametrize('kind,route,options,reason', PERMANENT, ids=[f'{t[0]}-{t[1]}' for t in PERMANENT])
def test_permanent_fault_falls_back_then_retry_completes(server, tmp_path, reference, capsys,
                                                         kind, route, options, reason):
    folder = make_dataset(tmp_path)
    server.fault(kind, route, times=-1, **options)
    args = flags(server, tmp_path, '--side', 'user', '--timeout', '0.2', '--max-attempts', '2', '--max-reasks', '1')
    assert profiles.main(args) == 3  # finished, with fallbacks
    records = journal_records(os.path.join(folder, 'usr_prf_journal.jsonl'))
    assert sorted(r['id'] for r in records) == list(range(6))
    assert all(r['status'] == 'fallback' and reason in r['reason'] for r in records)
    ops = json.load(open(os.path.join(folder, 'usr_prf.json')))
    if route == 'chat':  # the NPs fall back to the OP
        assert json.load(open(os.path.join(folder, 'usr_prf_1.json'))) == ops
    else:  # no entity has embeddings: the rows are zero, the texts are the real NPs
        assert not pickle.load(open(os.path.join(folder, 'usr_emb_np.pkl'), 'rb')).any()
        assert read_outputs(folder, 'user')['usr_prf_1.json'] == reference['usr_prf_1.json']
    out = capsys.readouterr().out
    assert 'fallback user 0:' in out and '6/6 finished (6 with fallback)' in out
    n_requests = len(server.log)
    assert profiles.main(args) == 3 and len(server.log) == n_requests  # a rerun alone changes nothing
    server.faults.clear()  # the fault clears: --retry-fallbacks redoes those entities
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--retry-fallbacks')) == 0
    assert read_outputs(folder, 'user') == {name: reference[name] for name in FILES['user']}


def test_retry_after_is_honoured(server, tmp_path):
    make_dataset(tmp_path)
    server.fault('429', 'chat', times=1, retry_after=1)
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--limit', '1', '--concurrency', '1')) == 0
    first, second = server.requests('chat')[:2]
    assert first['status'] == 429 and second['time'] - first['time'] >= 0.95  # backoff alone is 0.01 s


def test_api_key_never_leaks(server, tmp_path, monkeypatch, capfd):
    folder = make_dataset(tmp_path)
    monkeypatch.delenv('OPENAI_API_KEY')
    monkeypatch.setenv('MY_KEY', API_KEY)
    assert profiles.main(flags(server, tmp_path, '--api-key-env', 'MY_KEY', '--report')) == 0
    wrong = 'sk-proj-wrong-secret-0987654321'
    monkeypatch.setenv('MY_KEY', wrong)  # the server's 401 body echoes the Authorization header back
    out_dir = tmp_path / 'out'
    assert profiles.main(flags(server, tmp_path, '--api-key-env', 'MY_KEY', '--out-dir', str(out_dir))) == 1
    captured = capfd.readouterr()
    assert f'error: {server.url}/chat/completions (step F2) answered HTTP 401: Incorrect API key' in captured.err
    for secret in (API_KEY, wrong, 'wrong-secret'):
        assert secret not in captured.out + captured.err
        for d in (folder, out_dir):
            for name in os.listdir(d):
                assert secret.encode() not in open(os.path.join(d, name), 'rb').read(), name


def test_killed_run_resumes_to_the_same_files(tmp_path):
    """SIGKILL midway, restart: same files as an uninterrupted run, no entity done twice."""
    n = 30
    s = FakeOpenAI(dim=DIM, delay=0.02)
    try:
        make_dataset(tmp_path / 'a', n_users=n)
        assert profiles.main(flags(s, tmp_path / 'a', '--side', 'user', '--concurrency', '2')) == 0
        expected = read_outputs(tmp_path / 'a' / 'toy', 'user')
        folder = make_dataset(tmp_path / 'b', n_users=n)
        journal = os.path.join(folder, 'usr_prf_journal.jsonl')
        cmd = [sys.executable, os.path.join(ROOT, 'profiles.py'),
               *flags(s, tmp_path / 'b', '--side', 'user', '--concurrency', '2')]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(journal) and open(journal).read().count('"status": "done"') >= 8:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = {r['id'] for r in journal_records(journal) if r['status'] == 'done'}
        assert 8 <= len(done_before) < n
        n_log = len(s.log)
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        assert read_outputs(folder, 'user') == expected
        ids = [r['id'] for r in journal_records(journal) if r['status'] == 'done']
        assert sorted(ids) == list(range(n))  # each entity journaled done exactly once
        for r in s.log[n_log:]:  # nothing finished before the kill was asked for again
            assert not any(f'<<u{i:03d}>>' in r['text'] for i in done_before)
    finally:
        s.close()


def test_side_information_goes_through_f1(server, tmp_path):
    folder = make_dataset(tmp_path)
    os.remove(os.path.join(folder, 'usr_prf.json'))
    with open(os.path.join(folder, 'usr_side.jsonl'), 'w') as f:
        for i in (2, 0, 1):  # any order; ids 0..n-1
            f.write(json.dumps({'id': i, 'titles': [f'Film {i}a', f'Film {i}b'], 'reviews': ['great']}) + '\n')
    assert profiles.main(flags(server, tmp_path, '--side', 'user')) == 0
    ops = json.load(open(os.path.join(folder, 'usr_prf.json')))  # F1 wrote the OPs
    assert len(ops) == 3 and all(op.startswith('<<OP ') for op in ops) and len(set(ops)) == 3
    c = pickle.load(open(os.path.join(folder, 'usr_emb_np.pkl'), 'rb'))
    np.testing.assert_array_equal(c, np.stack([text_vector(op, DIM) for op in ops]))
    assert [r['step'] for r in server.requests('chat')].count('F1') == 3
    assert any('"Film 0a"' in r['text'] for r in server.requests('chat') if r['step'] == 'F1')


def test_rlmrec_pickle_and_restricted_unpickler(server, tmp_path):
    folder = make_dataset(tmp_path)
    ops = json.load(open(os.path.join(folder, 'usr_prf.json')))
    os.remove(os.path.join(folder, 'usr_prf.json'))
    with open(os.path.join(folder, 'usr_prf.pkl'), 'wb') as f:
        pickle.dump({i: {'profile': op, 'reasoning': 'r'} for i, op in enumerate(ops)}, f)
    assert profiles.load_profile_pickle(os.path.join(folder, 'usr_prf.pkl')) == ops
    assert profiles.main(flags(server, tmp_path, '--side', 'user')) == 0

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned > ' + str(tmp_path / 'pwned'),))
    evil = tmp_path / 'evil.pkl'
    evil.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(data.DataError, match='refused to load'):  # data.safe_load, the project's one unpickler
        profiles.load_profile_pickle(str(evil))
    assert not (tmp_path / 'pwned').exists()


def test_dry_run_prints_prompts_and_sends_nothing(server, tmp_path, capsys):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--dry-run', '--side', 'item')) == 0
    out = capsys.readouterr().out
    for step in ('F2', 'F3', 'F4'):
        assert f'{step} system prompt' in out
    assert 'F1 skipped' in out and '<<i000>>' in out and 'Write 3 new profiles' in out
    assert '5 entities to do -> 15 chat calls, 5 embedding calls' in out
    assert server.log == [] and not os.path.exists(os.path.join(folder, 'itm_prf_journal.jsonl'))


def test_report_cosines(server, tmp_path, capsys):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--report')) == 0
    for p, n in (('usr', 6), ('itm', 5)):
        report = json.load(open(os.path.join(folder, f'{p}_prf_report.json')))
        assert report['n'] == n and report['complete'] and len(report['op_vs_np_per_k']) == 3
        views = [pickle.load(open(os.path.join(folder, f'{p}_emb_np{j}.pkl'), 'rb'))
                 for j in ('', '_1', '_2', '_3')]                  # OP, NP 1..3 as written
        want = profiles.cosine_report(np.stack(views, 1))            # [n, K, d]
        assert report['op_vs_np_per_k'] == pytest.approx(want['op_vs_np_per_k'], abs=1e-6)
        assert report['np_vs_np'] == pytest.approx(want['np_vs_np'], abs=1e-6)
    c = np.stack([[1, 0], [0, 1], [1, 1]]).astype(np.float32)[None]  # OP, NP1, NP2 of one entity
    r = profiles.cosine_report(c)
    assert r['op_vs_np_per_k'] == pytest.approx([0, 2 ** -0.5]) and r['np_vs_np'] == pytest.approx(2 ** -0.5)
    assert 'user report: mean cosine OP-vs-NP' in capsys.readouterr().out


def test_changed_configuration_refuses_to_resume(server, tmp_path, capsys):
    make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--limit', '2')) == 0
    assert profiles.main(flags(server, tmp_path, '--side', 'user', '--model', 'other-model')) == 2
    assert 'written with another model' in capsys.readouterr().err


def test_limit_then_cut_journal_line_then_complete(server, tmp_path, reference, capsys):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--limit', '3')) == 0
    assert not os.path.exists(os.path.join(folder, 'usr_emb_np.pkl'))  # outputs need every id
    assert 'the output files need all 6 ids, so none was written' in capsys.readouterr().out
    with open(os.path.join(folder, 'usr_prf_journal.jsonl'), 'a') as f:
        f.write('{"id": 4, "status": "do')  # a write cut short by a kill
    assert profiles.main(flags(server, tmp_path)) == 0
    assert read_outputs(folder) == reference
    assert len(server.requests('embeddings')) == 11


def test_embedding_dimension_probed_when_not_given(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    args = flags(server, tmp_path)
    i = args.index('--embed-dim')
    assert profiles.main(args[:i] + args[i + 2:]) == 0
    assert len(server.requests('embeddings')) == 11 + 2  # one probe per side
    assert read_outputs(folder) == reference


def test_command_line(monkeypatch):
    monkeypatch.setenv('PROEX_DATA', '/datasets')
    assert profiles.parse_args(['--dataset', 'book']).folder == os.path.join('/datasets', 'amazon')
    assert profiles.parse_args(['--dataset', 'ml100k', '--data-dir', 'd']).out_dir == os.path.join('d', 'ml100k')
    monkeypatch.delenv('PROEX_DATA')
    assert profiles.parse_args(['--dataset', 'steam']).folder == os.path.join('./data', 'steam')
    with pytest.raises(SystemExit):
        profiles.parse_args(['--dataset', 'ml100k', '--no-such-flag'])
    with pytest.raises(SystemExit):  # an abbreviation is a typo, not a guess (--over -> --overwrite)
        profiles.parse_args(['--dataset', 'ml100k', '--over'])
    assert profiles.parse_args(['--dataset', 'ml100k']).n_profiles == profiles.K == 4
    assert profiles.parse_args(['--dataset', 'ml100k', '--n-profiles', '3']).n_profiles == 3
    for refused in (['--profiles', '4'], ['--n-profiles', '1']):  # --profiles is the model scripts' list of views
        with pytest.raises(SystemExit):
            profiles.parse_args(['--dataset', 'ml100k', *refused])
    parser_help = subprocess.run([sys.executable, os.path.join(ROOT, 'profiles.py'), '--help'],
                                 capture_output=True, text=True).stdout
    for flag in ('--data-dir', '--out-dir', '--overwrite', '--report', '--dry-run', '--api-key-env', '--limit',
                 '--n-profiles'):
        assert flag in parser_help


@pytest.mark.parametrize('bad,names', [
    (['--concurrency', '0'], 'argument --concurrency: must be an integer >= 1'),
    (['--n-profiles', '1'], 'argument --n-profiles: must be an integer >= 2'),
    (['--timeout', '0'], 'argument --timeout: must be a finite number > 0'),
    (['--no-such-flag'], 'unrecognized arguments: --no-such-flag'),
    (['--over'], 'did you mean --overwrite?'),
])
def test_bad_command_line_is_one_error_line(bad, names):
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'profiles.py'), '--dataset', 'book', *bad],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and run.stdout == ''  # refused before anything starts
    assert len(run.stderr.splitlines()) == 1, run.stderr  # no usage block, no traceback
    assert run.stderr.startswith('error: ') and names in run.stderr and '--help' in run.stderr


# ----------------------------------------------------------------------------

def ml100k_slice(dst, n_users=12):
    """The n_users ml100k users with the fewest interactions and the items they touch (any split), reindexed."""
    src = os.path.join(os.environ.get('PROEX_DATA', os.path.join(ROOT, '..', 'shared', 'datasets')), 'ml100k')
    if not os.path.exists(os.path.join(src, 'trn_mat.pkl')):
        pytest.skip(f'ml100k not found at {src} (set PROEX_DATA)')
    mats = {name: pickle.load(open(os.path.join(src, f'{name}_mat.pkl'), 'rb')).tocsr()
            for name in ('trn', 'val', 'tst')}
    users = np.argsort(sum(m.getnnz(axis=1) for m in mats.values()), kind='stable')[:n_users]
    mats = {name: m[users] for name, m in mats.items()}
    items = np.unique(np.concatenate([m.nonzero()[1] for m in mats.values()]))
    os.makedirs(dst, exist_ok=True)
    for name, m in mats.items():
        with open(os.path.join(dst, f'{name}_mat.pkl'), 'wb') as f:
            pickle.dump(m[:, items].tocoo(), f)
    for p, keep in (('usr', users), ('itm', items)):
        texts = json.load(open(os.path.join(src, f'{p}_prf.json')))
        with open(os.path.join(dst, f'{p}_prf.json'), 'w') as f:
            json.dump([texts[i] for i in keep], f)
    return len(items)


def test_end_to_end_ml100k_slice_trains_lightgcn(tmp_path):
    n_items = ml100k_slice(tmp_path / 'ml100k_slice')
    s = FakeOpenAI(dim=32)
    try:
        args = ['--dataset', 'ml100k_slice', '--data-dir', str(tmp_path), '--base-url', s.url,
                '--embed-dim', '32', '--concurrency', '8', '--backoff', '0.01', '--timeout', '5']
        assert profiles.main(args) == 0
    finally:
        s.close()
    c = pickle.load(open(tmp_path / 'ml100k_slice' / 'itm_emb_np_3.pkl', 'rb'))
    assert c.shape == (n_items, 32) and c.dtype == np.float32
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'lightgcn.py'), '--proex', '--dataset', 'ml100k_slice',
                          '--data-dir', str(tmp_path), '--epochs', '2', '--device', 'cpu',
                          '--out', str(tmp_path / 'result.json')],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
