"""Print the README's results tables from the files in bench/results/ (so they stay in step).

    python bench/table.py
"""
import json
from pathlib import Path

R = Path(__file__).resolve().parent / 'results'
MODELS = ['gccf', 'lightgcn', 'simgcl', 'multvae', 'ldiffrec', 'cvga']


def book():
    print('Base models on Amazon-Book (test, best-validation epoch, paper protocol):\n')
    print('| model | flags | seeds | R@10 | R@20 | N@10 | N@20 | paper R@20 | paper N@20 | best epoch |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for m in MODELS:
        f = R / f'{m}_book.json'
        if f.exists():
            r = json.loads(f.read_text())
            t, p = r['test_mean'], r['paper']
            flags = ' '.join(x for x in r.get('extra', '').replace('--threads 1', '').split())
            print(f"| {m} | {flags or '-'} | {r['seeds']} | {t['recall@10']:.4f} | {t['recall@20']:.4f} | "
                  f"{t['ndcg@10']:.4f} | {t['ndcg@20']:.4f} | {p['recall@20']:.4f} | "
                  f"{p['ndcg@20']:.4f} | {r['best_epochs']} |")


def comparisons():
    for f in sorted(R.glob('*.json')):
        r = json.loads(f.read_text())
        if 'results' not in r:
            continue
        print(f"\n`{f.name}`: dataset {r['dataset']}, seeds {r['seeds']}, mean +- std of test:\n")
        print('| model / variant | R@20 | N@20 | best val R@20 | best epochs |')
        print('|---|---|---|---|---|')
        for k, v in r['results'].items():
            s = v['summary']
            print(f"| {k} | {s['recall@20']['mean']:.4f} +- {s['recall@20']['std']:.4f} | "
                  f"{s['ndcg@20']['mean']:.4f} +- {s['ndcg@20']['std']:.4f} | "
                  f"{s['best_val_recall20_mean']:.4f} | {s['best_epochs']} |")


def timing():
    f = R / 'timing.json'
    if not f.exists():
        return
    r = json.loads(f.read_text())
    print(f"\nSeconds on this machine ({r['machine']}, torch {r['torch']}), `timing.json`:\n")
    print('| model | s / epoch (book) | s / validation (book) |')
    print('|---|---|---|')
    for m, t in r['book'].items():
        print(f"| {m} | {t['sec_per_epoch']:.2f} | {t['sec_per_eval']:.2f} |")
    if 'speedup_vs_released_lightgcn' in r:
        s = r['speedup_vs_released_lightgcn']
        print(f"\nLightGCN vs the released framework on this CPU (3.03 s / epoch, 3.77 s / validation): "
              f"{s['train_epoch']:.1f}x faster per epoch, {s['validation']:.1f}x per validation.")
    for ds, cost in r['proex_cost'].items():
        print(f'\nProEx cost on `{ds}`: seconds per training epoch, base and `--proex` (defaults):\n')
        print('| model | base | ProEx | ratio |')
        print('|---|---|---|---|')
        for m, c in cost.items():
            print(f"| {m} | {c['base']['sec_per_epoch']:.2f} | {c['proex']['sec_per_epoch']:.2f} | "
                  f"{c['ratio']:.2f}x |")


if __name__ == '__main__':
    book()
    comparisons()
    timing()
