"""Validation curves behind a comparison: mean validation Recall@20 over seeds, per epoch.

    python bench/curves.py bench/results/ml100k_lightgcn.json
    python bench/curves.py bench/results/ml100k_lightgcn.json --cells lightgcn/base,lightgcn/proex --every 5

Reads a result file of bench/compare.py (every run keeps its history) and prints one row
per evaluated epoch (every --every-th) and one column per cell: the mean over the seeds
still training at that epoch (a run stops 20 epochs after its best), with the number of
those seeds when it is not all of them. The last row gives each cell's best mean.
"""
import argparse
import json
import statistics
from pathlib import Path


def curve(runs):
    """{epoch: [val R@20 of each run evaluated at that epoch]}."""
    out = {}
    for r in runs:
        for h in r.get('history', []):
            if 'val_recall20' in h:
                out.setdefault(h['epoch'], []).append(h['val_recall20'])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('file', help='a result file of bench/compare.py')
    p.add_argument('--cells', default=None, help='comma-separated model/variant keys (default: all)')
    p.add_argument('--every', type=int, default=10, help='print every n-th evaluated epoch (default 10)')
    a = p.parse_args()
    results = json.loads(Path(a.file).read_text())['results']
    cells = a.cells.split(',') if a.cells else list(results)
    missing = [c for c in cells if c not in results]
    if missing:
        raise SystemExit(f'error: {a.file} has no cells {missing}; it has {list(results)}')
    curves = {c: curve(results[c]['runs']) for c in cells}
    n_runs = {c: len(results[c]['runs']) for c in cells}
    epochs = sorted(set().union(*curves.values()))
    print('epoch | ' + ' | '.join(cells))
    for e in epochs[a.every - 1::a.every]:
        row = []
        for c in cells:
            v = curves[c].get(e, [])
            row.append('' if not v else f'{statistics.mean(v):.4f}' +
                       ('' if len(v) == n_runs[c] else f' (n={len(v)})'))
        print(f'{e:5d} | ' + ' | '.join(row))
    best = [max((statistics.mean(v), e) for e, v in curves[c].items() if len(v) == n_runs[c])
            if curves[c] else (float('nan'), 0) for c in cells]
    print(' best | ' + ' | '.join(f'{m:.4f} @ {e}' for m, e in best))


if __name__ == '__main__':
    main()
