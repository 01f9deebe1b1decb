"""Base vs ProEx (and ablations) over several seeds: mean and std of test R@20, N@20.

    python bench/compare.py --dataset ml100k --models lightgcn,gccf,simgcl \
        --variants base,proex,no-var,no-mixing --out bench/results/ml100k_disc.json

(--no-reg and --no-align are refused where the file's default already has that term off:
lambda2 = 0 in gccf.py and lightgcn.py, lambda1 = 0 in all three discriminative files.)

A variant is a name from VARIANTS (or `name=flags` for your own, e.g. "l2=--proex --lambda2 0.1").
Every run trains with early stopping on validation Recall@20 and tests once with the best
parameters; the result file keeps every run (history included), so the validation curves
behind each mean can be plotted. Seeds default to 2023,2024,2025. Each cell records the git
commit (and whether tracked files were modified) and the command line that produced it: a
resumed file can hold cells of several invocations.
"""
import argparse
import importlib
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from eval import ArgumentParser, git_state  # noqa: E402

VARIANTS = {  # paper Fig. 6 ablations are relative to --proex
    'base': '', 'proex': '--proex', 'released': '--proex --released',
    'no-var': '--proex --no-var', 'no-reg': '--proex --no-reg',
    'no-align': '--proex --no-align', 'no-mixing': '--proex --no-mixing',
    'misleading-only': '--proex --profiles 3',   # synthetic: view 3 is the misleading one
}


def summarise(runs):
    out = {}
    for k in ('recall@20', 'ndcg@20', 'recall@10', 'ndcg@10'):
        v = [r['test'][k] for r in runs]
        out[k] = {'mean': statistics.mean(v), 'std': statistics.stdev(v) if len(v) > 1 else 0.0}
    out['best_val_recall20_mean'] = statistics.mean(r['best_val_recall20'] for r in runs)
    out['sec_per_epoch_median'] = statistics.median(r['sec_per_epoch'] for r in runs)
    out['best_epochs'] = [r['best_epoch'] for r in runs]
    return out


def main():
    p = ArgumentParser(prog='bench/compare.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='ml100k')
    p.add_argument('--models', default='lightgcn', help='comma-separated model files (without .py)')
    p.add_argument('--variants', default='base,proex', help='comma-separated variant names or name=flags')
    p.add_argument('--seeds', default='2023,2024,2025')
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--extra', default='', help='flags added to every run, e.g. "--threads 1"')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    variants = dict(v.split('=', 1) if '=' in v else (v, VARIANTS[v]) for v in a.variants.split(','))
    seeds = [int(s) for s in a.seeds.split(',')]
    # the code that runs (commit, tracked files modified) and this command line, before the first run
    code, command = git_state(), shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])
    out = {'dataset': a.dataset, 'seeds': seeds, 'variants': variants, 'extra': a.extra,
           'git': code, 'command': command, 'results': {}}  # the invocation that wrote last
    if Path(a.out).exists():  # resume: keep finished cells
        out['results'] = json.loads(Path(a.out).read_text()).get('results', {})
    for m in a.models.split(','):
        mod = importlib.import_module(m)
        for name, flags in variants.items():
            key = f'{m}/{name}'
            if key in out['results'] and len(out['results'][key]['runs']) == len(seeds):
                continue
            runs, t0 = [], time.time()
            for s in seeds:
                argv = ['--dataset', a.dataset, '--data-dir', a.data_dir, '--seed', str(s)]
                runs.append(mod.main(mod.parse_args(argv + flags.split() + a.extra.split())))
            out['results'][key] = {'flags': flags, 'summary': summarise(runs), 'runs': runs,
                                   'wall_s': time.time() - t0, 'git': code, 'command': command}
            Path(a.out).write_text(json.dumps(out, indent=1))  # after every cell: nothing lost
            s = out['results'][key]['summary']
            print(f"== {key}: R@20 {s['recall@20']['mean']:.4f} +- {s['recall@20']['std']:.4f}"
                  f"  N@20 {s['ndcg@20']['mean']:.4f} +- {s['ndcg@20']['std']:.4f}", flush=True)
    print('\n'.join(f"{k:28s} R@20 {v['summary']['recall@20']['mean']:.4f} +- "
                    f"{v['summary']['recall@20']['std']:.4f}  N@20 {v['summary']['ndcg@20']['mean']:.4f}"
                    f" +- {v['summary']['ndcg@20']['std']:.4f}" for k, v in out['results'].items()))


if __name__ == '__main__':
    main()
