"""Generative models base vs --proex (and Mult-VAE's ablations, paper Fig. 6) over seeds.

    python bench/ml100k_generative.py                              # ml100k, the full grid
    python bench/ml100k_generative.py --dataset synthetic          # synthetic: base vs --proex
    python bench/ml100k_generative.py --models cvga --seeds 2023   # a part of the grid

Runs `<model>.py` (multvae, cvga, and ldiffrec when ldiffrec.py exists) with its defaults
(early stop on validation Recall@20, patience 20, test once with the best parameters), once
per variant and seed, and writes bench/results/<dataset>_generative.json: every run's result
(best epoch, validation and test metrics, seconds per epoch) and per variant the mean and
standard deviation (over seeds, n - 1 in the denominator) of test Recall@20 and NDCG@20.
The file is rewritten after every run, and --resume skips the runs it already holds.
"""
import argparse
import importlib
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# variant name -> flags; the ablations (paper Fig. 6) only for Mult-VAE on ml100k
VARIANTS = {'base': [], 'proex': ['--proex']}
ABLATIONS = {f'proex{flag[1:]}': ['--proex', flag]
             for flag in ('--no-var', '--no-reg', '--no-align', '--no-mixing')}
METRICS = ('recall@20', 'ndcg@20')


def grid(models, ablations):
    """(model, variant, flags) in the order they run."""
    for model in models:
        variants = dict(VARIANTS, **(ABLATIONS if ablations and model == 'multvae' else {}))
        for name, flags in variants.items():
            yield model, name, flags


def summarise(runs):
    """{model: {variant: {metric: {'mean', 'std', 'n'}}}} over the seeds of each variant."""
    out = {}
    for r in runs:
        out.setdefault(r['model'], {}).setdefault(r['variant'], []).append(r)
    for model, variants in out.items():
        for name, rs in variants.items():
            variants[name] = {m: {'mean': statistics.mean(x['test'][m] for x in rs),
                                  'std': statistics.stdev(x['test'][m] for x in rs) if len(rs) > 1 else 0.0,
                                  'n': len(rs)} for m in METRICS}
            variants[name]['seeds'] = [x['seed'] for x in rs]
            variants[name]['best_epochs'] = [x['best_epoch'] for x in rs]
    return out


def save(path, dataset, seeds, runs):
    summary = summarise(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'dataset': dataset, 'seeds': seeds, 'summary': summary,
                                'runs': runs}, indent=1))
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='ml100k', help='ml100k or synthetic (default ml100k)')
    p.add_argument('--models', default=None, help='comma-separated (default: multvae,cvga and '
                   'ldiffrec if ldiffrec.py exists)')
    p.add_argument('--seeds', default='2023,2024,2025', help='comma-separated seeds')
    p.add_argument('--ablations', default=None, choices=('yes', 'no'), help="Mult-VAE's four "
                   'ablations (default: yes on ml100k, no otherwise)')
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--extra', default='--threads 1', help='extra flags passed to every run '
                   '(default "--threads 1")')
    p.add_argument('--out', default=None, help='default: bench/results/<dataset>_generative.json')
    p.add_argument('--resume', action='store_true', help='keep the runs already in --out, run the rest')
    a = p.parse_args()
    models = a.models.split(',') if a.models else \
        ['multvae', 'cvga'] + (['ldiffrec'] if (ROOT / 'ldiffrec.py').exists() else [])
    ablations = (a.ablations or ('yes' if a.dataset == 'ml100k' else 'no')) == 'yes'
    seeds = [int(s) for s in a.seeds.split(',')]
    path = Path(a.out or ROOT / 'bench' / 'results' / f'{a.dataset}_generative.json')
    runs = json.loads(path.read_text())['runs'] if a.resume and path.exists() else []
    done = {(r['model'], r['variant'], r['seed']) for r in runs}
    for model, variant, flags in grid(models, ablations):
        mod = importlib.import_module(model)
        for seed in seeds:
            if (model, variant, seed) in done:
                continue
            argv = ['--dataset', a.dataset, '--data-dir', a.data_dir, '--seed', str(seed)] \
                + flags + a.extra.split()
            print(f'=== {model} {variant} seed {seed}: {" ".join(argv)}', flush=True)
            r = mod.main(mod.parse_args(argv))
            runs.append({'model': model, 'variant': variant, 'seed': seed, 'argv': argv,
                         'best_epoch': r['best_epoch'], 'best_val_recall20': r['best_val_recall20'],
                         'test': r['test'], 'sec_per_epoch': r['sec_per_epoch'],
                         'sec_per_eval': r['sec_per_eval'], 'epochs_run': len(r['history'])})
            save(path, a.dataset, seeds, runs)
    summary = save(path, a.dataset, seeds, runs)
    for model, variants in summary.items():
        for name, s in variants.items():
            print(f'{model:9s} {name:16s} ' + '  '.join(
                f"{m} {s[m]['mean']:.4f} +- {s[m]['std']:.4f}" for m in METRICS) + f"  (n={s['recall@20']['n']})")
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
