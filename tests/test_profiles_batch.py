"""profiles.py --batch-api against the loopback server's /v1/files and /v1/batches.

Run: python -m pytest -q tests/test_profiles_batch.py
"""
import os
import signal
import subprocess
import sys
import time

from test_profiles import DIM, ROOT, flags, make_dataset, read_outputs  # noqa: F401
from test_profiles import api_key, reference, server  # noqa: F401 (fixtures)
import profiles  # noqa: E402
from openai_server import API_KEY, FakeOpenAI  # noqa: E402

BATCH = ('--batch-api', '--poll-every', '0.01')


def test_batch_mode_gives_the_online_files(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    assert profiles.main(flags(server, tmp_path, *BATCH)) == 0
    assert read_outputs(folder) == reference
    assert all(r['batch'] for r in server.requests('chat') + server.requests('embeddings'))
    assert len(server.requests('batches')) == 2 * 4  # F2, F3, F4, embeddings per side, one round each
    assert len(server.requests('batch')) >= 2 * 8  # each polled until completed
    assert profiles.main(flags(server, tmp_path, *BATCH)) == 0  # finished: a no-op
    assert len(server.requests('batches')) == 8


def test_batch_mode_re_asks_in_later_rounds(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    server.fault('not_json', 'chat', times=1, step='F2')
    server.fault('500', 'chat', times=1, step='F3')
    server.fault('length', 'chat', times=1, step='F4')
    server.fault('500', 'embeddings', times=1)
    assert profiles.main(flags(server, tmp_path, *BATCH)) == 0
    assert read_outputs(folder) == reference
    assert len(server.requests('batches')) == 8 + 4  # one more round for each fault
    f4 = [r for r in server.requests('chat') if r['step'] == 'F4']
    assert sorted(r['max_tokens'] for r in f4)[-1] == 2 * f4[0]['max_tokens']  # the cut reply asked with more


def test_batch_and_online_fall_back_alike(tmp_path):
    outputs = []
    for mode in ((), BATCH):
        s = FakeOpenAI(dim=DIM, max_input_chars=60)
        s.fault('not_json', 'chat', times=-1, step='F4', match='<<i002>>')
        s.fault('400', 'chat', times=-1, step='F2', match='<<u004>>')
        try:
            root = tmp_path / ('batch' if mode else 'online')
            folder = make_dataset(root)
            with open(os.path.join(folder, 'itm_prf.json'), 'w') as f:
                f.write('["<<i000>> long ' + 'x' * 80 + '", "<<i001>>", "<<i002>>", "<<i003>>", "<<i004>>"]')
            assert profiles.main(flags(s, root, '--max-input-chars', '50', *mode)) == 3
        finally:
            s.close()
        outputs.append(read_outputs(folder))
    assert outputs[0] == outputs[1]


def test_killed_batch_run_resumes_from_the_recorded_batches(server, tmp_path, reference):
    folder = make_dataset(tmp_path)
    journal = os.path.join(folder, 'usr_prf_journal.jsonl')
    cmd = [sys.executable, os.path.join(ROOT, 'profiles.py'), *flags(server, tmp_path, '--batch-api',
                                                                     '--poll-every', '0.25')]
    env = dict(os.environ, OPENAI_API_KEY=API_KEY)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(journal) and '"name": "F3-0-0"' in open(journal).read():
            break  # the F3 batch is recorded, its results are not in yet
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert '"name": "F3-0-0"' in open(journal).read() and '"step": "F3"' not in open(journal).read()
    n_batches = len(server.requests('batches'))
    assert subprocess.run(cmd, capture_output=True, timeout=60, env=env).returncode == 0
    assert read_outputs(folder) == reference
    assert len(server.requests('batches')) == n_batches + 2 + 4  # user F4, embeddings; items: 4; F3 not again
