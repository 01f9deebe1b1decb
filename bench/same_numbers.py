"""Do two commits train to the same numbers? Seeded short runs of all six models, compared.

    python bench/same_numbers.py 0fdc370 HEAD --data-dir ../shared/datasets

Checks out each commit in a temporary git worktree, runs every model file base and --proex
(plus LightGCN --proex --released and Mult-VAE --proex --no-mixing) on --dataset for
--epochs epochs with --threads 1 and one seed, and compares the test metrics, the best
epoch and the per-epoch losses and validation R@20 (timings aside). Seeded runs with one
thread are bit-identical, so any difference is a change in what the code computes.
Writes bench/results/same_numbers.json with both commits and the command line.

    python bench/same_numbers.py 7b2e80f HEAD --runs "multvae:--proex --eval-every 1" \
        --after-flags=--sum-of-samples --out bench/results/same_numbers_sum_of_samples.json

--runs replaces the list of runs ("model:flags", comma-separated); --after-flags adds flags to
the runs of the second commit only (a switch that should restore the first commit's numbers).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = [(m, flags) for m in ('lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga')
        for flags in ('', '--proex')] + [('lightgcn', '--proex --released'),
                                         ('multvae', '--proex --no-mixing')]


def train(tree, model, flags, a, out):
    cmd = [sys.executable, f'{model}.py', '--dataset', a.dataset, '--data-dir', a.data_dir,
           '--epochs', str(a.epochs), '--threads', '1', '--seed', str(a.seed), '--out', out] + flags.split()
    subprocess.run(cmd, cwd=tree, check=True, capture_output=True)
    r = json.loads(Path(out).read_text())
    return {'test': r['test'], 'best_epoch': r['best_epoch'],
            'history': [{k: v for k, v in h.items() if not k.endswith('_s')} for h in r['history']]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument('before')
    p.add_argument('after')
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--dataset', default='ml100k')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--out', default=str(ROOT / 'bench/results/same_numbers.json'))
    p.add_argument('--runs', default=None, help='"model:flags,model:flags" (default: every model '
                   'base and --proex, LightGCN --proex --released, Mult-VAE --proex --no-mixing)')
    p.add_argument('--after-flags', default='', help='flags added to the second commit\'s runs only '
                   '(write --after-flags=--flag)')
    a = p.parse_args()
    runs = [tuple(r.split(':', 1)) for r in a.runs.split(',')] if a.runs else RUNS
    a.data_dir = os.path.abspath(a.data_dir)
    revs = {k: subprocess.run(['git', 'rev-parse', r], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout.strip() for k, r in (('before', a.before), ('after', a.after))}
    result = {'commits': revs, 'command': shlex.join(['python'] + sys.argv), 'dataset': a.dataset,
              'epochs': a.epochs, 'seed': a.seed, 'after_flags': a.after_flags, 'runs': {}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for k, rev in revs.items():
            trees[k] = os.path.join(tmp, k)
            subprocess.run(['git', 'worktree', 'add', '--detach', trees[k], rev], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            for model, flags in runs:
                name = f'{model} {flags}'.strip()
                got = {k: train(trees[k], model, flags + (f' {a.after_flags}' if k == 'after' else ''), a,
                                os.path.join(tmp, f'{k}.json')) for k in revs}
                same = got['before'] == got['after']
                result['runs'][name] = {'identical': same, 'test_recall@20': {k: g['test']['recall@20']
                                                                              for k, g in got.items()}}
                print(f"{name:28s} {'identical' if same else 'DIFFERENT'}  R@20 "
                      f"{got['before']['test']['recall@20']:.6f} / {got['after']['test']['recall@20']:.6f}",
                      flush=True)
        finally:
            for t in trees.values():
                subprocess.run(['git', 'worktree', 'remove', '--force', t], cwd=ROOT, capture_output=True)
    result['all_identical'] = all(r['identical'] for r in result['runs'].values())
    Path(a.out).write_text(json.dumps(result, indent=1))
    print('all identical' if result['all_identical'] else 'SOME RUNS DIFFER', '->', a.out)


if __name__ == '__main__':
    main()
