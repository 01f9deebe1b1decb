"""Write bench/RESULTS.md from the result files in bench/results/ (so the two stay in step).

    python bench/table.py                    # writes bench/RESULTS.md and says where
    python bench/table.py --readme-summary   # prints the README's one summary table
    python bench/table.py --readme-timings   # prints the README's table of first-run wall times
    python bench/table.py --results DIR --out FILE

Every number in RESULTS.md, prose included, is read from a result file. A file that is
missing, unreadable (still being written) or whose summary does not match its runs (a
benchmark still running) gets one line saying it is pending, so this never fails while
benchmarks run. tests/test_results_md.py checks that bench/RESULTS.md equals build().
"""
import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

from scipy import stats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / 'results'
OUT = HERE / 'RESULTS.md'
MODELS = ['gccf', 'lightgcn', 'simgcl', 'multvae', 'ldiffrec', 'cvga']
EVAL_EVERY = {m: 5 if m == 'ldiffrec' else 3 for m in MODELS}  # each model file's --eval-every default
NAMES = {'gccf': 'GCCF', 'lightgcn': 'LightGCN', 'simgcl': 'SimGCL', 'multvae': 'Mult-VAE',
         'ldiffrec': 'L-DiffRec', 'cvga': 'CVGA'}
# options of bench/reproduce.py: everything else after --base-config= / --proex-config= in a
# recorded command line is part of that configuration's value
REPRODUCE_OPTIONS = set(re.findall(r"add_argument\('(--[\w-]+)'", (HERE / 'reproduce.py').read_text()))


# ---------------------------------------------------------------- helpers

def load(d, name):
    """The parsed file, or None if it is missing or not (yet) valid JSON."""
    try:
        return json.loads((d / name).read_text())
    except (OSError, ValueError):
        return None


def f4(v):
    return '-' if v is None else f'{v:.4f}'


def pval(p):
    return '-' if p is None else f'{p:.3g}'


def ms(values):
    """'mean ± std' of a list (std over seeds, n - 1 in the denominator)."""
    v = list(values)
    if not v:
        return '-'
    return f'{statistics.mean(v):.4f} ± {statistics.stdev(v) if len(v) > 1 else 0:.4f}'


def msn(values):
    v = list(values)
    return '-' if not v else f'{ms(v)} (n={len(v)})'


def paired_p(a, b):
    """Paired t-test p of b against a over the seeds both have (None under two seeds)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    p = float(stats.ttest_rel([b[s] for s in seeds], [a[s] for s in seeds]).pvalue)
    return None if p != p else p


def above(a, b):
    """'yes' if b's mean is higher with paired p < .05, 'n.s.' if higher without, else 'no'."""
    if not a or not b:
        return '-'
    if statistics.mean(b.values()) <= statistics.mean(a.values()):
        return 'no'
    p = paired_p(a, b)
    return 'yes' if p is not None and p < 0.05 else 'n.s.'


def commit(code):
    """First 7 characters of a recorded commit; '+' when tracked sources had uncommitted changes."""
    if not isinstance(code, dict) or not code.get('commit'):
        return '-'
    return code['commit'][:7] + ('+' if code.get('dirty') else '')


def commits(codes):
    return ', '.join(sorted({commit(c) for c in codes})) or '-'


def clean_command(cmd):
    """A recorded command line as one to type: 'python' for the interpreter's path, no
    --data-dir (the data root is $PROEX_DATA or your own --data-dir), the values of
    reproduce.py's --base-config= / --proex-config= quoted as one argument."""
    if not cmd:
        return None
    if "'" in cmd:  # written by shlex.join (compare.py, same_numbers.py): already shell-quoted
        tokens = shlex.split(cmd)
        keep = [t for i, t in enumerate(tokens) if t != '--data-dir' and
                (i == 0 or tokens[i - 1] != '--data-dir') and not t.startswith('--data-dir=')]
        return shlex.join(['python'] + keep[1:] if keep[0].rsplit('/', 1)[-1].startswith('python') else keep)
    tokens = cmd.split()
    if tokens[0].endswith('.py'):
        tokens = ['python'] + tokens
    elif tokens[0].rsplit('/', 1)[-1].startswith('python'):
        tokens[0] = 'python'
    out, i, merging = [], 0, False
    while i < len(tokens):
        t = tokens[i]
        if t == '--data-dir':
            i += 2
            continue
        if t.startswith('--data-dir='):
            i += 1
            continue
        merging = t == '--merge' or (merging and not t.startswith('--'))
        if (merging and t != '--merge') or (out[-1:] == ['--out'] and t.startswith('/')):
            t = t.rsplit('/', 1)[-1]  # a share's path on the machine that ran it: its name
        if t.startswith(('--base-config=', '--proex-config=')):
            value = [t]
            while i + 1 < len(tokens) and tokens[i + 1].split('=')[0] not in REPRODUCE_OPTIONS:
                i += 1
                value.append(tokens[i])
            t = ' '.join(value)
        out.append(t)
        i += 1
    return shlex.join(out)


def cmd_line(cmd):
    c = clean_command(cmd)
    return f'`{c}`' if c else '(no command recorded)'


def merged_lines(r):
    """The commands of the shares that reproduce.py --merge took into a protocol file."""
    return [f'  * runs merged from `{name}` (a second process): {cmd_line(cmd)}'
            for name, cmd in r.get('merged', {}).items()]


def stopping(runs):
    """'k / P': validation every k epochs, and P epochs from the best epoch to the stop, over
    the runs that early stopping ended. runs: (validated epochs, best epoch, stop epoch or None)."""
    every, after = set(), set()
    for validated, best, stop in runs:
        if len(validated) > 1:
            every.add(validated[1] - validated[0])
        elif validated:
            every.add(validated[0])
        if stop is not None and best is not None:
            after.add(stop - best)
    j = lambda s: ','.join(str(x) for x in sorted(s)) or '-'
    return f'{j(every)} / {j(after)}'


def protocol_stops(runs):
    return stopping([([i + 1 for i, x in enumerate(r.get('val_curve') or []) if x is not None],
                      r.get('best_epoch'), r.get('stop_epoch') if r.get('stop_reason') == 'patience' else None)
                     for r in runs])


def history_stops(runs):
    out = []
    for r in runs:
        h = r.get('history') or []
        last = h[-1]['epoch'] if h else None
        early = r.get('stop_reason') == 'patience' if 'stop_reason' in r else \
            last is not None and last < r.get('config', {}).get('epochs', float('inf'))
        out.append(([x['epoch'] for x in h if x.get('val_recall20') is not None], r.get('best_epoch'),
                    last if early else None))
    return stopping(out)


def pending(name, why):
    return [f'* `{name}`: pending ({why}).']


# ---------------------------------------------------------------- protocol files (bench/reproduce.py)

def finals(r, arm):
    """{seed: run} of an arm's chosen configuration."""
    cfg = r.get('chosen', {}).get(arm)
    if cfg is None:
        return {}
    pre = f'final|{arm}|{cfg}|'
    return {int(k[len(pre):]): v for k, v in r.get('runs', {}).items() if k.startswith(pre)}


def r20(runs):
    return {s: v['test']['recall@20'] for s, v in runs.items()}


def n20(runs):
    return {s: v['test']['ndcg@20'] for s, v in runs.items()}


def incomplete(r):
    """None if the file's summary is that of its final runs, else why it is pending."""
    if r is None:
        return 'missing or still being written'
    s = r.get('summary', {}).get('recall@20')
    counts = {arm: len(finals(r, arm)) for arm in ('base', 'proex')}
    progress = f"{counts['base']} base and {counts['proex']} ProEx final runs so far"
    if not s or 'chosen' not in r:
        return f'no summary yet; {progress}'
    for arm in ('base', 'proex'):
        v = list(r20(finals(r, arm)).values())
        if len(v) != s[arm]['n'] or abs(statistics.mean(v) - s[arm]['mean']) > 1e-9:
            return f'its summary is not that of its runs yet; {progress}'
    return None


def early(runs):
    """Runs whose best validation epoch is 30 or earlier."""
    return sum(v['best_epoch'] <= 30 for v in runs.values() if v.get('best_epoch') is not None)


def run_codes(r):
    return [v.get('code') for v in r.get('runs', {}).values()] or [r.get('code')]


def run_columns(r, b, p):
    """The last cells of a protocol row: best epoch <= 30 per arm, the stopping rule, the code."""
    return (f"{early(b)} / {early(p)} | {protocol_stops(list(b.values()) + list(p.values()))} | "
            f"{commits(run_codes(r))} |")


def tuning_line(r):
    tune = [(k.split('|')[1], k.split('|')[2], k.split('|')[3], v['best_val_recall20'])
            for k, v in r['runs'].items() if k.startswith('tune|')]
    if not tune:
        return 'no tuning, one configuration per arm'
    seeds = sorted({t[2] for t in tune})
    by_cfg = {}  # (arm, cfg) -> validation R@20 of each tuning seed, in file order
    for arm, cfg, _, v in tune:
        by_cfg.setdefault((arm, cfg), []).append(v)
    parts = [f"{arm} `{cfg or '(defaults)'}` {statistics.mean(v):.4f}"
             + (' (chosen)' if r['chosen'][arm] == cfg else '') for (arm, cfg), v in by_cfg.items()]
    what = 'seed' if len(seeds) == 1 else 'mean over seeds'
    return f"validation R@20 of each tuned configuration ({what} {', '.join(seeds)}): " + ', '.join(parts)


def quartile_line(r):
    b = r['summary'].get('by_activity', {})
    if not b or not b.get('base') or not b.get('proex'):
        return None
    return ('test R@20 by quartile of train interactions (Fig. 12), base → ProEx: ' + ', '.join(
        f"{g['train_items'][0]}-{g['train_items'][1]} items {f4(g['recall@20'])} → {f4(h['recall@20'])}"
        for g, h in zip(b['base'], b['proex']) if g['recall@20'] is not None))


KNOBS = {'--reg': 'L2 weight', '--lr': 'learning rate', '--cl': 'contrastive weight', '--lambda2': 'lambda2',
         '--lambda1': 'lambda1', '--envs': 'E', '--alpha': 'alpha'}
# the older discriminative grid left lambda1 out, i.e. 0 (RENAMED in bench/reproduce.py)
GRID_DEFAULTS = {'--lambda1': '0'}


def knobs(cfg):
    """{flag: value} of the KNOBS in a configuration string."""
    t = cfg.split()
    return {k: v for k, v in zip(t, t[1:]) if k in KNOBS}


def grid_text(configs, groups):
    """A grid as 'a in {..} x (b, c) in {(..), ..}' over the given groups of flags, or the list of
    its configurations where it is not such a product."""
    values = []
    for group in groups:
        seen = [tuple(knobs(c).get(k, GRID_DEFAULTS.get(k)) for k in group) for c in configs]
        values.append(list(dict.fromkeys(seen)))
    size = 1
    for v in values:
        size *= len(v)
    if not configs or size != len(set(configs)) or any(None in t for v in values for t in v):
        return ', '.join(f'`{c}`' for c in configs) or '-'
    return ' x '.join(grid_factor(g, v) for g, v in zip(groups, values))


def grid_factor(group, values):
    """'lr in {a, b}' for one flag, '(E, alpha) in {(3, 0.1), (2, 0.3)}' for several."""
    if len(group) == 1:
        return f"{KNOBS[group[0]]} in {{{', '.join(t[0] for t in values)}}}"
    tuples = ', '.join('(' + ', '.join(t) + ')' for t in values)
    return f"({', '.join(KNOBS[k] for k in group)}) in {{{tuples}}}"


def disc_grids(files):
    """The discriminative grids as each file records them (its 'grids'), files with the same grids together."""
    by_text = {}
    for m, r in files.items():
        g = r.get('grids', {})
        if m not in ('gccf', 'lightgcn', 'simgcl') or not g.get('proex'):
            continue
        base = g.get('base', [])
        text = (f"ProEx {len(g['proex'])} configurations, "
                f"{grid_text(g['proex'], [('--lambda2', '--lambda1'), ('--envs', '--alpha')])}; base "
                f"{len(base)}, {grid_text(base, [(k,) for k in knobs(base[0])] if base else [])}.")
        by_text.setdefault(text, []).append(NAMES[m])
    if not by_text:
        return []
    return ['The discriminative grids, as each file records them (its `grids`): ProEx crosses lambda2, the '
            'weight of Eq. 7 (0 = off; on, Eq. 7 as printed, `--no-infonce-reg`), and lambda1, the weight of '
            "Eq. 13's InfoNCE alignment (0 = off; on, over the distinct users and items of a batch), with the "
            'environments (E, alpha) of Eq. 8-10; the base arm tries as many configurations of its own knobs. '
            "The ProEx configuration chosen here is the ProEx default of that model's file (`--help` says so). "
            'A file run with `--keep-stale` reuses the runs of earlier code for the configurations they ran '
            '(their commits are in the last column); `same_numbers_grid_reuse.json` and '
            '`same_numbers_method.json` (section Cost) show that those configurations train to the same numbers '
            'with the current code.',
            ''] + [f"* {', '.join(names)}: {text}" for text, names in by_text.items()]


def protocol_ml100k(d):
    files = {m: load(d, f'protocol_ml100k_{m}.json') for m in MODELS}
    done = {m: r for m, r in files.items() if incomplete(r) is None}
    seeds = sorted({len(finals(r, 'base')) for r in done.values()})
    out = ['## 3. ml100k: base vs ProEx, tuned and paired', '',
           '`ml100k` is MovieLens-100K with K text views (profiles) of every user and item (different real '
           'descriptions of each, embedded), standing in for the original and new profiles. For each '
           'model, each arm (base, '
           'and base + ProEx) tries the same number of configurations (`GRIDS` in `bench/reproduce.py`) '
           'on the tuning seeds named below (not among the final seeds) and keeps the one *selected on '
           'validation R@20* (the highest mean validation Recall@20; the test split plays no part). The chosen configuration of each arm then runs '
           f"with seeds 1..n (n = {', '.join(map(str, seeds)) or '-'}), the same seeds in both arms.",
           '',
           *disc_grids(done), '',
           'For the generative models the *prior KL is matched*: both arms put the same weight on '
           'KL(q || N(0, I)), the base through `--kl-weight w` (L-DiffRec: `--vae-anneal-cap w`) and ProEx '
           'through Eq. 11, whose prior term weighs lambda1 * beta = w (`--lambda1`, `--beta`).', '',
           '| model | seeds | configs per arm | base config | base R@20 | ProEx config | ProEx R@20 | p | '
           'base N@20 | ProEx N@20 | p | best epoch <= 30, base / ProEx | stopping | code |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for m, r in done.items():
        b, p = finals(r, 'base'), finals(r, 'proex')
        g = r.get('grids', {})
        out.append(f"| {NAMES[m]} | {len(b)} | {len(g.get('base', []))} / {len(g.get('proex', []))} | "
                   f"`{r['chosen']['base'] or '(defaults)'}` | {ms(r20(b).values())} | `{r['chosen']['proex']}` | "
                   f"{ms(r20(p).values())} | {pval(paired_p(r20(b), r20(p)))} | {ms(n20(b).values())} | "
                   f"{ms(n20(p).values())} | {pval(paired_p(n20(b), n20(p)))} | {run_columns(r, b, p)}")
    out.append('')
    for m, r in files.items():
        name = f'protocol_ml100k_{m}.json'
        why = incomplete(r)
        if why:
            out += pending(name, why)
            continue
        out.append(f'* `{name}`: {cmd_line(r.get("command"))}')
        out += merged_lines(r)
        out.append(f'  * {tuning_line(r)}')
        q = quartile_line(r)
        if q:
            out.append(f'  * {q}')
    return out + single_views(files) + eq7_forms(files) + eq11_forms(files) + dmrec_table(files)


VIEW_NAMES = {'0': 'OP', '1': 'NP1', '2': 'NP2', '3': 'NP3'}


def test_r20(run):
    return run['test']['recall@20']


def val_r20(run):
    return run['best_val_recall20']


def keyed(r, prefix, value=test_r20):
    """{seed: value(run)} (test R@20 by default) of the runs whose key starts with prefix (e.g. 'view|0|')."""
    return {int(k[len(prefix):]): value(v) for k, v in r['runs'].items() if k.startswith(prefix)}


def complete_seeds(variants):
    """{name: {seed: value}} cut to the seeds every variant has (a job stopped within a seed
    leaves that seed out), or {} if there is none."""
    common = set.intersection(*(set(v) for v in variants.values())) if variants else set()
    return {k: {s: v[s] for s in sorted(common)} for k, v in variants.items()} if common else {}


def view_seeds(r):
    """Fig. 4(b)'s single-view runs, {view: {seed: test R@20}}, over complete seeds."""
    ks = [k for k in r['summary'].get('views_recall@20', {}) if k != 'all']
    return complete_seeds({k: keyed(r, f'view|{k}|') for k in ks})


def eq7_is_chosen(r, name):
    """Whether Eq. 7's form `name` is the chosen ProEx configuration itself (then its runs are
    ProEx's final runs); files written before reproduce.py stored it compare the flag strings."""
    f = r['summary']['eq7'][name]
    return f.get('is_chosen', sorted(f['config'].split()) == sorted(r['chosen']['proex'].split()))


def proex_on(r, seeds, value=test_r20):
    """{seed: value(run)} (test R@20 by default) of ProEx's final runs of the given seeds."""
    return {s: value(v) for s, v in finals(r, 'proex').items() if s in seeds}


def eq7_seeds(r, value=test_r20):
    """The Eq. 7 forms, {form: {seed: value(run)}} (test R@20 by default), over complete seeds; the
    form equal to the chosen ProEx configuration is its final runs (bench/reproduce.py does not rerun it)."""
    forms = r['summary'].get('eq7', {})
    runs = {name: keyed(r, f'eq7|{name}|', value) for name in forms if not eq7_is_chosen(r, name)}
    runs = complete_seeds(runs)
    return {name: runs.get(name) or proex_on(r, next(iter(runs.values())), value) for name in forms} \
        if runs else {}


def vs_proex(r, runs):
    """A variant's {seed: test R@20} against ProEx's final runs of the same seeds:
    (those ProEx values, mean difference, paired p)."""
    both = proex_on(r, runs)
    return both, statistics.mean(runs.values()) - statistics.mean(both.values()), paired_p(both, runs)


def single_views(files):
    """Fig. 4(b): ProEx with one profile view against all of them, the same seeds."""
    rows = []
    for m, r in files.items():
        for k, one in (view_seeds(r) if not incomplete(r) else {}).items():
            both, diff, p = vs_proex(r, one)
            rows.append(f"| {NAMES[m]} | {k} ({VIEW_NAMES.get(k, k)}) | {msn(one.values())} | {ms(both.values())} | "
                        f"{diff:+.4f} | {pval(p)} |")
    if not rows:
        return []
    return ['', '### Fig. 4(b): ProEx with one profile view', '',
            "Each model's chosen ProEx configuration (above) with one view (`--profiles k`: 0 the original "
            'profile OP, k >= 1 the k-th new one NPk) against all four views, the same seeds; test R@20, '
            'p of the paired t-test over seeds (`--views` of `bench/reproduce.py`, in the same files).', '',
            '| model | view | one view | all views | difference | p |', '|---|---|---|---|---|---|'] + rows


def eq7_forms(files):
    """Eq. 7 as printed, with the InfoNCE sign, and the released uniformity loss, each paired with
    the chosen ProEx configuration."""
    rows, names = [], []
    for m, r in files.items():
        forms = eq7_seeds(r) if not incomplete(r) else {}
        if not forms:
            continue
        names, val = list(forms), eq7_seeds(r, val_r20)
        seeds = next(iter(forms.values()))
        chosen_val = proex_on(r, seeds, val_r20)
        cells = []
        for name, runs in forms.items():
            both, diff, p = vs_proex(r, runs)
            if eq7_is_chosen(r, name):
                cells.append('= chosen')
                continue
            cells.append(f"{msn(runs.values())}, {diff:+.4f} (p {pval(p)}); val "
                         f"{statistics.mean(val[name].values()):.4f} (p {pval(paired_p(chosen_val, val[name]))})")
        rows.append(f"| {NAMES[m]} | `{r['chosen']['proex']}` | {msn(both.values())}; val "
                    f"{statistics.mean(chosen_val.values()):.4f} | " + ' | '.join(cells) + ' |')
    if not rows:
        return []
    return ['', '### Eq. 7 in three forms', '',
            "Each model's chosen ProEx configuration with L_reg as printed (`--lambda2 l`, with "
            '`--no-infonce-reg` where that is not the default: exp(+1/tau)), in the InfoNCE form '
            '(`--infonce-reg`: exp(-1/tau), the positive being a profile with itself) and as '
            "the released code's uniformity loss at its weight (`--uniformity-reg --lambda2 0.4`); l is the "
            'chosen lambda2, or 0.01 when the chosen configuration has Eq. 7 off. Test R@20, '
            'then the difference to the chosen configuration over the same seeds and its paired p, '
            'and the mean validation R@20 of the same runs ("val", what a choice of form may use) with '
            'the paired p of its difference to the chosen configuration\'s '
            '(`--eq7` of `bench/reproduce.py`).', '',
            '| model | chosen ProEx config | chosen | ' + ' | '.join(names) + ' |',
            '|---|---|---|' + '---|' * len(names)] + rows


def fused_seeds(r, value=test_r20):
    """(ProEx's final runs, the --align-fused runs), each {seed: value(run)}, over the seeds both have."""
    fused = keyed(r, 'fused|', value)
    both = proex_on(r, fused, value)
    return both, {s: v for s, v in fused.items() if s in both}


def test_n20(run):
    return run['test']['ndcg@20']


def eq11_forms(files):
    """Eq. 11 as printed against Eq. 11 on the fused Gaussian (--align-fused), the same seeds."""
    rows = []
    for m, r in files.items():
        if incomplete(r) or not fused_seeds(r)[1]:
            continue
        cells = []
        for value in (val_r20, test_r20, test_n20):
            proex, fused = fused_seeds(r, value)
            cells.append(f"{ms(proex.values())} | {ms(fused.values())} | {pval(paired_p(proex, fused))}")
        rows.append(f"| {NAMES[m]} | {len(fused_seeds(r)[1])} | `{r['chosen']['proex']}` | " + ' | '.join(cells) + ' |')
    if not rows:
        return []
    return ['', '### Eq. 11 in two forms', '',
            "Each generative model's chosen ProEx configuration with Eq. 11 as printed (the default: the "
            "base posterior of Eq. 2 against the environment's Gaussian) and with `--align-fused` (Eq. 11 on "
            "the fused Gaussian of Eq. 12, as the authors' DMRec code does; the environment's mean cancels "
            'from it, so it no longer moves the profile means). Validation R@20 (best epoch), test R@20 and '
            'N@20, mean ± std over the seeds both forms ran; p of the paired t-test over those seeds '
            '(`--fused-seeds` of `bench/reproduce.py`, in the same files).', '',
            '| model | seeds | chosen ProEx config | val R@20, as printed | `--align-fused` | p | '
            'R@20, as printed | `--align-fused` | p | N@20, as printed | `--align-fused` | p |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|'] + rows


def dmrec_seeds(r):
    """DMRec-M's runs, {view: {seed: test R@20}}, over the seeds every view has."""
    views = sorted({k.split('|')[1] for k in r['runs'] if k.startswith('dmrec|')}, key=int)
    return complete_seeds({k: keyed(r, f'dmrec|{k}|') for k in views})


def dmrec_table(files):
    """Table 3: DMRec-M's recipe with each profile, and its mean over the profiles, against ProEx."""
    rows = []
    for m, r in files.items():
        views = dmrec_seeds(r) if not incomplete(r) else {}
        if not views:
            continue
        seeds = next(iter(views.values()))
        avg = {s: statistics.mean(v[s] for v in views.values()) for s in seeds}  # DMRec_avg, per seed
        named = [(f'{k} ({VIEW_NAMES.get(k, k)})', v) for k, v in views.items()] + [('DMRec_avg', avg)]
        for name, one in named:
            both, diff, p = vs_proex(r, one)
            rows.append(f"| {NAMES[m]} | `{r['chosen']['proex']}` | {name} | {msn(one.values())} | "
                        f"{ms(both.values())} | {diff:+.4f} | {pval(p)} |")
    if not rows:
        return []
    return ['', '### Table 3: DMRec-M with each profile, and ProEx', '',
            "DMRec with one profile (the paper's DMRec-M rows) as a recipe inside this code: the chosen ProEx "
            'configuration with `--profiles k --no-var --align-fused`, i.e. one profile (0 the original profile '
            'OP, k >= 1 the k-th new one NPk), so one environment, no variance term, and Eq. 11 on the fused '
            'Gaussian. Each against ProEx with all four views over the same seeds; DMRec_avg is, per seed, the '
            'mean over the profiles. Test R@20, p of the paired t-test over seeds (`--dmrec` of '
            '`bench/reproduce.py`, in the same files).', '',
            '| model | chosen ProEx config | profile | DMRec-M | ProEx, all views | difference | p |',
            '|---|---|---|---|---|---|---|'] + rows


# ---------------------------------------------------------------- synthetic check

def synthetic(d):
    out = ['## 4. Synthetic check', '',
           '`synthetic` is generated from the seed: users and items with planted latent factors and '
           'K = 4 profile views, views 0-2 informative (the planted factors plus noise) and view 3 '
           'misleading (another entity\'s profile). Where the profiles carry the planted signal, ProEx '
           'should beat the base, and ProEx on all views should beat ProEx fed view 3 alone '
           '(`--profiles 3`). No tuning: the model files\' defaults at the commit named in the last column, '
           'the prior KL matched for the generative models. Test R@20, mean ± std over seeds 1..n; p of paired t-tests over the '
           'seeds both runs share; "yes" = higher with p < .05, "n.s." = higher, p >= .05.', '',
           '| model | base config | ProEx config | base | ProEx | p | ProEx, view 3 alone | p | '
           'ProEx > base | ProEx > view 3 | best epoch <= 30, base / ProEx | stopping | code |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    files = {m: load(d, f'protocol_synthetic_{m}.json') for m in MODELS}
    for m, r in files.items():
        if incomplete(r):
            continue
        b, p = finals(r, 'base'), finals(r, 'proex')
        view = {int(k.split('|')[-1]): v['test']['recall@20'] for k, v in r['runs'].items()
                if k.startswith('view|3|')}
        out.append(f"| {NAMES[m]} | `{r['chosen']['base'] or '(defaults)'}` | `{r['chosen']['proex']}` | "
                   f"{msn(r20(b).values())} | {msn(r20(p).values())} | {pval(paired_p(r20(b), r20(p)))} | "
                   f"{msn(view.values())} | {pval(paired_p(view, r20(p)))} | {above(r20(b), r20(p))} | "
                   f"{above(view, r20(p))} | {run_columns(r, b, p)}")
    out.append('')
    for m, r in files.items():
        name = f'protocol_synthetic_{m}.json'
        why = incomplete(r)
        out += pending(name, why) if why else [f'* `{name}`: {cmd_line(r.get("command"))}'] + merged_lines(r)
    return out + eq11_forms(files) + dmrec_table(files)


# ---------------------------------------------------------------- book

def train_minutes(runs):
    """Minutes of training and validation per run, summed over its history (data loading and the
    test aside)."""
    return ', '.join(f"{sum((x.get('train_s') or 0) + (x.get('eval_s') or 0) for x in r.get('history') or []) / 60:.0f}"
                     for r in runs)


# why the book reruns and first_runs.json carry a '+' commit (the code itself was unmodified)
DIRTY_NOTE = ('"+": tracked files of the checkout differed from the commit; here the book result files '
              'written into the same checkout by the runs before (code that records this now leaves '
              '`bench/results/` aside).')


def book_rules(files):
    """{(validation every k epochs, epochs from the best epoch to the stop): [models]} over
    the runs of {model: book file} that early stopping ended, as configuration and history record it."""
    rules = {}
    for m, r in files.items():
        for run in r.get('runs', []):
            h, cfg = run.get('history') or [], run.get('config', {})
            if h and run.get('best_epoch') is not None and h[-1]['epoch'] < cfg.get('epochs', 0):
                rules.setdefault((cfg.get('eval_every'), h[-1]['epoch'] - run['best_epoch']), []).append(m)
    return rules


def say_rule(k):
    return (f"validated {'every epoch' if k[0] == 1 else f'every {k[0]} epochs'} and stopped "
            f'{k[1]} epochs after the best epoch')


def book_rule_text(files):
    """One sentence on the stopping rule the book runs used, set against today's (section 1)."""
    rules = book_rules(files)
    if not rules:
        return 'The "stopping" column gives the rule each run used (section 1).'
    if all(every == EVAL_EVERY[m] and after == 20 * every for (every, after), ms in rules.items() for m in ms):
        return ('These runs use the current stopping rule (section 1): the "stopping" column gives '
                'the validation interval and the epochs from the best epoch to the stop; "min" is '
                'the minutes of training and validation on one CPU thread (data loading aside; two runs '
                'at a time on a 2-core machine).')
    return ('These runs predate the current stopping rule. As their recorded `eval_every` and '
            f'histories show (the "stopping" column), they {rules_said(rules)}.')


def rules_said(rules):
    common = max(rules, key=lambda k: len(rules[k]))
    return say_rule(common) + ''.join(f"; {', '.join(NAMES[m] for m in v)} {say_rule(k)}"
                                      for k, v in rules.items() if k != common)


def book_earlier(d, files):
    """Earlier book files (bench/results/book_earlier/) against the current ones, where both exist."""
    old = {m: r for m in files if (r := load(d / 'book_earlier', f'{m}_book.json')) and 'test_mean' in r}
    if not old or not book_rules(old):
        return []
    out = ['', '### The book rows before the rerun (`book_earlier/`)', '',
           'The files in `book_earlier/` are the earlier book runs (same seed and defaults, earlier code; '
           f'they record no commit or command line). They {rules_said(book_rules(old))}.', '',
           '| model | R@20 earlier | R@20 now | difference | N@20 earlier | N@20 now | best epoch earlier | '
           'best epoch now |', '|---|---|---|---|---|---|---|---|']
    for m, r in old.items():
        t, n = r['test_mean'], files[m]['test_mean']
        out.append(f"| {NAMES[m]} | {f4(t['recall@20'])} | {f4(n['recall@20'])} | "
                   f"{n['recall@20'] - t['recall@20']:+.4f} | {f4(t['ndcg@20'])} | {f4(n['ndcg@20'])} | "
                   f"{', '.join(map(str, r['best_epochs']))} | {', '.join(map(str, files[m]['best_epochs']))} |")
    return out


def book(d):
    out = ['## 2. Amazon-Book: base models against the paper', '',
           '`book` is Amazon-Book as split by RLMRec (Ren et al., WWW\'24: the framework and data '
           'release whose splits `book`, `yelp` and `steam` are, and whose trainer and metrics the '
           'paper\'s numbers use). "paper" is the base row of the paper\'s Table 1 (a mean over 10 '
           'seeds). Book has no profile files here, so ProEx on book is not reproduced.', '',
           '{rule}', '',
           '| model | command | seed | R@10 | R@20 | N@10 | N@20 | paper R@20 | paper N@20 | best epoch | stopping | min |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
    files, missing = {}, []
    for m in MODELS:
        r = load(d, f'{m}_book.json')
        if r is None or 'test_mean' not in r:
            missing.append(f'{m}_book.json')
            continue
        files[m] = r
        t, p = r['test_mean'], r['paper']
        cmd = ['python', 'bench/book.py', '--model', m]
        if str(r.get('seeds', '2023')) != '2023':
            cmd += ['--seeds', str(r['seeds'])]
        if r.get('extra'):
            cmd += ['--extra', r['extra']]
        out.append(f"| {NAMES[m]} | `{shlex.join(cmd)}` | {r['seeds']} | {f4(t['recall@10'])} | "
                   f"{f4(t['recall@20'])} | {f4(t['ndcg@10'])} | {f4(t['ndcg@20'])} | {f4(p['recall@20'])} | "
                   f"{f4(p['ndcg@20'])} | {', '.join(map(str, r['best_epochs']))} | {history_stops(r['runs'])} | "
                   f"{train_minutes(r['runs'])} |")
    out.append('')
    for name in missing:
        out += pending(name, 'missing or still being written')
    for m, r in files.items():
        if r.get('git'):
            out.append(f"* `{m}_book.json`: {cmd_line(r.get('command'))}; code {commit(r['git'])}.")
    if any((r.get('git') or {}).get('dirty') for r in files.values()):
        out += ['', DIRTY_NOTE]
    out += book_earlier(d, files)
    text = book_rule_text(files)
    return [line.replace('{rule}', text) for line in out]


# ---------------------------------------------------------------- ablations

def ablations(d):
    out = ['## 5. Fig. 6 ablations', '',
           'Each switch is added to ProEx\'s chosen configuration on ml100k and paired with full ProEx '
           'over the same seeds. An *environment* is one random convex (Dirichlet) mix of the K profiles '
           '(Eq. 8-10). `--no-var` drops Var_e, the variance of the loss across environments in Eq. 14 '
           '(its weight lambda3 is `inv_weight` in the released code); `--no-reg` drops L_reg of Eq. 7 '
           '(weight lambda2); `--no-align` drops the alignment of Eq. 11/13 (weight lambda1); '
           '`--no-mixing` uses one environment, the mean of the K profiles. "R@20 - ProEx" is the '
           'difference to full ProEx, p its paired t-test.']
    files = sorted(d.glob('ablation_*.json'))
    if not files:
        out += ['', '* no `ablation_*.json` yet (pending).']
    for f in files:
        r = load(d, f.name)
        s = (r or {}).get('summary', {})
        why = incomplete(r) or (None if 'ablations' in s else 'no ablation summary yet')
        if why:
            out += [''] + pending(f.name, why)
            continue
        n = s['recall@20']['base']['n']
        fmt = lambda v: f"{v['mean']:.4f} ± {v['std']:.4f}"
        b, p = finals(r, 'base'), finals(r, 'proex')
        abl = [v for k, v in r['runs'].items() if k.startswith('ablation|')]
        out += ['', f"### {NAMES.get(r['model'], r['model'])} on {r['dataset']} (`{f.name}`)", '',
                f"ProEx `{r['chosen']['proex']}`, seeds 1..{n}; stopping {protocol_stops(list(b.values()) + list(p.values()) + abl)}; "
                f"code {commits(run_codes(r))}; {cmd_line(r.get('command'))}", '',
                '| variant | R@20 | N@20 | R@20 - ProEx | p |', '|---|---|---|---|---|',
                f"| base `{r['chosen']['base']}` | {fmt(s['recall@20']['base'])} | {fmt(s['ndcg@20']['base'])} | "
                f"{-s['recall@20']['diff']:+.4f} | {pval(s['recall@20']['p_paired_t'])} |",
                f"| ProEx | {fmt(s['recall@20']['proex'])} | {fmt(s['ndcg@20']['proex'])} | | |"]
        for flag, a in s['ablations'].items():
            if isinstance(a, str):
                out.append(f'| `{flag}` | {a} | | | |')
                continue
            out.append(f"| `{flag}` | {fmt(a['recall@20']['ablation'])} | {fmt(a['ndcg@20']['ablation'])} | "
                       f"{a['recall@20']['diff']:+.4f} | {pval(a['recall@20']['p_paired_t'])} |")
    return out


# ---------------------------------------------------------------- --profile-dim (bench/compare.py)

def compare_command(r, name):
    if r.get('command'):
        return cmd_line(r['command'])
    models = sorted({k.split('/')[0] for k in r['results']})
    variants = ','.join(f'{k}={v}' for k, v in r['variants'].items())
    cmd = ['python', 'bench/compare.py', '--dataset', r['dataset'], '--models', ','.join(models),
           '--variants', variants, '--seeds', ','.join(map(str, r['seeds']))]
    if r.get('extra'):
        cmd += ['--extra', r['extra']]
    return f"`{shlex.join(cmd + ['--out', f'bench/results/{name}'])}`"


def profile_dim(d):
    name = 'ml100k_lightgcn_profile_dim.json'
    out = ['## 6. Profile width: `--profile-dim`', '',
           '`--profile-dim N` (not in the paper, for CPUs) projects the users\' and the items\' profile views together (one PCA, one basis for both sides) once, at '
           'load, onto their top N principal directions, so the mapping MLP of Eq. 6 reads N numbers per '
           'view instead of the embedding width. Test on ml100k, mean ± std over the seeds shown; the '
           'full-width row is the same seeds of the LightGCN ProEx arm in section 3. Before the two sides '
           'shared one basis, a PCA per side reached R@20 .290 ± .016 on ml100k (earlier ProEx weights and '
           'stopping rule, seeds 1-3).', '']
    r = load(d, name)
    if r is None or 'results' not in r:
        return out + pending(name, 'missing or still being written')
    out += [f'{compare_command(r, name)}', '',
            '| model / variant | flags | seeds | R@20 | N@20 | best val R@20 | best epochs | stopping | code |',
            '|---|---|---|---|---|---|---|---|---|']
    for k, v in r['results'].items():
        runs = v['runs']
        out.append(f"| {k} | `{v['flags']}` | {', '.join(str(x['config']['seed']) for x in runs)} | "
                   f"{ms(x['test']['recall@20'] for x in runs)} | {ms(x['test']['ndcg@20'] for x in runs)} | "
                   f"{statistics.mean(x['best_val_recall20'] for x in runs):.4f} | "
                   f"{', '.join(str(x['best_epoch']) for x in runs)} | {history_stops(runs)} | "
                   f"{commits(v.get('git') or x.get('git') for x in runs)} |")
        model, flags = k.split('/')[0], re.sub(r'\s*--profile-dim \d+', '', v['flags']).strip()
        full = load(d, f'protocol_{r["dataset"]}_{model}.json')
        if incomplete(full) is None and full['chosen']['proex'] == flags:
            seeds = [x['config']['seed'] for x in runs]
            p = finals(full, 'proex')
            same = [p[s] for s in seeds if s in p]
            if same:
                out.append(f"| {model}, full width (`protocol_{r['dataset']}_{model}.json`) | `{flags}` | "
                           f"{', '.join(str(s) for s in seeds if s in p)} | {ms(x['test']['recall@20'] for x in same)} | "
                           f"{ms(x['test']['ndcg@20'] for x in same)} | "
                           f"{statistics.mean(x['best_val_recall20'] for x in same):.4f} | "
                           f"{', '.join(str(x['best_epoch']) for x in same)} | {protocol_stops(same)} | "
                           f"{commits(x.get('code') for x in same)} |")
    return out


# ---------------------------------------------------------------- L-DiffRec plateau

PLATEAU = {'base': 'the L-DiffRec base model', 'proex': 'L-DiffRec + ProEx',
           'beta1': 'Eq. 11 with the prior KL only (beta = 1)', 'lambda1-0': 'without Eq. 11 (lambda1 = 0)',
           'no-var-reg': 'without Var_e and L_reg (lambda3 = lambda2 = 0)',
           'no-mixing': 'one environment, the mean of the K profiles',
           'var/100': 'the variances of the profile Gaussians of Eq. 6 scaled',
           'gauss/10': 'the means and variances of the profile Gaussians of Eq. 6 scaled'}


def ldiffrec_plateau(d):
    name = 'ldiffrec_plateau.json'
    out = ['## 8. L-DiffRec + ProEx: the plateau diagnostic', '',
           'Some L-DiffRec + ProEx runs stay at a low validation R@20 while the base climbs (a run "on a '
           'plateau"; sections 3-4 count them per commit). To find the cause, `bench/ldiffrec_plateau.py` '
           'trains short runs of variants, the same seed each, early stopping off, and keeps each '
           'validation curve; a scale '
           '(mu, sigma^2) multiplies the means and variances that Eq. 6\'s mapping returns (a diagnostic, '
           'not a method).', '']
    r = load(d, name)
    runs = (r or {}).get('runs')
    if not runs or 'base' not in runs:
        return out + pending(name, 'missing or still being written')
    base = runs['base']
    argv = base['argv']
    opt = lambda a, k: a[a.index(k) + 1] if k in a else None
    epochs = [e for e, _ in base['val_curve']]
    picks = [epochs[len(epochs) * i // 4 - 1] for i in range(1, 5)] if len(epochs) >= 4 else epochs
    others = [v for k, v in runs.items() if k != 'base']
    lo = min(v['best_val_recall20'] for v in others) if others else None
    hi = max(v['best_val_recall20'] for v in others) if others else None
    cmds = sorted({clean_command(v.get('command')) for v in runs.values() if v.get('command')})
    out += [f"Dataset {opt(argv, '--dataset')}, seed {opt(argv, '--seed')}, {opt(argv, '--epochs')} epochs, "
            f"validation every {epochs[1] - epochs[0] if len(epochs) > 1 else '-'} epochs. Best validation "
            f"R@20: base {base['best_val_recall20']:.4f}; the ProEx variants {f4(lo)} to {f4(hi)}.", '',
            'Commands: ' + '; '.join(f'`{c}`' for c in cmds) + ' (`--variants` reruns a subset).', '',
            '| variant | what it changes | flags | scale (mu, sigma^2) | '
            + ' | '.join(f'val R@20 @ {e}' for e in picks) + ' | best val R@20 | code |',
            '|---|---|---|---|' + '---|' * len(picks) + '---|---|']
    for k, v in runs.items():
        flags = ' '.join(v['argv'][len(argv):]) if v['argv'][:len(argv)] == argv else ' '.join(v['argv'])
        curve = dict((e, x) for e, x in v['val_curve'])
        sc = v.get('scales_mu_var', [1.0, 1.0])
        out.append(f"| {k} | {PLATEAU.get(k, '')} | `{flags or '(none)'}` | {sc[0]:g}, {sc[1]:g} | "
                   + ' | '.join(f4(curve.get(e)) for e in picks)
                   + f" | {v['best_val_recall20']:.4f} | {commit(v.get('git'))} |")
    return out


# ---------------------------------------------------------------- profiles pipeline

FAULTS = {'429': 'HTTP 429', '500': 'HTTP 500', 'reset': 'connection reset mid-body',
          'malformed': 'cut JSON body', 'not_json': 'reply not JSON', 'length': 'reply cut by max_tokens',
          'no_usage': 'no usage field', 'wrong_count': 'an embedding missing'}


def kb(b):
    return f'{b / 1e3:.1f} KB'


def mb(b):
    return f'{b / 1e6:,.0f} MB' if b < 1e9 else f'{b / 1e9:.2f} GB'


def profiles(d):
    out = ['## 9. Profiles pipeline (`profiles.py`)', '',
           '`profiles.py` asks a chat model for the new profiles (NPs) of every user and item through the '
           'four-step chain F1-F4, starting from the original profile (OP), then embeds the OP and the NPs '
           '(Eq. 5); NP#k is the k-th new profile. It journals every finished entity (texts in '
           '`*_prf_journal.jsonl`, vectors in the store `*_emb_store.f32`), so a rerun resumes. An entity '
           'whose chat step fails for good gets copies of its OP as new profiles (a *fallback*).']
    r = load(d, 'profiles_ml100k.json')
    out += ['', '### All of ml100k against a faulty loopback server (`profiles_ml100k.json`)', '']
    if r is None or 'first_run' not in r:
        out += pending('profiles_ml100k.json', 'missing or still being written')
    else:
        f, rt, lg = r['first_run'], r.get('retry_fallbacks_run'), r['lightgcn']
        n = {p: r['reports'][p]['n'] for p in ('usr', 'itm')}
        faults = f['faults_served']
        res = lg['result'] if isinstance(lg.get('result'), dict) else {}
        out += [f"{cmd_line(r.get('command'))}; code {commit(r.get('git') or {'commit': r.get('commit')})}. "
                f"The server (`tests/openai_server.py`) returns deterministic texts and random unit vectors of "
                f"width {r['dim']} and answers a share {r['fault_rate']:g} of all requests with a fault; "
                f"the trained model shows that the files load and train, not a result.", '',
                '| measure | value |', '|---|---|',
                f"| entities (users + items) | {r['entities']:,} ({n['usr']:,} + {n['itm']:,}) |",
                f"| first run | {f['seconds']} s, {f['requests']:,} requests, {sum(faults.values()):,} faults, "
                f"exit status {f['exit_status']}" + (' (3: some entities fell back)' if f['exit_status'] == 3 else '') + ' |',
                '| faults by kind | ' + ', '.join(f"{FAULTS.get(k, k)} {v}" for k, v in sorted(faults.items())) + ' |',
                f"| entities that fell back | {f['fallbacks']} |"]
        if rt:
            out.append(f"| `--retry-fallbacks` run | {rt['seconds']} s, {rt['requests']} requests, "
                       f"{rt['fallbacks']} fallbacks left |")
        fb = r['file_bytes']
        out += [f"| peak memory | {f['peak_memory_mb']} MB |",
                f"| journal per entity (users / items) | {kb(r['journal_bytes_per_entity']['usr'])} / "
                f"{kb(r['journal_bytes_per_entity']['itm'])} |",
                f"| vector store per entity | {kb(fb['usr_emb_store.f32'] / n['usr'])} |",
                f"| LightGCN + ProEx on the files | {lg['epochs']} epochs, {lg['seconds']} s, test R@20 "
                f"{f4(res.get('test', {}).get('recall@20'))} |"]
    r = load(d, 'profiles_scale.json')
    out += ['', '### At scale (`profiles_scale.json`)', '']
    if r is None or 'file_bytes' not in r:
        out += pending('profiles_scale.json', 'missing or still being written')
    else:
        fb, n = r['file_bytes'], r['n']
        emb = [v for k, v in fb.items() if k.startswith('usr_emb_np')]
        nps = [v for k, v in fb.items() if re.fullmatch(r'usr_prf_\d+\.json', k)]
        peaks = ', '.join(f'{v} MB at {int(k):,}' for k, v in r['running_pass_peak_mb'].items())
        out += [f"{cmd_line(r.get('command'))}; code {commit(r.get('git') or {'commit': r.get('commit')})}. "
                f"The finishing pass (no request: it streams the journal and writes the output files) runs "
                f"on a finished journal built for {n:,} entities with {r['op_chars']:,}-character profiles; "
                f"the running pass profiles the first items of ml100k against the loopback server.", '',
                f"| at {n:,} entities, K = {r['K']}, d = {r['dim']} | |", '|---|---|',
                f"| journal (texts) | {mb(fb['usr_prf_journal.jsonl'])} ({kb(r['journal_bytes_per_entity'])} per entity) |",
                f"| vector store | {mb(fb['usr_emb_store.f32'])} (K x d x 4 bytes per entity) |",
                f"| output files | {len(emb)} x {mb(max(emb))} embeddings, {len(nps)} x {mb(max(nps))} NP texts |",
                f"| finishing pass | {r['finish_seconds']} s, peak memory {r['peak_memory_mb']} MB |",
                f"| running pass, peak memory by items profiled | {peaks} |"]
    r = load(d, 'profiles_local.json')
    out += ['', '### A local model, no API key (`profiles_local.json`)', '']
    if r is None or 'reports' not in r:
        out += pending('profiles_local.json', 'missing or still being written')
    else:
        rep, lg = r['reports'], r['lightgcn']
        res = lg['result'] if isinstance(lg.get('result'), dict) else {}
        holders = sum('placeholder' in x for x in r['fallbacks'])
        out += [f"{cmd_line(r.get('command'))}; code {commit(r.get('git') or {'commit': r.get('commit')})}. "
                f"The {r['users']} users and {r['items']} items of ml100k with the most interactions among "
                f"them, OPs cut to {r['op_chars']} characters, profiled by `{r['model']}` served by "
                f"llama-cpp-python on {r['machine']}. A model this small writes poor profiles and often cannot "
                f"follow the chain; the point is the pipeline.", '',
                '| measure | value |', '|---|---|',
                f"| time | {r['seconds']:,} s, {r['seconds_per_entity']} s per entity |",
                f"| chat calls (of them re-asks) | {r['chat_calls']} ({r['reasks']}) |",
                f"| fallbacks, users / items | {rep['usr']['fallbacks']} / {rep['itm']['fallbacks']} "
                f"({holders} where the last reply copied a placeholder of the shown format) |",
                f"| mean cosine OP vs NP, users / items without fallback | {rep['usr']['op_vs_np']:.4f} "
                f"({rep['usr']['n']}) / {rep['itm']['op_vs_np']:.4f} ({rep['itm']['n']}) |",
                f"| LightGCN + ProEx on the files | {lg['epochs']} epochs, test R@20 "
                f"{f4(res.get('test', {}).get('recall@20'))} (with {r['items']} items the top 20 holds every item, "
                f"so R@20 is 1 by construction) |"]
    return out


# ---------------------------------------------------------------- cost

def cost(d):
    out = ['## 10. Cost', '']
    r = load(d, 'timing.json')
    if r is None or 'book' not in r:
        out += pending('timing.json', 'missing or still being written')
    else:
        out += [f"Measured alone on one machine ({r['machine']}, torch {r['torch']}): "
                f"{cmd_line(r.get('command'))}. Seconds per training epoch and per validation pass "
                f"(the median over the timed epochs, the first one left out).", '',
                '| model | s / epoch (book) | s / validation (book) |', '|---|---|---|']
        for m, t in r['book'].items():
            out.append(f"| {NAMES.get(m, m)} | {t['sec_per_epoch']:.2f} | {t['sec_per_eval']:.2f} |")
        if 'speedup_vs_released_lightgcn' in r:
            s, rl = r['speedup_vs_released_lightgcn'], r['rlmrec_seconds']
            out += ['', f"LightGCN against RLMRec's released framework timed on the same CPU ({rl['train_epoch']} s "
                        f"/ epoch, {rl['validation']} s / validation): {s['train_epoch']:.1f}x faster per epoch, "
                        f"{s['validation']:.1f}x per validation."]
        for ds, c in r.get('proex_cost', {}).items():
            out += ['', f'ProEx cost on `{ds}`: seconds per training epoch, base and `--proex` (defaults):', '',
                    '| model | base | ProEx | ratio |', '|---|---|---|---|']
            for m, x in c.items():
                out.append(f"| {NAMES.get(m, m)} | {x['base']['sec_per_epoch']:.2f} | "
                           f"{x['proex']['sec_per_epoch']:.2f} | {x['ratio']:.2f}x |")
        out += ['', '`synthetic-book` is `synthetic` at Amazon-Book\'s size (64-d views), '
                    '`synthetic-book-1536` the same with 1536-d views (the width of text-embedding-ada-002).']
    out += align_cost(d) + check_cost(d)
    r = load(d, 'mlp_floor.json')
    out += ['', '### The floor set by the mapping MLP (`mlp_floor.json`)', '']
    if r is None or 'by_width' not in r:
        out += pending('mlp_floor.json', 'missing or still being written')
    else:
        out += [f"{cmd_line(r.get('command'))}; code {commit(r.get('git'))}; {r['dataset']}, {r['threads']} "
                f"threads. One epoch of LightGCN, of the Eq. 6 mapping MLP alone (forward, backward and Adam "
                f"step over each batch's distinct users and items, which ProEx needs every step), and of "
                f"LightGCN + ProEx; 1 + MLP / base is a floor for the ProEx / base ratio on this device.", '',
                '| profile width | base s / epoch | MLP alone s | ProEx s / epoch | ProEx / base | floor | '
                'MLP share of ProEx |', '|---|---|---|---|---|---|---|']
        for w, x in r['by_width'].items():
            out.append(f"| {w} | {x['base_s']:.3f} | {x['mlp_s']:.3f} | {x['proex_s']:.3f} | {x['ratio']:.1f}x | "
                       f"{x['floor_ratio']:.1f}x | {x['mlp_share_of_proex']:.0%} |")
    for name in sorted(f.name for f in Path(d).glob('same_numbers*.json')):
        out += same_numbers(load(d, name), name)
    return out


def align_cost(d):
    """Seconds per epoch of LightGCN + ProEx with Eq. 13's InfoNCE alignment off and on."""
    r = load(d, 'align_cost.json')
    out = ['', "### Cost of Eq. 13's alignment (`align_cost.json`)", '']
    if r is None or 'ratio' not in r:
        return out + pending('align_cost.json', 'missing or still being written')
    sec = r['sec_per_epoch_median']
    return out + [f"{cmd_line(r.get('command'))}; code {commit(r.get('git'))}. {NAMES.get(r.get('model'), 'LightGCN')} "
                  f"+ ProEx on {r.get('dataset', 'ml100k')}, seconds per training epoch with the InfoNCE alignment "
                  f"of Eq. 13 off (lambda1 = 0) and on (lambda1 = 0.1): the median over {r['rounds']} rounds of "
                  f"{r['epochs']} epochs each, the two settings interleaved in one process with one thread, so "
                  f"both ran under the same load.", '',
                  '| lambda1 = 0 | lambda1 = 0.1 | ratio |', '|---|---|---|',
                  f"| {sec['0']:.2f} s | {sec['0.1']:.2f} s | {r['ratio']:.2f}x |"]


def check_cost(d):
    """Seconds of proex_core's entry-point checks per batch against the whole objective."""
    r = load(d, 'check_cost.json')
    out = ['', "### Cost of the input checks (`check_cost.json`)", '']
    if r is None or 'cases' not in r:
        return out + pending('check_cost.json', 'missing or still being written')
    return out + [f"{cmd_line(r.get('command'))}; code {commit(r.get('git'))}. The shape checks at the "
                  "entry points of `discriminative_objective` and `generative_objective` (`check_shape`, "
                  "`as_ids`), timed alone, against the objective's forward and backward on one batch "
                  f"(median of {r['repeats']} calls, one thread).", '',
                  '| batch | objective | checks | share |', '|---|---|---|---|'] + [
        f"| {name} | {c['objective_s'] * 1e3:.1f} ms | {c['checks_s'] * 1e6:.1f} µs | {100 * c['share']:.3f}% |"
        for name, c in r['cases'].items()]


def same_numbers(r, name):
    out = ['', f'### Same numbers across a code change (`{name}`)', '']
    if r is None or 'runs' not in r:
        return out + pending(name, 'missing or still being written')
    c, after = r['commits'], r.get('after_flags')
    out += [f"{cmd_line(r.get('command'))} (before {c['before'][:7]}, after {c['after'][:7]}"
            + (f", the after runs with `{after}`" if after else '') + f"): seeded runs on {r['dataset']}, "
            f"{r['epochs']} epochs, seed {r['seed']}, `--threads 1` (seeded single-thread runs are "
            f"bit-identical, so a difference is a change in what the code computes); identical = same "
            f"test metrics, best epoch, per-epoch losses and validation R@20.", '',
            '| run | identical | test R@20 before | after |', '|---|---|---|---|']
    for k, v in r['runs'].items():
        t = v['test_recall@20']
        out.append(f"| `{k}` | {'yes' if v['identical'] else 'no'} | {t['before']:.6f} | {t['after']:.6f} |")
    return out


# ---------------------------------------------------------------- first runs (bench/first_runs.py)

def secs(s):
    """Seconds as a reader takes them in: '4.2 s', '31 s', '2.1 min'."""
    return f'{s:.1f} s' if s < 10 else f'{s:.0f} s' if s < 100 else f'{s / 60:.1f} min'


def first_commands(m):
    return [f'python {m}.py', f'python {m}.py --proex']


def first_runs(d):
    out = ['## 11. First runs: wall time of each default command', '',
           'Each model file run as a new user first types it, `python <model>.py` and `python <model>.py '
           '--proex` with every default (offline `synthetic` data), one '
           'command at a time, each a fresh process, so imports and data generation are included.', '']
    r = load(d, 'first_runs.json')
    if r is None or not r.get('runs'):
        return out + pending('first_runs.json', 'missing or still being written')
    dirty = ' ' + DIRTY_NOTE if (r.get('git') or {}).get('dirty') else ''
    out += [f"{cmd_line(r.get('command'))}; code {commit(r.get('git'))}; {r.get('machine', '-')}.{dirty}", '',
            '| command | wall s | CPU s | epochs | test R@20 |', '|---|---|---|---|---|']
    for cmd, x in r['runs'].items():
        out.append(f"| `{cmd}` | {x['wall_s']:.1f} | {x['cpu_s']:.1f} | {x['epochs']} | {f4(x['test_recall@20'])} |")
    left = [c for m in MODELS for c in first_commands(m) if c not in r['runs']]
    if left:
        out += ['', 'Not in the file yet: ' + ', '.join(f'`{c}`' for c in left) + '.']
    return out


def readme_timings(d=RESULTS):
    """The README's table of first-run wall times, per model without and with --proex."""
    r = load(Path(d), 'first_runs.json') or {}
    runs = r.get('runs') or {}
    cell = lambda c: secs(runs[c]['wall_s']) if c in runs else 'pending'
    where = f"{r['machine']}, " if r.get('machine') else ''
    lines = ['Wall time of the first run with every default (offline `synthetic` data, a fresh process, '
             f'imports included; {where}`python bench/first_runs.py`, details in `bench/RESULTS.md`):', '',
             '| model | `python <model>.py` | `--proex` |', '|---|---|---|']
    for m in MODELS:
        lines.append(f"| {NAMES[m]} | " + ' | '.join(cell(c) for c in first_commands(m)) + ' |')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- how the numbers were made

def protocol_intro(d):
    ml = [load(d, f'protocol_ml100k_{m}.json') for m in MODELS]
    syn = [load(d, f'protocol_synthetic_{m}.json') for m in MODELS]
    n = lambda files: ', '.join(map(str, sorted({len(finals(r, 'base')) for r in files if incomplete(r) is None}))) or '-'
    threads = sorted({v['argv'][v['argv'].index('--threads') + 1] for r in ml + syn if r
                      for v in r.get('runs', {}).values() if '--threads' in v.get('argv', [])})
    return ['## 1. How the numbers were made', '',
            '* Eq., Fig. and Table numbers are those of the ProEx paper (Zhang et al., KDD\'26); ProEx '
            'is the paper\'s method added to a base model (`--proex`).',
            '* Metrics: Recall@20 (R@20) and NDCG@20 (N@20) over the full ranking of all items a user did '
            'not interact with in training, on the test split; R@10 and N@10 likewise.',
            '* Early stopping, as the model files do it today: validation R@20 every 3 epochs (L-DiffRec 5), '
            'stop after 20 validations without improvement, then test once with the parameters of the best '
            'validation epoch (the *best epoch*). Files made under an earlier rule say so: the *stopping* '
            'column gives "k / P", validation every k epochs and P epochs from the best epoch to the stop, '
            'as read from the runs.',
            '* *Best epoch <= 30*: a run whose best validation epoch is 30 or earlier, i.e. stuck on an early '
            'plateau.',
            f'* Paired seeds: both arms of a comparison run with the same seeds 1..n ({n(ml)} on ml100k, '
            f'{n(syn)} on synthetic); mean ± std is over those seeds, and p is a *paired t-test over seeds* '
            '(`scipy.stats.ttest_rel` on the per-seed test values of the two arms).',
            f"* The runs of sections 3-5 used `--threads {', '.join(threads) or '1'}`, two jobs at a time on a 2-core "
            'CPU, so the `sec_per_epoch` values inside those files are not timings (section 10 has timings).',
            '* *code*: the commit that ran (first 7 characters; `+` = with uncommitted changes to the sources, '
            'whose diff the file keeps). Runs of commits before 9e9cc69 fused Eq. 12 of the generative models '
            'as the sum of two samples (`--sum-of-samples` today) rather than one fused Gaussian as DMRec '
            '(the authors\' generative ProEx code, in BlueGhostYi/ProRec).',
            '* Commands are shown without `--data-dir`: set `$PROEX_DATA` to the data root, or add '
            '`--data-dir ROOT`.']


# ---------------------------------------------------------------- the file and the README summary

def profile_input(d):
    """compare.py files profile_input_<dataset>.json: Eq. 6's input for the generative models,
    selected on validation."""
    out = ['## 7. Eq. 6\'s input for the generative models: mean or DMRec\'s dropped sum', '',
           'Eq. 6 maps an aggregate of the user\'s item profiles; the paper does not say which. '
           '`--profile-input mean` (the default) averages the profile vectors of the user\'s train items '
           'and adds the user\'s own; `dropped-sum` sums them over the items left after input dropout, '
           'as DMRec\'s `encode` does. Mult-VAE + ProEx at its defaults; the choice is made on '
           '*validation* R@20 (best epoch), mean ± std over the seeds, with the paired t-test over seeds; '
           'test R@20 is shown for completeness.', '']
    names = sorted(f.name for f in Path(d).glob('profile_input_*.json'))
    for name in names:
        r = load(d, name)
        if r is None or len(r.get('results', {})) < 2:
            out += pending(name, 'missing or still being written')
            continue
        out += [f"`{name}` ({r['dataset']}): {compare_command(r, name)}", '',
                '| variant | flags | seeds | validation R@20 | test R@20 | best epochs | code |',
                '|---|---|---|---|---|---|---|']
        val = {}
        for k, v in r['results'].items():
            runs = v['runs']
            val[k] = {x['config']['seed']: x['best_val_recall20'] for x in runs}
            out.append(f"| {k.split('/')[-1]} | `{v['flags']}` | {', '.join(str(s) for s in val[k])} | "
                       f"{ms(val[k].values())} | {ms(x['test']['recall@20'] for x in runs)} | "
                       f"{', '.join(str(x['best_epoch']) for x in runs)} | "
                       f"{commits(v.get('git') or x.get('git') for x in runs)} |")
        (a, va), (b, vb) = list(val.items())[:2]
        out += ['', f"Validation R@20, {b.split('/')[-1]} - {a.split('/')[-1]}: "
                    f"{statistics.mean(vb.values()) - statistics.mean(va.values()):+.4f}, paired p "
                    f"{pval(paired_p(va, vb))}.", '']
    return out if names else out + pending('profile_input_<dataset>.json', 'not made yet')


def build(d=RESULTS):
    d = Path(d)
    parts = [['# Results', '',
              'Written by `python bench/table.py` from the result files in `bench/results/`; every number '
              'here is read from them (`tests/test_results_md.py` checks that this file is up to date). Each '
              'result file keeps every run\'s command line, seed, code commit and validation curve. Sections '
              'name the command that makes their file; a file still being made is listed as pending.'],
            protocol_intro(d), book(d), protocol_ml100k(d), synthetic(d), ablations(d), profile_dim(d),
            profile_input(d), ldiffrec_plateau(d), profiles(d), cost(d), first_runs(d)]
    return '\n\n'.join('\n'.join(p).strip('\n') for p in parts) + '\n'


def readme_summary(d=RESULTS):
    """One compact markdown table for the README: book base R@20 against the paper, and base vs
    ProEx R@20 (paired p) on ml100k and synthetic, per model."""
    d = Path(d)

    def cell(r):
        if incomplete(r):
            return 'pending'
        b, p = r20(finals(r, 'base')), r20(finals(r, 'proex'))
        return f"{statistics.mean(b.values()):.4f} → {statistics.mean(p.values()):.4f} (p {pval(paired_p(b, p))})"

    ns = {ds: sorted({len(finals(r, 'base')) for m in MODELS
                      if incomplete(r := load(d, f'protocol_{ds}_{m}.json')) is None}) for ds in ('ml100k', 'synthetic')}
    seeds = sorted({str(r['seeds']) for m in MODELS if (r := load(d, f'{m}_book.json')) and 'seeds' in r})
    lines = [f"Test R@20. Book: the base model (seed {', '.join(seeds) or '-'}) against the paper's Table 1. "
             f"ml100k and synthetic: "
             f"base → base + ProEx, means over paired seeds ({', '.join(map(str, ns['ml100k'])) or '-'} on ml100k, "
             f"{', '.join(map(str, ns['synthetic'])) or '-'} on synthetic), p of a paired t-test. Details and "
             f"commands: `bench/RESULTS.md`.", '',
             '| model | book (paper) | ml100k base → ProEx | synthetic base → ProEx |', '|---|---|---|---|']
    for m in MODELS:
        bk = load(d, f'{m}_book.json')
        b = 'pending' if not bk or 'test_mean' not in bk else \
            f"{bk['test_mean']['recall@20']:.4f} ({bk['paper']['recall@20']:.4f})"
        lines.append(f"| {NAMES[m]} | {b} | {cell(load(d, f'protocol_ml100k_{m}.json'))} | "
                     f"{cell(load(d, f'protocol_synthetic_{m}.json'))} |")
    return '\n'.join(lines) + '\n'  # the Fig. 4(b) and Eq. 7 tables: readme_variants, RESULTS.md


def readme_variants(d):
    """The README's compact Fig. 4(b) and Eq. 7 tables (ml100k), with the models that have at
    least 3 paired seeds of them."""
    files = {m: r for m in MODELS if not incomplete(r := load(d, f'protocol_ml100k_{m}.json'))}

    def cell(r, runs):
        _, diff, p = vs_proex(r, runs)
        return f"{statistics.mean(runs.values()):.4f} ({diff:+.4f}, p {pval(p)})"

    out = []
    # a model enters once it has 3 complete paired seeds (RESULTS.md shows any number)
    views = {m: v for m, r in files.items() if len(next(iter((v := view_seeds(r)).values()), {})) >= 3}
    if views:
        ks = sorted({k for v in views.values() for k in v}, key=int)
        out += ['', 'ml100k, Fig. 4(b): ProEx with one profile view, test R@20 (difference to all four views over '
                    'the same seeds, paired p):', '',
                '| model | seeds | all four | ' + ' | '.join(VIEW_NAMES.get(k, k) for k in ks) + ' |',
                '|---|---|---|' + '---|' * len(ks)]
        for m, v in views.items():
            one = next(iter(v.values()))
            out.append(f"| {NAMES[m]} | 1-{max(one)} | {statistics.mean(vs_proex(files[m], one)[0].values()):.4f} | "
                       + ' | '.join(cell(files[m], v[k]) if k in v else '-' for k in ks) + ' |')
    eq7 = {m: f for m, r in files.items() if len(next(iter((f := eq7_seeds(r)).values()), {})) >= 3}
    if eq7:
        out += ['', 'ml100k, Eq. 7: test R@20 of the chosen ProEx configuration with L_reg as printed, in the '
                    "InfoNCE form and as the released uniformity loss (difference to the chosen configuration, "
                    'paired p; then the mean validation R@20 of the same runs; section 3 of `bench/RESULTS.md`):', '',
                '| model | seeds | chosen ProEx config | chosen | as printed | InfoNCE sign | uniformity (released) |',
                '|---|---|---|---|---|---|---|']
        for m, forms in eq7.items():
            r, val = files[m], eq7_seeds(files[m], val_r20)
            cells = ['= chosen' if eq7_is_chosen(r, name) else
                     f"{cell(r, runs)}; val {statistics.mean(val[name].values()):.4f}" for name, runs in forms.items()]
            one = next(iter(forms.values()))
            chosen_val = statistics.mean(proex_on(r, one, val_r20).values())
            out.append(f"| {NAMES[m]} | 1-{max(one)} | `{r['chosen']['proex']}` | "
                       f"{statistics.mean(vs_proex(r, one)[0].values()):.4f}; val {chosen_val:.4f} | "
                       + ' | '.join(cells) + ' |')
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument('--results', default=str(RESULTS), help='folder of result files (default bench/results)')
    p.add_argument('--out', default=str(OUT), help='file to write (default bench/RESULTS.md)')
    p.add_argument('--readme-summary', action='store_true', help="print the README's summary table "
                   'to stdout instead of writing --out')
    p.add_argument('--readme-timings', action='store_true', help="print the README's table of "
                   'first-run wall times to stdout instead of writing --out')
    a = p.parse_args()
    if not Path(a.results).is_dir():
        raise SystemExit(f'error: --results {a.results} is not a folder')
    if a.readme_summary:
        sys.stdout.write(readme_summary(a.results))
        return
    if a.readme_timings:
        sys.stdout.write(readme_timings(a.results))
        return
    Path(a.out).write_text(build(a.results))
    print(f'wrote {a.out}')


if __name__ == '__main__':
    main()
