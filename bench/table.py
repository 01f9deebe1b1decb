"""The tables of bench/RESULTS.md and README.md, made from the result files in bench/results/.

    python bench/table.py                         # rewrite the table regions of RESULTS.md and README.md
    python bench/table.py --check                 # exit 1 if a region is not what the result files give
    python bench/table.py --print readme_summary  # print one table (NAME and ARGs as in its marker)

The text is written by hand; a table lies between `<!-- table:NAME ARG ... -->` and `<!-- /table -->`.
A new table is one more function in class Tables below and one pair of markers. A result file that is
missing, not yet valid JSON, or whose summary is not that of its runs (still being made) is named as pending.
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from scipy import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / 'results'
FILES = [HERE / 'RESULTS.md', HERE.parent / 'README.md']  # whose table regions main() fills
MODELS = ['gccf', 'lightgcn', 'simgcl', 'multvae', 'ldiffrec', 'cvga']
NAMES = {'gccf': 'GCCF', 'lightgcn': 'LightGCN', 'simgcl': 'SimGCL', 'multvae': 'Mult-VAE',
         'ldiffrec': 'L-DiffRec', 'cvga': 'CVGA'}
VIEW_NAMES = {'0': 'OP', '1': 'NP1', '2': 'NP2', '3': 'NP3'}
METRIC = {'R@20': lambda run: run['test']['recall@20'], 'N@20': lambda run: run['test']['ndcg@20'],
          'val': lambda run: run['best_val_recall20']}  # val: validation R@20 of the best epoch
MISSING = 'missing or still being written'


class Pending(Exception):
    """Raised by a table whose result file is not complete yet: Pending(file name, why)."""


def show(d, name, *args):
    """The lines of the table NAME ARGS, made from the result files in folder d."""
    try:
        return TABLES[name](Path(d), *args)
    except Pending as e:
        return render('', [], [e.args])


def fill(text, d=RESULTS):
    """text with each marked region replaced by the table its marker names."""
    return re.sub(r'^(<!-- table:([^\n]*) -->\n).*?^(<!-- /table -->)$',  # a blank line ends the table
                  lambda m: m[1] + '\n'.join(show(d, *m[2].split())) + '\n\n' + m[3], text, flags=re.S | re.M)


def build(d=RESULTS): return fill((HERE / 'RESULTS.md').read_text(), d)  # RESULTS.md, its tables made from d


def render(header, rows, pending=()):
    """A markdown table (header 'a | b', each row a list of cells), then a line per (file, why pending)."""
    line = lambda cells: '|' + '|'.join(f' {c} ' if str(c) else ' ' for c in cells) + '|'
    out = [line(header.split(' | ')), '|' + '---|' * len(header.split(' | ')), *map(line, rows)] if rows else []
    out += [''] * bool(out and pending) + [f'* `{name}`: pending ({why}).' for name, why in pending]
    return out or ['(none yet)']


def load(d, name, need=None):
    """The parsed file, or None if it is missing or not (yet) valid JSON (Pending if it lacks key need)."""
    try:
        r = json.loads((d / name).read_text())
    except (OSError, ValueError):
        r = None
    if need and not (r or {}).get(need):
        raise Pending(name, MISSING)
    return r


# ---------------------------------------------------------------- cells and small helpers

def f4(v): return '-' if v is None else f'{v:.4f}'
def pval(p): return '-' if p is None else f'{p:.3g}'
def kb(b): return f'{b / 1e3:.1f} KB'
def mb(b): return f'{b / 1e6:,.0f} MB' if b < 1e9 else f'{b / 1e9:.2f} GB'
def mean(values): return statistics.mean(values.values())  # of {seed: value}
def listed(values): return ', '.join(map(str, values))
def finals(r, arm, metric=None): return keyed(r, f"final|{arm}|{r['chosen'][arm]}|", metric)  # an arm's chosen config
def clean_command(cmd): return re.sub(r'(?<![^\s=\'"])/\S*/', '', cmd)  # as recorded, machine paths as file names


def ms(x, n=False):
    """'mean ± std' of a summary's {mean, std, n} or of values (list or dict; std with n - 1), '(n=...)' if n."""
    if x is not None and not (isinstance(x, dict) and 'mean' in x):
        v = list(x.values() if isinstance(x, dict) else x)
        x = v and {'mean': statistics.mean(v), 'std': statistics.stdev(v) if len(v) > 1 else 0, 'n': len(v)}
    return f"{x['mean']:.4f} ± {x['std']:.4f}" + f" (n={x['n']})" * n if x else '-'


def paired_p(a, b):
    """Paired t-test p of b against a ({seed: value}) over the seeds both have (None under two)."""
    both = sorted(set(a) & set(b))
    if len(both) < 2:
        return None
    p = float(stats.ttest_rel([b[s] for s in both], [a[s] for s in both]).pvalue)
    return None if p != p else p


def codes(r):
    """Commits that ran a file's runs, else its own ('+': uncommitted changes); same_numbers.py: 'before → after'."""
    if 'commits' in r:
        return f"{r['commits']['before'][:7]} → {r['commits']['after'][:7]}"
    runs = r.get('runs') or []
    found = [x.get('code') or x.get('git') for x in (runs.values() if isinstance(runs, dict) else runs)]
    found = [c for c in found if c] or [r.get('code') or r.get('git') or {'commit': r.get('commit')}]
    return ', '.join(sorted({c['commit'][:7] + '+' * bool(c.get('dirty')) for c in found if c.get('commit')})) or '-'


# ---------------------------------------------------------------- protocol files (bench/reproduce.py)

def keyed(r, prefix, metric=None):
    """{seed: run} of the runs whose key is prefix + seed (e.g. 'view|0|3'), or {seed: metric}."""
    runs = {int(k[len(prefix):]): v for k, v in r.get('runs', {}).items() if k.startswith(prefix)}
    return {s: METRIC[metric](v) for s, v in runs.items()} if metric else runs


def incomplete(r):
    """None if the file's summary is that of its final runs, else why it is pending."""
    s = (r or {}).get('summary', {}).get('recall@20')
    if not s or 'chosen' not in r:
        return 'no summary yet' if r else MISSING
    got = {arm: finals(r, arm, 'R@20') for arm in ('base', 'proex')}
    if any(len(v) != s[arm]['n'] or abs(mean(v) - s[arm]['mean']) > 1e-9 for arm, v in got.items()):
        return f"its summary is not that of its runs yet; {len(got['base'])} base, {len(got['proex'])} ProEx runs"


def protocols(d, dataset):
    """({model: file} of the complete protocol files of a dataset, [(file, why pending)])."""
    files = {m: load(d, f'protocol_{dataset}_{m}.json') for m in MODELS}
    return ({m: r for m, r in files.items() if not incomplete(r)},
            [(f'protocol_{dataset}_{m}.json', incomplete(r)) for m, r in files.items() if incomplete(r)])


def vs_proex(r, runs, metric):
    """[a variant's {seed: value}, ProEx's final runs' {seed: value}], cut to the seeds both have."""
    proex = finals(r, 'proex', metric)
    return [{s: x[s] for s in sorted(set(runs) & set(proex))} for x in (runs, proex)]


def book_files(d, folder=''):
    return {m: r for m in MODELS if (r := load(d / folder, f'{m}_book.json')) and 'test_mean' in r}


class Tables:
    """One plain function per table: the marker <!-- table:NAME ARG ... --> calls Tables.NAME(results
    folder, *ARGs), which returns the table's lines (render) or raises Pending."""

    def ml100k(d):
        done, waiting = protocols(d, 'ml100k')
        rows = []
        for m, r in done.items():
            s, c, g = r['summary'], r['chosen'], r['grids']
            R, N, early = s['recall@20'], s['ndcg@20'], '{base} / {proex}'.format(**s['best_epoch_le_30'])
            rows.append([NAMES[m], R['base']['n'], f"{len(g['base'])} / {len(g['proex'])}",
                         f"`{c['base'] or '(defaults)'}`", ms(R['base']), f"`{c['proex']}`", ms(R['proex']),
                         pval(R['p_paired_t']), ms(N['base']), ms(N['proex']), pval(N['p_paired_t']), early, codes(r)])
        return render('model | seeds | configs per arm | base config | base R@20 | ProEx config | ProEx R@20 | p | '
                      'base N@20 | ProEx N@20 | p | best epoch <= 30, base / ProEx | code', rows, waiting)

    def synthetic(d):
        done, waiting = protocols(d, 'synthetic')
        rows = []
        for m, r in done.items():
            s, c = r['summary'], r['chosen']
            R, view = s['recall@20'], s.get('views_recall@20', {}).get('3')
            rows.append([NAMES[m], f"`{c['base'] or '(defaults)'}`", f"`{c['proex']}`", ms(R['base'], n=True),
                         ms(R['proex'], n=True), pval(R['p_paired_t']), ms(view, n=True),
                         pval(view and view['vs_chosen']['p_paired_t']),
                         '{base} / {proex}'.format(**s['best_epoch_le_30']), codes(r)])
        return render('model | base config | ProEx config | base | ProEx | p | ProEx, view 3 alone | p | '
                      'best epoch <= 30, base / ProEx | code', rows, waiting)

    def views(d, dataset):
        """Fig. 4(b), from the summaries: ProEx with one profile view against all views, the same seeds."""
        rows = []
        for m, r in protocols(d, dataset)[0].items():
            rows += [[NAMES[m], f'{k} ({VIEW_NAMES.get(k, k)})', ms(v['variant'], n=True), ms(v['proex']),
                      f"{v['diff']:+.4f}", pval(v['p_paired_t'])]
                     for k, v in ((k, v['vs_chosen']) for k, v in r['summary'].get('views_recall@20', {}).items()
                                  if k != 'all')]
        return render('model | view | one view | all views | difference | p', rows)

    def eq7(d, dataset):
        """Eq. 7's forms against the chosen ProEx configuration: test R@20 (summary), then validation R@20."""
        rows, names = [], []
        for m, r in protocols(d, dataset)[0].items():
            forms = r['summary'].get('eq7', {})  # the form that is the chosen configuration is its final runs
            val = {k: vs_proex(r, keyed(r, f'eq7|{k}|', 'val'), 'val') for k, f in forms.items() if not f['is_chosen']}
            if not val:
                continue
            names, first = list(forms), next(iter(val))
            cells = [f"{ms(f['vs_chosen']['variant'], n=True)}, {f['vs_chosen']['diff']:+.4f} (p "
                     f"{pval(f['vs_chosen']['p_paired_t'])}); val {mean(val[k][0]):.4f} (p "
                     f"{pval(paired_p(val[k][1], val[k][0]))})" if k in val else '= chosen' for k, f in forms.items()]
            rows.append([NAMES[m], f"`{r['chosen']['proex']}`", f"{ms(forms[first]['vs_chosen']['proex'], n=True)}; "
                         f'val {mean(val[first][1]):.4f}', *cells])
        return render(' | '.join(['model | chosen ProEx config | chosen', *names]), rows)

    def eq11(d, dataset):
        """Eq. 11 as printed against Eq. 11 on the fused Gaussian (--align-fused), the same seeds."""
        rows = []
        for m, r in protocols(d, dataset)[0].items():
            pairs = [vs_proex(r, keyed(r, 'fused|', metric), metric) for metric in ('val', 'R@20', 'N@20')]
            if pairs[0][0]:
                rows.append([NAMES[m], len(pairs[0][0]), f"`{r['chosen']['proex']}`", *(
                    cell for fused, proex in pairs for cell in (ms(proex), ms(fused), pval(paired_p(proex, fused))))])
        return render('model | seeds | chosen ProEx config | val R@20, as printed | `--align-fused` | p | '
                      'R@20, as printed | `--align-fused` | p | N@20, as printed | `--align-fused` | p', rows)

    def many_vs_one(d):
        """Tables 2-3: base, one profile alone (RLMRec-C, DMRec-M; _avg: their mean per seed), ProEx; p vs ProEx."""
        rows = []
        for dataset in ('ml100k', 'synthetic'):
            for m, r in protocols(d, dataset)[0].items():
                s, one = r['summary'], r['summary'].get('one_profile')
                if not one:
                    continue
                arm = 'RLMRec-C' if one['config'].startswith('--rlmrec-con') else 'DMRec-M'
                lines = [('base', 'none', s['recall@20']['base'], s['ndcg@20']['base'], s)]
                for k, v in sorted(one['views'].items()):  # synthetic: view 3 misleading, the others informative
                    kind = VIEW_NAMES[k] if dataset == 'ml100k' else 'misleading' if k == '3' else 'informative'
                    best = ', best on validation' if str(one.get('best_view')) == k else ''
                    lines.append((f"{arm} `{one['config']}`", f'{k} ({kind}) alone{best}', v['recall@20']['one'],
                                  v['ndcg@20']['one'], v))
                lines += [(f'{arm}_avg', 'each view above alone, mean per seed', a['recall@20']['one'],
                           a['ndcg@20']['one'], a) for a in [one.get('avg')] if a]
                lines.append((f"ProEx `{r['chosen']['proex']}`", 'all 4', s['recall@20']['proex'], s['ndcg@20']['proex'], None))
                rows += [[dataset, NAMES[m], method, views, R['n'], ms(R), pval(p and p['recall@20']['p_paired_t']),
                          ms(N), pval(p and p['ndcg@20']['p_paired_t'])] for method, views, R, N, p in lines]
        return render('dataset | model | method | profiles | seeds | R@20 | p vs ProEx | N@20 | p vs ProEx', rows)

    def commands(d, *names):
        """Each file's command line as recorded and the code that ran it ({model} in a name: each model's)."""
        rows, waiting = [], []
        for name in [n.format(model=m) for n in names for m in (MODELS if '{model}' in n else [None])]:
            r = load(d, name)
            why = incomplete(r) if name.startswith(('protocol_', 'ablation_')) else None if r else MISSING
            if why:
                waiting.append((name, why))
                continue
            recorded = [r['command']] if 'command' in r else sorted({x['command'] for x in r['runs'].values()})
            rows += [[f'`{name}`', f'`{clean_command(c)}`', codes(r)] for c in recorded]
            rows += [[f'`{f}`, merged into the file above', f'`{clean_command(c)}`', '']
                     for f, c in r.get('merged', {}).items()]
        return render('file | command | code', rows, waiting)

    def book(d):
        """Amazon-Book: the base models against the paper's Table 1; min: minutes of training and validation."""
        files, rows = book_files(d), []
        for m, r in files.items():
            t, p = r['test_mean'], r['paper']
            minutes = [sum((h.get('train_s') or 0) + (h.get('eval_s') or 0) for h in x['history']) for x in r['runs']]
            rows.append([NAMES[m], f"`{r['command']}`", r['seeds'], f4(t['recall@10']), f4(t['recall@20']),
                         f4(t['ndcg@10']), f4(t['ndcg@20']), f4(p['recall@20']), f4(p['ndcg@20']),
                         listed(r['best_epochs']), ', '.join(f'{x / 60:.0f}' for x in minutes), codes(r)])
        return render('model | command | seed | R@10 | R@20 | N@10 | N@20 | paper R@20 | paper N@20 | best epoch | '
                      'min | code', rows, [(f'{m}_book.json', MISSING) for m in MODELS if m not in files])

    def book_earlier(d):
        now, rows = book_files(d), []
        for m, r in book_files(d, 'book_earlier').items():
            if m in now:
                t, n = r['test_mean'], now[m]['test_mean']
                rows.append([NAMES[m], f4(t['recall@20']), f4(n['recall@20']),
                             f"{n['recall@20'] - t['recall@20']:+.4f}", f4(t['ndcg@20']), f4(n['ndcg@20']),
                             listed(r['best_epochs']), listed(now[m]['best_epochs'])])
        return render('model | R@20 earlier | R@20 now | difference | N@20 earlier | N@20 now | best epoch earlier | '
                      'best epoch now', rows)

    def ablation(d, name):
        r = load(d, name)
        why = incomplete(r) or (None if 'ablations' in r['summary'] else 'no ablation summary yet')
        if why:
            raise Pending(name, why)
        R, N = r['summary']['recall@20'], r['summary']['ndcg@20']  # diff: ProEx - base; an ablation's: it - ProEx
        rows = [[f"base `{r['chosen']['base']}`", ms(R['base']), ms(N['base']), f"{-R['diff']:+.4f}",
                 pval(R['p_paired_t'])], ['ProEx', ms(R['proex']), ms(N['proex']), '', '']] + [
            [f'`{flag}`', a, '', '', ''] if isinstance(a, str) else
            [f'`{flag}`', ms(a['recall@20']['ablation']), ms(a['ndcg@20']['ablation']),
             f"{a['recall@20']['diff']:+.4f}", pval(a['recall@20']['p_paired_t'])]
            for flag, a in r['summary']['ablations'].items()]
        return render('variant | R@20 | N@20 | R@20 - ProEx | p', rows)

    def profile_dim(d):
        """--profile-dim against the full width: the same seeds of the ProEx arm of the protocol file."""
        r = load(d, 'ml100k_lightgcn_profile_dim.json', 'results')
        rows = []
        for k, v in r['results'].items():
            model, flags = k.split('/')[0], re.sub(r'\s*--profile-dim \d+', '', v['flags']).strip()
            full = load(d, full_name := f"protocol_{r['dataset']}_{model}.json")
            p = finals(full, 'proex') if not incomplete(full) and full['chosen']['proex'] == flags else {}
            runs = {x['config']['seed']: x for x in v['runs']}
            same = {s: p[s] for s in runs if s in p}
            for label, flags, runs in [(k, v['flags'], runs), (f'{model}, full width (`{full_name}`)', flags, same)]:
                rows += [[label, f'`{flags}`', listed(runs), *(ms(map(METRIC[k], runs.values())) for k in METRIC),
                          listed(x['best_epoch'] for x in runs.values()), codes({'runs': runs})]] if runs else []
        return render('model / variant | flags | seeds | R@20 | N@20 | best val R@20 | best epochs | code', rows)

    def profile_input(d, name):
        """Eq. 6's input for the generative models (bench/compare.py), chosen on validation R@20."""
        rows, val = [], {}
        for k, v in load(d, name, 'results')['results'].items():
            k = k.split('/')[-1]
            val[k] = {x['config']['seed']: METRIC['val'](x) for x in v['runs']}
            rows.append([k, f"`{v['flags']}`", listed(val[k]), ms(val[k]), ms(map(METRIC['R@20'], v['runs'])),
                         listed(x['best_epoch'] for x in v['runs']), codes(v)])
        (a, va), (b, vb) = list(val.items())[:2]
        diff = f'{mean(vb) - mean(va):+.4f} (paired p {pval(paired_p(va, vb))})'
        return render('variant | flags | seeds | validation R@20 | test R@20 | best epochs | code',
                      rows + [[f'{b} - {a}', '', '', diff, '', '', '']])

    def plateau(d):
        """bench/ldiffrec_plateau.py: each variant's validation R@20 at four points of its curve."""
        runs = load(d, 'ldiffrec_plateau.json', 'runs')['runs']
        argv, epochs = runs['base']['argv'], [e for e, _ in runs['base']['val_curve']]
        picks = [epochs[len(epochs) * i // 4 - 1] for i in range(1, 5)] if len(epochs) >= 4 else epochs
        flags = lambda a: ' '.join(a[len(argv):] if a[:len(argv)] == argv else a) or '(none)'  # beyond the base's
        rows = [[k, f"`{flags(v['argv'])}`", '{:g}, {:g}'.format(*v.get('scales_mu_var', [1, 1])),
                 *(f4(dict(v['val_curve']).get(e)) for e in picks), f4(v['best_val_recall20']), codes(v)]
                for k, v in runs.items()]
        return render(' | '.join(['variant | flags | scale (mu, sigma^2)', *(f'val R@20 @ {e}' for e in picks),
                                  'best val R@20 | code']), rows)

    def profiles_ml100k(d):
        r = load(d, 'profiles_ml100k.json', 'first_run')
        f, rt, per, lg = r['first_run'], r.get('retry_fallbacks_run'), r['journal_bytes_per_entity'], r['lightgcn']
        n, faults = {p: r['reports'][p]['n'] for p in ('usr', 'itm')}, f['faults_served']
        return render('measure | value', [
            ['entities (users + items)', f"{r['entities']:,} ({n['usr']:,} + {n['itm']:,})"],
            ['first run', f"{f['seconds']} s, {f['requests']:,} requests, {sum(faults.values()):,} faults, exit status "
                          f"{f['exit_status']}" + ' (3: some entities fell back)' * (f['exit_status'] == 3)],
            ['faults by kind', ', '.join(f'`{k}` {v}' for k, v in sorted(faults.items()))],
            ['entities that fell back', f['fallbacks']],
            *([['`--retry-fallbacks` run', f"{rt['seconds']} s, {rt['requests']} requests, "
                                            f"{rt['fallbacks']} fallbacks left"]] if rt else []),
            ['peak memory', f"{f['peak_memory_mb']} MB"],
            ['journal per entity (users / items)', f"{kb(per['usr'])} / {kb(per['itm'])}"],
            ['vector store per entity', kb(r['file_bytes']['usr_emb_store.f32'] / n['usr'])],
            ['LightGCN + ProEx on the files', f"{lg['epochs']} epochs, {lg['seconds']} s, test R@20 "
                                              f"{f4(METRIC['R@20'](lg['result']))}"]])

    def profiles_scale(d):
        r = load(d, 'profiles_scale.json', 'file_bytes')
        fb = r['file_bytes']
        emb, nps = [v for k, v in fb.items() if k.startswith('usr_emb_np')], [
            v for k, v in fb.items() if re.fullmatch(r'usr_prf_\d+\.json', k)]
        return render(f"at {r['n']:,} entities, K = {r['K']}, d = {r['dim']} | ", [
            ['journal (texts)', f"{mb(fb['usr_prf_journal.jsonl'])} ({kb(r['journal_bytes_per_entity'])} per entity)"],
            ['vector store', f"{mb(fb['usr_emb_store.f32'])} (K x d x 4 bytes per entity)"],
            ['output files', f'{len(emb)} x {mb(max(emb))} embeddings, {len(nps)} x {mb(max(nps))} NP texts'],
            ['finishing pass', f"{r['finish_seconds']} s, peak memory {r['peak_memory_mb']} MB"],
            ['running pass, peak memory by items profiled',
             ', '.join(f'{v} MB at {int(k):,}' for k, v in r['running_pass_peak_mb'].items())]])

    def profiles_local(d):
        r = load(d, 'profiles_local.json', 'reports')
        u, i, copied = r['reports']['usr'], r['reports']['itm'], sum('placeholder' in x for x in r['fallbacks'])
        return render('measure | value', [
            ['time', f"{r['seconds']:,} s, {r['seconds_per_entity']} s per entity"],
            ['chat calls (of them re-asks)', f"{r['chat_calls']} ({r['reasks']})"],
            ['fallbacks, users / items', f"{u['fallbacks']} / {i['fallbacks']} ({copied} where the last reply copied "
                                         'a placeholder of the shown format)'],
            ['mean cosine OP vs NP, users / items without fallback',
             f"{u['op_vs_np']:.4f} ({u['n']}) / {i['op_vs_np']:.4f} ({i['n']})"],
            ['LightGCN + ProEx on the files', f"{r['lightgcn']['epochs']} epochs, test R@20 "
                                              f"{f4(METRIC['R@20'](r['lightgcn']['result']))}"]])

    def timing(d):
        return render('model | s / epoch (book) | s / validation (book)', [
            [NAMES[m], f"{t['sec_per_epoch']:.2f}", f"{t['sec_per_eval']:.2f}"]
            for m, t in load(d, 'timing.json', 'book')['book'].items()])

    def proex_cost(d):
        return render('dataset | model | base | ProEx | ratio', [
            [f'`{ds}`', NAMES[m], f"{x['base']['sec_per_epoch']:.2f}", f"{x['proex']['sec_per_epoch']:.2f}",
             f"{x['ratio']:.2f}x"] for ds, c in load(d, 'timing.json', 'proex_cost')['proex_cost'].items()
            for m, x in c.items()])

    def align_cost(d, *names):  # the earliest file (align_cost.json) has no dataset and ran lambda1 0.1
        rows = [[r.get('dataset', 'ml100k'), f"{r['sec_per_epoch_median']['0']:.2f} s", r.get('lambda1', '0.1'),
                 f"{r['sec_per_epoch_median'][r.get('lambda1', '0.1')]:.2f} s", f"{r['ratio']:.2f}x"]
                for r in [load(d, name, 'ratio') for name in names or ['align_cost.json']]]
        return render('dataset | s / epoch, lambda1 = 0 | lambda1 | s / epoch, Eq. 13 on | ratio', rows)

    def check_cost(d):
        return render('batch | objective | checks | share', [
            [name, f"{c['objective_s'] * 1e3:.1f} ms", f"{c['checks_s'] * 1e6:.1f} µs", f"{100 * c['share']:.3f}%"]
            for name, c in load(d, 'check_cost.json', 'cases')['cases'].items()])

    def mlp_floor(d):
        return render('profile width | base s / epoch | MLP alone s | ProEx s / epoch | ProEx / base | floor | '
                      'MLP share of ProEx', [
                          [w, f"{x['base_s']:.3f}", f"{x['mlp_s']:.3f}", f"{x['proex_s']:.3f}", f"{x['ratio']:.1f}x",
                           f"{x['floor_ratio']:.1f}x", f"{x['mlp_share_of_proex']:.0%}"]
                          for w, x in load(d, 'mlp_floor.json', 'by_width')['by_width'].items()])

    def same_numbers(d, name):
        return render('run | identical | test R@20 before | after', [
            [f'`{k}`', 'yes' if v['identical'] else 'no', f"{v['test_recall@20']['before']:.6f}",
             f"{v['test_recall@20']['after']:.6f}"] for k, v in load(d, name, 'runs')['runs'].items()])

    def first_runs(d):
        done = load(d, 'first_runs.json', 'runs')['runs']
        left = [f'`{c}`' for m in MODELS for c in (f'python {m}.py', f'python {m}.py --proex') if c not in done]
        return render('command | wall s | CPU s | epochs | test R@20', [
            [f'`{c}`', f"{x['wall_s']:.1f}", f"{x['cpu_s']:.1f}", x['epochs'], f4(x['test_recall@20'])]
            for c, x in done.items()]) + (['', f"Not in the file yet: {', '.join(left)}."] if left else [])

    def readme_summary(d):
        books, ml, syn = book_files(d), protocols(d, 'ml100k')[0], protocols(d, 'synthetic')[0]
        cell = lambda R: f"{R['base']['mean']:.4f} → {R['proex']['mean']:.4f} (p {pval(R['p_paired_t'])})"
        return render('model | book (paper) | ml100k base → ProEx | synthetic base → ProEx', [
            [NAMES[m], f"{books[m]['test_mean']['recall@20']:.4f} ({books[m]['paper']['recall@20']:.4f})"
             if m in books else 'pending', *(cell(f[m]['summary']['recall@20']) if m in f else 'pending'
                                             for f in (ml, syn))] for m in MODELS])

    def readme_timings(d):
        runs = (load(d, 'first_runs.json') or {}).get('runs') or {}
        secs = lambda s: f'{s:.1f} s' if s < 10 else f'{s:.0f} s' if s < 100 else f'{s / 60:.1f} min'
        return render('model | `python <model>.py` | `--proex`', [[NAMES[m], *(
            secs(runs[c]['wall_s']) if c in runs else 'pending' for c in (f'python {m}.py', f'python {m}.py --proex'))]
            for m in MODELS])


TABLES = {name: fn for name, fn in vars(Tables).items() if not name.startswith('_')}


def main():
    sys.path.insert(0, str(HERE.parent))
    from eval import ArgumentParser  # one-line errors, as every entry point
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true', help='write nothing; exit 1 if a table region is out of date')
    p.add_argument('--print', nargs='+', metavar=('NAME', 'ARG'), help=f"print one table ({', '.join(TABLES)})")
    a = p.parse_args()
    if a.print:
        return print('\n'.join(show(RESULTS, *a.print))) if a.print[0] in TABLES else p.error(
            f"argument --print: no table {a.print[0]!r}; one of {', '.join(TABLES)}")
    stale = [f for f in FILES if fill(f.read_text()) != f.read_text()]
    for f in [] if a.check else stale:
        f.write_text(fill(f.read_text()))
        print(f'wrote {f}')
    if a.check and stale:
        sys.exit(f"error: tables out of date in {', '.join(f.name for f in stale)}: run python bench/table.py")


if __name__ == '__main__':
    main()
