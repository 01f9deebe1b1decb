"""End-to-end profiles.py run on all 2,625 ml100k entities (943 users, 1,682 items) against the
loopback OpenAI-compatible server with random faults, then LightGCN + ProEx trained on the result.

The server (tests/openai_server.py) answers with deterministic texts and 1536-d unit vectors (the
dimension of the paper's text-embedding-ada-002) and injects a fault into a fraction --fault-rate of
all requests: 429, 500, a cut JSON body, a TCP reset mid-body, a reply that is not JSON, a reply cut
by max_tokens, a reply without usage, a missing embedding. Outputs go to --work (never the repo).

Run: python bench/profiles_ml100k.py --data-dir ../shared/datasets --epochs 3
Writes bench/results/profiles_ml100k.json (git commit, whether tracked files were modified, and
the command line included).
"""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]
from eval import ArgumentParser, git_state  # noqa: E402
from openai_server import API_KEY, FakeOpenAI  # noqa: E402


def run(cmd, env=None):
    """Run a child; -> (exit status, seconds, its output, the largest peak memory it reported, MB)."""
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.time() - t0
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep='\n')
    peaks = [int(x) for x in re.findall(r'peak memory (\d+) MB', proc.stdout)]  # profiles.py's own VmHWM
    return proc.returncode, seconds, proc.stdout + proc.stderr, max(peaks, default=None)


def main():
    ap = ArgumentParser(prog='bench/profiles_ml100k.py', description=__doc__.split('\n')[0])
    ap.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', os.path.join(ROOT, '..', 'shared', 'datasets')))
    ap.add_argument('--work', default='/tmp/proex_profiles_bench', help='scratch folder (deleted first)')
    ap.add_argument('--fault-rate', type=float, default=0.3)
    ap.add_argument('--dim', type=int, default=1536)
    ap.add_argument('--concurrency', type=int, default=8)
    ap.add_argument('--epochs', type=int, default=3, help='LightGCN + ProEx epochs on the result')
    ap.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results', 'profiles_ml100k.json'))
    args = ap.parse_args()
    code = git_state()  # commit and dirty flag of the code that runs, taken at the start

    src = os.path.join(args.data_dir, 'ml100k')
    folder = os.path.join(args.work, 'ml100k')
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(folder)
    for name in ('trn_mat.pkl', 'val_mat.pkl', 'tst_mat.pkl', 'usr_prf.json', 'itm_prf.json'):
        os.symlink(os.path.abspath(os.path.join(src, name)), os.path.join(folder, name))  # the OPs are the input

    server = FakeOpenAI(dim=args.dim, fault_rate=args.fault_rate, seed=0)
    env = dict(os.environ, OPENAI_API_KEY=API_KEY)
    cmd = [sys.executable, 'profiles.py', '--dataset', 'ml100k', '--data-dir', args.work, '--base-url', server.url,
           '--embed-dim', str(args.dim), '--concurrency', str(args.concurrency), '--backoff', '0.05',
           '--timeout', '10', '--report']
    try:
        status, seconds, output, peak = run(cmd, env)
        first = dict(exit_status=status, seconds=round(seconds, 1), peak_memory_mb=peak,
                     requests=len(server.log), faults_served=dict(server.served),
                     fallbacks=output.count('\n  fallback '),
                     summaries=[line for line in output.splitlines() if 'summary:' in line or 'report:' in line])
        retry = None
        if status == 3:  # fallbacks were used: retry them once, faults still on
            n_log = len(server.log)
            status, seconds, output, _ = run(cmd + ['--retry-fallbacks'], env)
            retry = dict(exit_status=status, seconds=round(seconds, 1), requests=len(server.log) - n_log,
                         fallbacks=output.count('\n  fallback '))
    finally:
        server.close()

    sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
             if not os.path.islink(os.path.join(folder, name))}
    n = {'usr': 943, 'itm': 1682}
    journal_per_entity = {p: sizes[f'{p}_prf_journal.jsonl'] / n[p] for p in n}
    reports = {p: json.load(open(os.path.join(folder, f'{p}_prf_report.json'))) for p in n}

    train_out = os.path.join(args.work, 'lightgcn.json')
    t_status, t_seconds, t_output, _ = run([sys.executable, 'lightgcn.py', '--proex', '--dataset', 'ml100k',
                                            '--data-dir', args.work, '--threads', '1', '--device', 'cpu',
                                            '--epochs', str(args.epochs), '--out', train_out])
    trained = json.load(open(train_out)) if t_status == 0 else t_output[-2000:]

    result = dict(
        git=code,
        command=' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv]), profiles_command=' '.join(cmd[1:]),
        machine=f'{os.uname().machine}, {os.cpu_count()} cores', fault_rate=args.fault_rate, dim=args.dim,
        entities=sum(n.values()), first_run=first, retry_fallbacks_run=retry, file_bytes=sizes,
        journal_bytes_per_entity=journal_per_entity, reports=reports,
        lightgcn=dict(exit_status=t_status, seconds=round(t_seconds, 1), epochs=args.epochs, result=trained))
    with open(args.out, 'w') as f:
        f.write(json.dumps(result, indent=1).replace(args.work, os.path.basename(args.work)))  # no machine paths
    print(f'wrote {args.out}')
    with open(os.path.join(folder, 'usr_emb_np_3.pkl'), 'rb') as f:
        print('usr_emb_np_3.pkl', pickle.load(f).shape)


if __name__ == '__main__':
    main()
