"""Wall time of each model file's first run as a new user types it: `python <model>.py` and
`python <model>.py --proex` with every default (offline `synthetic` data), one process at a
time, each as a fresh `python` process (imports and data generation included).

    python bench/first_runs.py [--models lightgcn,gccf,...]

Writes bench/results/first_runs.json: per command the wall and CPU seconds, the epochs run,
the best epoch and test R@20, with the git commit, the command line and the machine.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from eval import ArgumentParser, git_state, versions  # noqa: E402

MODELS = ['lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga']


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    p = ArgumentParser(prog='bench/first_runs.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--out', default=str(ROOT / 'bench/results/first_runs.json'))
    a = p.parse_args()
    out = {'git': git_state(), 'versions': versions(), 'command': shlex.join(['python', *sys.argv]),
           'machine': f'{platform.machine()}, {os.cpu_count()} cores', 'runs': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(','):
            for flags in ([], ['--proex']):
                cmd = ['python', f'{model}.py', *flags]
                res = os.path.join(tmp, 'r.json')
                cpu0, t0 = cpu_seconds(), time.time()
                subprocess.run([sys.executable, f'{model}.py', *flags, '--out', res], cwd=ROOT,
                               check=True, capture_output=True)
                r = json.loads(Path(res).read_text())
                out['runs'][shlex.join(cmd)] = {
                    'wall_s': time.time() - t0, 'cpu_s': cpu_seconds() - cpu0,
                    'epochs': len(r['history']), 'best_epoch': r['best_epoch'],
                    'test_recall@20': r['test']['recall@20']}
                print(shlex.join(cmd), json.dumps(out['runs'][shlex.join(cmd)]), flush=True)
                Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
