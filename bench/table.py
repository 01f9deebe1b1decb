"""Print the README's results tables from the files in bench/results/ (so they stay in step).

    python bench/table.py
"""
import json
import statistics
from pathlib import Path

from scipy import stats

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


def stops(r, arm):
    """Final runs of an arm that early stopping ended before epoch 30 (a plateau stop)."""
    return sum(v['stop_reason'] == 'patience' and v['stop_epoch'] < 30
               for k, v in r['runs'].items() if k.startswith(f'final|{arm}|'))


def tune_seeds(r):
    return {k.split('|')[-1] for k in r['runs'] if k.startswith('tune|')}


def protocol():
    """bench/reproduce.py files: tuned on validation, 10 paired seeds, paired t-test."""
    files = sorted(R.glob('protocol_*.json'))
    rows = []
    for f in files:
        r = json.loads(f.read_text())
        if 'summary' not in r:
            continue
        s, n = r['summary'], r['summary']['recall@20']['base']['n']
        fmt = lambda m, arm: f"{s[m][arm]['mean']:.4f} ± {s[m][arm]['std']:.4f}"
        rows.append(f"| {r['model']} | {r['dataset']} | {n} | `{r['chosen']['base']}` | {fmt('recall@20', 'base')} | "
                    f"`{r['chosen']['proex']}` | {fmt('recall@20', 'proex')} | {s['recall@20']['p_paired_t']:.3g} | "
                    f"{fmt('ndcg@20', 'base')} | {fmt('ndcg@20', 'proex')} | {s['ndcg@20']['p_paired_t']:.3g} | "
                    f"{stops(r, 'base')} / {stops(r, 'proex')} |")
    if not rows:
        return
    print('\nBase vs ProEx, each arm tuned on validation R@20 with the same budget, then the chosen '
          'configuration with paired seeds 1..n; test mean ± std, paired t-test p; plateau stops = '
          'runs stopped before epoch 30 (`bench/reproduce.py`, files `protocol_*.json`):\n')
    print('| model | data | seeds | base config | base R@20 | ProEx config | ProEx R@20 | p | '
          'base N@20 | ProEx N@20 | p | plateau stops base / ProEx |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))
    for f in files:
        r = json.loads(f.read_text())
        tune = {k.split('|')[1] + ' ' + k.split('|')[2]: v['best_val_recall20']
                for k, v in r['runs'].items() if k.startswith('tune|')}
        print(f"\n`{f.name}`:", f"validation R@20 of every tuned configuration (seed "
              f"{next(iter(tune_seeds(r)))}): " + ', '.join(f'`{k.strip()}` {v:.4f}' for k, v in tune.items())
              if tune else 'no tuning (one configuration per arm).')
        s = r.get('summary', {})
        if s.get('by_activity'):
            b, p = s['by_activity']['base'], s['by_activity']['proex']
            print('Test R@20 by quartile of train interactions (base → ProEx): '
                  + ', '.join(f"{g['train_items'][0]}-{g['train_items'][1]} items {g['recall@20']:.4f} → {h['recall@20']:.4f}"
                              for g, h in zip(b, p) if g['recall@20'] is not None))
        if s.get('views_recall@20'):
            print('ProEx with one profile view (test R@20, mean of the first seeds): '
                  + ', '.join(f"view {k} {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})"
                              for k, v in s['views_recall@20'].items()))


def synthetic():
    """protocol_synthetic_*.json: the planted-structure check. ProEx should beat the base and
    ProEx fed only the misleading view 3 (--profiles 3); paired t-tests over the same seeds."""
    rows = []
    for m in MODELS:
        f = R / f'protocol_synthetic_{m}.json'
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        runs = r['runs']
        base = {k.split('|')[-1]: v['test']['recall@20'] for k, v in runs.items() if k.startswith('final|base|')}
        proex = {k.split('|')[-1]: v['test']['recall@20'] for k, v in runs.items() if k.startswith('final|proex|')}
        view = {k.split('|')[-1]: v['test']['recall@20'] for k, v in runs.items() if k.startswith('view|3|')}
        rows.append((m, r['chosen'], base, proex, view))
    if not rows:
        return
    print('\nSynthetic check (`protocol_synthetic_*.json`, planted user/item factors, views 0-2 '
          'informative, view 3 misleading): test R@20, mean ± std over seeds 1..n, paired t-tests '
          'over the seeds both runs share:\n')
    print('| model | base config | ProEx config | base | ProEx | p | ProEx, view 3 alone | p | '
          'ProEx > base (p < .05) | ProEx > view 3 (p < .05) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for m, chosen, base, proex, view in rows:
        print(f"| {m} | `{chosen['base']}` | `{chosen['proex']}` | {ms(base)} | {ms(proex)} | "
              f"{pval(paired_p(base, proex))} | {ms(view)} | {pval(paired_p(view, proex))} | "
              f"{above(base, proex)} | {above(view, proex)} |")


def ms(runs):
    v = list(runs.values())
    if not v:
        return '-'
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f} (n={len(v)})"


def paired_p(a, b):
    """Paired t-test p of b against a over the seeds both have (None under two seeds)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return float(stats.ttest_rel([b[s] for s in seeds], [a[s] for s in seeds]).pvalue)


def above(a, b):
    """'yes' if b's mean is higher with paired p < .05, 'n.s.' if higher without, else 'no'."""
    if not a or not b:
        return '-'
    if statistics.mean(b.values()) <= statistics.mean(a.values()):
        return 'no'
    p = paired_p(a, b)
    return 'yes' if p is not None and p < 0.05 else 'n.s.'


def pval(p):
    return '-' if p is None else f'{p:.3g}'


def ablations():
    """bench/reproduce.py --ablations files: the Fig. 6 switches on ProEx's configuration."""
    for f in sorted(R.glob('ablation_*.json')):
        r = json.loads(f.read_text())
        s = r.get('summary', {})
        if 'ablations' not in s:
            continue
        n, fmt = s['recall@20']['base']['n'], lambda v: f"{v['mean']:.4f} ± {v['std']:.4f}"
        print(f"\nFig. 6 ablations of {r['model']} on {r['dataset']} (`{f.name}`), ProEx "
              f"`{r['chosen']['proex']}`, paired seeds 1..{n}; test R@20, the difference to full "
              f"ProEx and its paired t-test p:\n")
        print('| variant | R@20 | N@20 | R@20 - ProEx | p |')
        print('|---|---|---|---|---|')
        print(f"| base `{r['chosen']['base']}` | {fmt(s['recall@20']['base'])} | "
              f"{fmt(s['ndcg@20']['base'])} | {-s['recall@20']['diff']:+.4f} | "
              f"{pval(s['recall@20']['p_paired_t'])} |")
        print(f"| ProEx | {fmt(s['recall@20']['proex'])} | {fmt(s['ndcg@20']['proex'])} | | |")
        for flag, a in s['ablations'].items():
            if isinstance(a, str):
                print(f'| `{flag}` | {a} | | | |')
                continue
            print(f"| `{flag}` | {fmt(a['recall@20']['ablation'])} | {fmt(a['ndcg@20']['ablation'])} | "
                  f"{a['recall@20']['diff']:+.4f} | {pval(a['recall@20']['p_paired_t'])} |")


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
    protocol()
    synthetic()
    ablations()
    comparisons()
    timing()
