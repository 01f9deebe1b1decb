"""profiles.py at 50,000 entities with 1536-d embeddings: memory and disk of the finishing pass, and
the running pass's peak memory for growing numbers of ml100k items (--limit) against the loopback server.

Builds, without any server, the journal and vector store a finished profiles.py run leaves behind
for one side of --n entities (OPs of --op-chars characters, K = 4, d = --dim), then runs profiles.py
on it as a child process: it streams the journal, writes the K-1 text files and the K embedding
pickles and the cosine report, and sends no request. Reports the child's peak memory, its time and
the sizes on disk. Scratch files go to --work (about 2.7 GB at the defaults; deleted at the end).

Run: python bench/profiles_scale.py --data-dir ../shared/datasets   (writes bench/results/profiles_scale.json,
git commit, whether tracked files were modified, and the command line included)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import profiles  # noqa: E402
from eval import ArgumentParser, git_state  # noqa: E402


def text(rng, chars):
    words = rng.choice(['quiet', 'drama', 'films', 'enjoys', 'classic', 'thriller', 'warm', 'the', 'and'],
                       size=chars // 6)
    return ' '.join(words)[:chars]


def build(folder, n, k, dim, op_chars, seed=0):
    """usr_prf.json (the OPs), usr_prf_journal.jsonl (one done record per entity), usr_emb_store.f32."""
    rng = np.random.default_rng(seed)
    ops = [f'<<{i}>> ' + text(rng, op_chars) for i in range(n)]
    with open(os.path.join(folder, 'usr_prf.json'), 'w') as f:
        json.dump(ops, f)
    args = profiles.parse_args(['--dataset', 'scale', '--data-dir', os.path.dirname(folder), '--embed-dim', str(dim),
                                '--n-profiles', str(k)])
    header = profiles.fingerprint(args, 'user', ops, dim)
    usage = profiles.new_usage()
    with open(os.path.join(folder, 'usr_prf_journal.jsonl'), 'w') as journal, \
            open(os.path.join(folder, 'usr_emb_store.f32'), 'wb') as store:
        journal.write(json.dumps({'header': header}) + '\n')
        for start in range(0, n, 5000):
            m = min(5000, n - start)
            c = rng.standard_normal((m, k, dim), dtype=np.float32)  # [m, K, d]
            store.write(c.astype('<f4').tobytes())
            for i in range(start, start + m):
                nps = [f'new {j} ' + text(rng, op_chars) for j in range(1, k)]
                journal.write(json.dumps({'id': i, 'status': 'done', 'op': ops[i], 'nps': nps, 'usage': usage,
                                          'row': i}, ensure_ascii=False) + '\n')
    return ['--dataset', 'scale', '--data-dir', os.path.dirname(folder), '--embed-dim', str(dim),
            '--n-profiles', str(k), '--side', 'user', '--report', '--base-url', 'http://127.0.0.1:9/v1']


def running_peaks(limits, dim, data_dir, work):
    """Peak memory of profiles.py (its own summary line) on the first N ml100k items, for each N."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from openai_server import API_KEY, FakeOpenAI
    server, peaks = FakeOpenAI(dim=dim), {}
    try:
        for limit in limits:
            folder = os.path.join(work, 'ml100k')
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(folder)
            os.symlink(os.path.abspath(os.path.join(data_dir, 'ml100k', 'itm_prf.json')),
                       os.path.join(folder, 'itm_prf.json'))
            out = subprocess.run([sys.executable, 'profiles.py', '--dataset', 'ml100k', '--data-dir', work,
                                  '--side', 'item', '--base-url', server.url, '--embed-dim', str(dim),
                                  '--limit', str(limit)], capture_output=True, text=True, cwd=ROOT,
                                 env=dict(os.environ, OPENAI_API_KEY=API_KEY)).stdout
            peaks[limit] = max(int(x) for x in re.findall(r'peak memory (\d+) MB', out))
            print(f'running pass, {limit} items: peak memory {peaks[limit]:.0f} MB', flush=True)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return peaks


def main():
    ap = ArgumentParser(prog='bench/profiles_scale.py', description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=50000)
    ap.add_argument('--dim', type=int, default=1536)
    ap.add_argument('--op-chars', type=int, default=1000, help='characters per profile (ml100k: 911 items, 2274 users)')
    ap.add_argument('--work', default='/tmp/proex_profiles_scale')
    ap.add_argument('--limits', default='200,800,1600', help='running pass: ml100k items profiled, comma-separated')
    ap.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', os.path.join(ROOT, '..', 'shared', 'datasets')))
    ap.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'profiles_scale.json'))
    args = ap.parse_args()
    code = git_state()  # commit and dirty flag of the code that runs, taken at the start
    peaks = running_peaks([int(x) for x in args.limits.split(',')], args.dim, args.data_dir, args.work)
    folder = os.path.join(args.work, 'scale')
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(folder)
    t0 = time.time()
    flags = build(folder, args.n, 4, args.dim, args.op_chars)
    built = time.time() - t0
    t0 = time.time()
    proc = subprocess.run([sys.executable, 'profiles.py', *flags], capture_output=True, text=True, cwd=ROOT)
    seconds = time.time() - t0
    print(proc.stdout[-2000:], proc.stderr[-2000:], sep='\n')
    peak = max(int(x) for x in re.findall(r'peak memory (\d+) MB', proc.stdout))  # the child's own VmHWM
    sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
    result = dict(
        git=code,
        command=' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv]), profiles_command=' '.join(flags),
        machine=f'{os.uname().machine}, {os.cpu_count()} cores', n=args.n, K=4, dim=args.dim,
        op_chars=args.op_chars, build_seconds=round(built, 1), exit_status=proc.returncode,
        finish_seconds=round(seconds, 1), peak_memory_mb=round(peak), running_pass_peak_mb=peaks, file_bytes=sizes,
        journal_bytes_per_entity=round(sizes['usr_prf_journal.jsonl'] / args.n))
    with open(args.out, 'w') as f:
        f.write(json.dumps(result, indent=1).replace(args.work, os.path.basename(args.work)))  # no machine paths
    print(json.dumps(result, indent=1))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == '__main__':
    main()
