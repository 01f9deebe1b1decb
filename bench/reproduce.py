"""Base vs ProEx as a reviewer would accept it: tuned on validation with the same budget per
arm, then 10 seeds per arm, paired t-tests, plateau stops, the Fig. 12 and Fig. 4(b) views.

    python bench/reproduce.py --model lightgcn --dataset ml100k --threads 1 \
        --out bench/results/protocol_ml100k_lightgcn.json

Steps, one result file:
  1. tune   every configuration of GRIDS[model][arm] with each of --tune-seeds (not among the
            final seeds); the configuration with the best mean VALIDATION Recall@20 over them
            is chosen per arm (the test split plays no part);
  2. final  the chosen configuration of each arm with --seeds seeds (the same seeds in both
            arms, run seed by seed so that the runs pair up even if the job is stopped; rerun
            with a smaller --seeds to summarise the pairs finished); mean +- std of test
            R@20 / N@20, a paired t-test (scipy.stats.ttest_rel) per metric, the runs whose
            best epoch is 30 or earlier (an early plateau), and test R@20 per quartile of train interactions (Fig. 12);
  3. ablations (--ablations) ProEx's chosen configuration with each Fig. 6 switch (--no-var,
            --no-reg, --no-align, --no-mixing), --ablation-seeds seeds, paired with ProEx's seeds;
  4. views  (--views) ProEx's chosen configuration with each single profile view
            (--profiles k), --view-seeds seeds each, paired with all views (Fig. 4(b));
  5. eq7    (--eq7) ProEx's chosen configuration with each form of Eq. 7 (EQ7_FORMS),
            --eq7-seeds seeds each, paired with the chosen configuration;
  6. fused  (--fused-seeds N, generative) ProEx's chosen configuration with --align-fused
            (Eq. 11 on the fused Gaussian, as DMRec's code) on final seeds 1..N, paired with
            the chosen configuration on validation and test R@20 and N@20.
  7. one profile (--one-profile) the paper's Tables 2-3: a single-profile baseline as a third
            arm, tuned like the others with the same budget (ONE_PROFILE: RLMRec-C for the
            discriminative models, DMRec-M for Mult-VAE) on the OP (view 0); its chosen
            configuration then runs on each view of --one-views with --one-seeds seeds
            (DMRec_avg: the mean over the views, per seed), and with --one-best also on the view
            with the best mean validation R@20 over the tuning seeds, --seeds seeds; each paired
            with ProEx's finals of the same seeds.
--keep-base keeps the base arm's runs made by earlier source files (when the base model's
code did not change: check with bench/same_numbers.py) and reruns only the rest.
--fused-only (--views-only) runs step 6 (4) alone for --proex-config into its own --out (a second
core's share); --tune-only runs step 1 alone (each core its own --tune-seeds), --one-only step 7's
runs of --one-config;
--merge FILE later takes those runs into the protocol file (the runs of the same source files only).
Both arms use the model file's early-stopping rule (validation R@20 every --eval-every
epochs, 3 by default and 5 for L-DiffRec; stop after 20 validations without improvement). Every run stores its command line and the git commit plus a hash of
the source files it ran; a resumed file whose runs came from other sources is refused unless
--restart drops them. Runs are in-process, one after another: start two scripts at once on
two cores, each with --threads 1.
"""
import argparse
import hashlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402  (the repository's modules, from ROOT)
from eval import ArgumentParser  # noqa: E402

# Each arm gets the same number of configurations. The base arm searches its own main knob;
# ProEx searches its own (paper ranges). For the generative models the prior KL weight is
# matched: base --kl-weight w against ProEx lambda1 * beta = w (Eq. 11), so a gain cannot
# come from a different weight on KL(q || N(0, I)).
# The discriminative ProEx grid crosses (lambda2, lambda1) in {(0, 0), (0.01, 0), (0, 0.1)}: Eq. 7
# off or on, Eq. 13's InfoNCE alignment off or on, with the environments (E, alpha) in
# {(3, 0.1), (2, 0.3)}; the base gets as many configurations of its own knobs.
# Eq. 7 is spelled as printed where it is on (--no-infonce-reg), whatever the file's default.
PROEX_DISC = [f'--proex --lambda2 {l2}{form} --lambda1 {l1} --envs {e} --alpha {al}'
              for l2, form, l1 in ((0, '', 0), (0.01, ' --no-infonce-reg', 0), (0, '', 0.1))
              for e, al in ((3, 0.1), (2, 0.3))]
# LightGCN: Eq. 13's alignment at RLMRec's weight for its contrastive alignment (1e-2, HKUDS/
# RLMRec lightgcn_plus.yml) instead of 0.1, a weight whose term is about twice BPR at the start
PROEX_LIGHTGCN = [c.replace('--lambda1 0.1', '--lambda1 0.01') for c in PROEX_DISC]
BASE_GCN = [f'--reg {r} --lr {lr}' for r in ('1e-6', '1e-5') for lr in ('5e-4', '1e-3', '2e-3')]
GRIDS = {
    'lightgcn': {'base': BASE_GCN, 'proex': PROEX_LIGHTGCN},
    'gccf': {'base': BASE_GCN, 'proex': PROEX_DISC},
    'simgcl': {'base': [f'--cl {c} --reg {r}' for c in ('0.05', '0.1', '0.2') for r in ('1e-6', '1e-5')],
               'proex': PROEX_DISC},
    'multvae': {'base': ['--kl-weight 0.2', '--kl-weight 0.5', '--kl-weight 1'],
                'proex': ['--proex --lambda1 1 --beta 0.2', '--proex --lambda1 1 --beta 0.5',
                          '--proex --lambda1 1 --beta 1']},
    # CVGA: batches of 128 users (1024 would be one step per epoch on ml100k's 943 users)
    'cvga': {'base': ['--kl-weight 0.2 --batch 128', '--kl-weight 0.5 --batch 128', '--kl-weight 1 --batch 128'],
             'proex': ['--proex --lambda1 1 --beta 0.2 --batch 128', '--proex --lambda1 1 --beta 0.5 --batch 128',
                       '--proex --lambda1 1 --beta 1 --batch 128']},
    # L-DiffRec: one configuration per arm, the prior KL weight matched (0.15 at the end of
    # the same annealing schedule: base cap 0.15, ProEx lambda1 0.3 x beta 0.5)
    'ldiffrec': {'base': ['--vae-anneal-cap 0.15'],
                 'proex': ['--proex --lambda1 0.3 --beta 0.5']},
}
# a run of an earlier grid whose configuration this grid spells differently (the alignment's
# weight now written out): the same arguments, so the same run (the key is renamed on load;
# and Eq. 7's form, as printed then in every file)
RENAMED = {f'--proex --lambda2 {l2} --envs {e} --alpha {al}':
           f'--proex --lambda2 {l2}{form} --lambda1 0 --envs {e} --alpha {al}'
           for l2, form in ((0, ''), (0.01, ' --no-infonce-reg')) for e, al in ((3, 0.1), (2, 0.3))}
# Fig. 6 ablations, each added to ProEx's chosen configuration (one the model file refuses
# because it would change nothing, e.g. --no-align at lambda1 = 0, is recorded as skipped)
ABLATIONS = ['--no-var', '--no-reg', '--no-align', '--no-mixing']
# Eq. 7 in three forms (--eq7), each with ProEx's chosen configuration: as printed, the InfoNCE
# sign, and the released uniformity loss at the released weight; lambda2 0.01 when the chosen
# configuration has Eq. 7 off
EQ7_FORMS = {'printed': '--lambda2 {l2} --no-infonce-reg', 'infonce': '--lambda2 {l2} --infonce-reg',
             'uniformity': '--lambda2 0.4 --uniformity-reg'}
# The single-profile arm of --one-profile (Tables 2-3), as many configurations as the base arm:
# RLMRec-C's weight (RLMRec's 1e-2, ten times less and more) x the base's L2 weights; DMRec-M's
# beta at the base's KL weights (loss = NLL + beta KL(fused || N(0, I)) + (1 - beta) KL(fused ||
# profile Gaussian): the same prior weight as the other two arms)
RLMREC_GRID = [f'--rlmrec-con --kd-weight {w} --reg {r}' for w in ('1e-3', '1e-2', '1e-1')
               for r in ('1e-6', '1e-5')]
ONE_PROFILE = {'lightgcn': ('rlmrec', RLMREC_GRID, '--rlmrec-con'),
               'gccf': ('rlmrec', RLMREC_GRID, '--rlmrec-con'),
               'simgcl': ('rlmrec', RLMREC_GRID, '--rlmrec-con'),
               'multvae': ('dmrec', ['--dmrec --beta 0.2', '--dmrec --beta 0.5', '--dmrec --beta 1'],
                           '--dmrec')}
SOURCES = ['data.py', 'eval.py', 'proex_core.py']


def code_version(model):
    """git commit (+ dirty flag and the diff) and a hash of the files a run executes."""
    h = hashlib.sha256()
    for f in SOURCES + [f'{model}.py']:
        h.update((ROOT / f).read_bytes())
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(['git', 'status', '--porcelain', '--'] + SOURCES + [f'{model}.py'],
                                    cwd=ROOT, capture_output=True, text=True).stdout.strip())
        patch = subprocess.run(['git', 'diff', 'HEAD', '--'] + SOURCES + [f'{model}.py'], cwd=ROOT,
                               capture_output=True, text=True).stdout if dirty else ''
    except OSError:
        commit, dirty, patch = None, None, ''
    # dirty: the uncommitted changes to those files are kept, so the run can be redone exactly
    return {'commit': commit, 'dirty': dirty, 'source_sha256': h.hexdigest()[:16], 'patch': patch}


def run(mod, argv, store, key, version, save):
    """One training run, resumable: results are keyed by name and saved after each run."""
    if key in store['runs']:
        done = store['runs'][key]
        if key.split('|')[0] not in ('tune', 'final') and method(done['argv']) != method(argv):
            raise SystemExit(f"error: run {key} in the file ran {' '.join(method(done['argv']))!r}, not "
                             f"{' '.join(method(argv))!r} (a share of another configuration?); --drop it")
        return done
    t0 = time.time()
    r = mod.main(mod.parse_args(argv))
    keep = {k: r[k] for k in ('best_epoch', 'best_val_recall20', 'test', 'test_by_activity',
                              'sec_per_epoch', 'stop_reason', 'stop_epoch') if k in r}
    keep.update(argv=argv, wall_s=time.time() - t0, code=version,
                val_curve=[h.get('val_recall20') for h in r['history']])
    store['runs'][key] = keep
    save()
    return keep


def method(argv):
    """A run's flags without where it read the data and how many threads it used."""
    return [x for i, x in enumerate(argv) if x not in ('--threads', '--data-dir')
            and (i == 0 or argv[i - 1] not in ('--threads', '--data-dir'))]


def renamed(key):
    """A run's key with its configuration as this grid spells it (RENAMED)."""
    parts = key.split('|')
    if len(parts) == 4 and parts[2] in RENAMED:
        parts[2] = RENAMED[parts[2]]
    return '|'.join(parts)


def paired(a_runs, b_runs, metric, names=('base', 'proex')):
    """Mean +- std of each arm, the difference b - a, and a paired t-test over the seeds."""
    value = (lambda r: r['best_val_recall20']) if metric == 'val_recall@20' else (lambda r: r['test'][metric])
    a, b = [value(r) for r in a_runs], [value(r) for r in b_runs]
    p = stats.ttest_rel(b, a).pvalue if len(a) > 1 else None
    return {names[0]: mean_std(a), names[1]: mean_std(b), 'diff': statistics.mean(b) - statistics.mean(a),
            'p_paired_t': None if p is None or np.isnan(p) else float(p)}


def with_pairs(runs, proex_runs):
    """Test R@20 of a variant's seeds, and the paired difference to ProEx's same seeds."""
    return dict(mean_std([r['test']['recall@20'] for r in runs]),
                vs_chosen=paired(proex_runs[:len(runs)], runs, 'recall@20', ('proex', 'variant')))


def early_best(runs):
    """Runs whose best validation epoch is 30 or earlier: stuck on an early plateau."""
    return sum(r['best_epoch'] <= 30 for r in runs)


def mean_std(v):
    return {'mean': statistics.mean(v), 'std': statistics.stdev(v) if len(v) > 1 else 0.0, 'n': len(v)}


def by_activity(runs):
    """Mean over seeds of test R@20 per quartile of train interactions."""
    groups = [r['test_by_activity'] for r in runs if r.get('test_by_activity')]
    out = []
    for g in zip(*groups):  # one quartile across seeds; an empty quartile has None
        v = [x['recall@20'] for x in g if x['recall@20'] is not None]
        out.append({'train_items': g[0]['train_items'], 'recall@20': statistics.mean(v) if v else None})
    return out if groups else None


def one_run(mod, common, store, cfg, version, save):
    """Step 7's run: configuration cfg on view k with seed s, stored under 'step|k|s'."""
    return lambda k, s, step: run(mod, common + cfg.split() + ['--profiles', str(k), '--seed', str(s)],
                                  store, f'{step}|{k}|{s}', version, save)


def n_views(a):
    return len(data.load_dataset(a.dataset, a.data_dir, profiles=True).usr_prf)


def one_share(a, mod, common, store, tune_seeds, version, save):
    """--one-only: step 7's runs of --one-config alone, under the keys one_profile() reads."""
    on_view = one_run(mod, common, store, a.one_config, version, save)
    if a.one_best:
        for k in range(n_views(a)):
            for t in tune_seeds:
                on_view(k, t, 'oneview')
        return
    for k in a.one_views.split(','):
        for s in range(a.one_from, a.one_seeds + 1):
            on_view(int(k), s, 'one')


def one_profile(a, mod, common, store, cfg, proex, tune_seeds, version, save):
    """Step 7: the chosen single-profile configuration on each view of --one-views (and the
    view validation picks, --one-best), seed by seed, paired with ProEx's finals."""
    on_view = one_run(mod, common, store, cfg, version, save)
    views = [int(k) for k in a.one_views.split(',')]
    summary, runs = {'config': cfg, 'views': {}}, {}

    def finals_on(k, n):
        runs[k] = [on_view(k, s, 'one') for s in range(1, n + 1)]
        summary['views'][str(k)] = {m: paired(proex[:n], runs[k], m, ('proex', 'one'))
                                    for m in ('val_recall@20', 'recall@20', 'ndcg@20')}
        store['summary']['one_profile'] = summary
        save()
    for k in views:
        finals_on(k, a.one_seeds)
    if a.one_best:  # the view with the best mean validation R@20 over the tuning seeds
        val = {k: statistics.mean(on_view(k, t, 'oneview')['best_val_recall20'] for t in tune_seeds)
               for k in range(n_views(a))}
        summary['best_view'], summary['val_by_view'] = max(val, key=val.get), val
        finals_on(summary['best_view'], a.seeds)
    if len(views) > 1:  # the mean over the views per seed (DMRec_avg)
        n = a.one_seeds
        avg = [{'best_val_recall20': statistics.mean(runs[k][i]['best_val_recall20'] for k in views),
                'test': {m: statistics.mean(runs[k][i]['test'][m] for k in views)
                         for m in ('recall@20', 'ndcg@20')}} for i in range(n)]
        summary['avg'] = {m: paired(proex[:n], avg, m, ('proex', 'one'))
                          for m in ('val_recall@20', 'recall@20', 'ndcg@20')}
        save()


def main():
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, choices=sorted(GRIDS))
    p.add_argument('--dataset', default='ml100k')
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', '../shared/datasets'),
                   help='data root, as given (relative to where the script runs); stored in the '
                        'result file (default: $PROEX_DATA, else ../shared/datasets)')
    p.add_argument('--tune-seeds', default='0', help='comma-separated seeds of the tuning runs, '
                   'not among the final seeds 1..N; a configuration is scored by its mean '
                   'validation R@20 over them (default 0)')
    p.add_argument('--seeds', type=int, default=10, help='final seeds 1..N per arm (default 10)')
    p.add_argument('--views', action='store_true', help='also ProEx with each single view (Fig. 4b)')
    p.add_argument('--view-seeds', type=int, default=3, help='seeds per single-view run (default 3)')
    p.add_argument('--view-list', default='0,1,2,3', help='the single views of --views (default 0,1,2,3)')
    p.add_argument('--eq7', action='store_true', help="also ProEx's chosen configuration with "
                   'each form of Eq. 7 (as printed, InfoNCE sign, released uniformity)')
    p.add_argument('--eq7-seeds', type=int, default=5, help='seeds per Eq. 7 form (default 5)')
    p.add_argument('--ablations', action='store_true', help="also ProEx's chosen configuration "
                   'with each Fig. 6 ablation switch')
    p.add_argument('--ablation-seeds', type=int, default=5, help='seeds per ablation (default 5)')
    p.add_argument('--base-config', help='no tuning of the base arm: these flags, written with = '
                   'since they start with a dash (--base-config="--kl-weight 0.2")')
    p.add_argument('--proex-config', help='no tuning of the ProEx arm: these flags, written with = '
                   '(--proex-config="--proex --beta 1")')
    p.add_argument('--defaults', action='store_true', help='no tuning: each arm at the model '
                   "file's defaults (base '', ProEx '--proex')")
    p.add_argument('--threads', type=int, default=1, help='torch threads per run (default 1)')
    p.add_argument('--extra', default='', help='flags added to every run of both arms')
    p.add_argument('--fused-seeds', type=int, default=0, help='generative models: also ProEx\'s '
                   'chosen configuration with --align-fused on final seeds 1..N (default 0: not run)')
    p.add_argument('--one-profile', action='store_true', help='also the single-profile arm of '
                   'ONE_PROFILE (Tables 2-3: RLMRec-C, DMRec-M), tuned like the other arms')
    p.add_argument('--one-config', help='no tuning of the single-profile arm: these flags (with =)')
    p.add_argument('--one-views', default='0', help='views the chosen single-profile configuration '
                   'runs on (--profiles k; default 0, the OP)')
    p.add_argument('--one-seeds', type=int, default=10, help='seeds per view of --one-views (default 10)')
    p.add_argument('--one-best', action='store_true', help='also the view with the best mean '
                   'validation R@20 over the tuning seeds, --seeds seeds')
    p.add_argument('--drop', nargs='+', default=[], metavar='PREFIX', help="with --keep-stale: run "
                   "again the runs made by other sources whose key starts with PREFIX (e.g. 'final|proex|' "
                   "after a default they relied on changed), keep the other stale runs")
    p.add_argument('--fused-only', action='store_true', help='run only the --fused-seeds runs of '
                   '--proex-config (no tuning, no finals: a second core\'s share; --merge it later)')
    p.add_argument('--views-only', action='store_true', help='run only the single-view runs (step 4) '
                   'of --proex-config into its own --out (a second core\'s share; --merge it later)')
    p.add_argument('--fused-from', type=int, default=1, metavar='S', help='with --fused-only: '
                   'seeds S..--fused-seeds only (another share has the seeds before S)')
    p.add_argument('--tune-only', action='store_true', help='run only step 1, the tuning runs of '
                   'the --tune-seeds given (a second core\'s share of the tuning; --merge it later)')
    p.add_argument('--one-only', action='store_true', help='run only step 7\'s runs of --one-config: '
                   'with --one-best the view-picking runs (each view, each tuning seed), else --one-views '
                   'with seeds --one-from..--one-seeds (a second core\'s share; --merge it later)')
    p.add_argument('--one-from', type=int, default=1, metavar='S', help='with --one-only: seeds '
                   'S..--one-seeds only (another share has the seeds before S)')
    p.add_argument('--merge', nargs='+', default=[], metavar='FILE', help='take the runs of these '
                   'result files made by the same source files before running: the shares of other cores')
    p.add_argument('--restart', action='store_true', help='drop runs made by other sources')
    p.add_argument('--keep-base', action='store_true', help='with --restart: keep the base arm\'s '
                   'runs made by other sources (its code unchanged; bench/same_numbers.py shows it)')
    p.add_argument('--keep-stale', action='store_true', help='keep every run made by other sources '
                   '(only where bench/same_numbers.py shows that the configurations they ran train to '
                   'the same numbers with these sources); the grid reuses those it names')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    tune_seeds = [int(x) for x in a.tune_seeds.split(',')]
    if any(1 <= t <= a.seeds for t in tune_seeds):
        raise SystemExit(f'error: --tune-seeds {a.tune_seeds} overlaps the final seeds 1..{a.seeds}')
    mod = importlib.import_module(a.model)
    version = code_version(a.model)
    grids = {'base': [''], 'proex': ['--proex']} if a.defaults else dict(GRIDS[a.model])
    one = ONE_PROFILE[a.model][0] if a.one_profile else None
    if one:  # the single-profile arm: the same budget as the base arm
        grids[one] = [ONE_PROFILE[a.model][2]] if a.defaults else ONE_PROFILE[a.model][1]
    for arm, cfg in (('base', a.base_config), ('proex', a.proex_config), (one, a.one_config)):
        if cfg is not None:
            grids[arm] = [cfg]
    if ((a.ablations and a.ablation_seeds > a.seeds) or (a.views and a.view_seeds > a.seeds)
            or (a.eq7 and a.eq7_seeds > a.seeds) or a.fused_seeds > a.seeds
            or (a.one_profile and a.one_seeds > a.seeds)):
        raise SystemExit('error: --ablation-seeds, --view-seeds, --eq7-seeds, --fused-seeds and --one-seeds pair with the final seeds; '
                         'they must not exceed --seeds')
    if (a.fused_only or a.views_only) and a.proex_config is None:
        raise SystemExit('error: --fused-only and --views-only need --proex-config (the configuration '
                         'they pair with)')
    if a.fused_from != 1 and not a.fused_only:
        raise SystemExit('error: --fused-from only splits a --fused-only share')
    if a.one_only and (a.one_config is None or not a.one_profile):
        raise SystemExit('error: --one-only needs --one-profile and --one-config (the configuration it runs)')
    if a.one_from != 1 and not a.one_only:
        raise SystemExit('error: --one-from only splits a --one-only share')
    store = {'runs': {}}
    if Path(a.out).exists():
        store = json.loads(Path(a.out).read_text())
        store['runs'] = {renamed(k): r for k, r in store['runs'].items()}
        dropped = lambda k: any(k.startswith(prefix) for prefix in a.drop)  # noqa: E731
        stale = [k for k, r in store['runs'].items() if r['code']['source_sha256'] != version['source_sha256']
                 and not (a.keep_base and k.split('|')[1] == 'base')
                 and not (a.keep_stale and not dropped(k))]
        if stale and not a.restart and not a.drop:
            raise SystemExit(f'error: {a.out} holds {len(stale)} runs made by other source files '
                             f'(e.g. {stale[0]}); rerun with --restart to drop them, or write a new --out')
        for k in stale:
            del store['runs'][k]
        if stale:  # the old choice and summary were made from the runs just dropped
            store.pop('chosen', None)
            store.pop('summary', None)
    for f in a.merge:  # another core's share of this protocol: its runs made by these source files
        share = json.loads(Path(f).read_text())
        same = {k: r for k, r in share['runs'].items() if r['code']['source_sha256'] == version['source_sha256']}
        if not same:
            raise SystemExit(f'error: {f} holds no run made by these source files; not merged')
        store['runs'].update({k: r for k, r in same.items() if k not in store['runs']})
        store.setdefault('merged', {})[Path(f).name] = share.get('command')
    store.update(model=a.model, dataset=a.dataset, grids=grids, extra=a.extra,
                 command=' '.join([sys.executable.split('/')[-1]] + sys.argv), code=version)
    common = ['--dataset', a.dataset, '--data-dir', a.data_dir, '--threads', str(a.threads)] + a.extra.split()

    def save():
        Path(a.out).write_text(json.dumps(store, indent=1))

    def fused_run(cfg, s):  # step 6's run; a --fused-only share runs the same, under the same key
        return run(mod, common + cfg + ['--align-fused', '--seed', str(s)], store, f'fused|{s}', version, save)

    def view_run(cfg, k, s):  # step 4's run; a --views-only share runs the same, under the same key
        return run(mod, common + cfg + ['--profiles', k, '--seed', str(s)], store, f'view|{k}|{s}', version, save)

    if a.fused_only:  # one core's share: the --align-fused runs alone, summarised after --merge
        for s in range(a.fused_from, a.fused_seeds + 1):
            fused_run(a.proex_config.split(), s)
        return
    if a.views_only:  # one core's share: the single-view runs alone, summarised after --merge
        for s in range(1, a.view_seeds + 1):
            for k in a.view_list.split(','):
                view_run(a.proex_config.split(), k, s)
        return
    if a.one_only:  # one core's share of step 7: the same runs under the same keys as there
        one_share(a, mod, common, store, tune_seeds, version, save)
        return
    # 1) tune on validation, the same budget per arm
    chosen = {}
    for arm, grid in grids.items():
        if len(grid) == 1:  # nothing to choose: no tuning run
            chosen[arm] = grid[0]
            continue
        vals = []
        for cfg in grid:
            runs = [run(mod, common + cfg.split() + ['--seed', str(s)], store,
                        f'tune|{arm}|{cfg}|{s}', version, save) for s in tune_seeds]
            vals.append(statistics.mean(r['best_val_recall20'] for r in runs))
        chosen[arm] = grid[int(np.argmax(vals))]
        print(f'== {arm}: chosen {chosen[arm]!r} on mean validation R@20 {max(vals):.4f}', flush=True)
    if a.tune_only:  # one core's share: the tuning runs alone, chosen after --merge
        return
    store['chosen'] = chosen
    # 2) final: the chosen configurations, paired seeds
    final = {arm: [] for arm in chosen if arm != one}
    for s in range(1, a.seeds + 1):  # seed by seed, both arms: a stopped job leaves pairs
        for arm in final:
            cfg = chosen[arm]
            final[arm].append(run(mod, common + cfg.split() + ['--seed', str(s)], store,
                                  f'final|{arm}|{cfg}|{s}', version, save))
    store['summary'] = {m: paired(final['base'], final['proex'], m)
                        for m in ('val_recall@20', 'recall@20', 'ndcg@20')}
    store['summary']['best_epoch_le_30'] = {arm: early_best(runs) for arm, runs in final.items()}
    store['summary']['by_activity'] = {arm: by_activity(runs) for arm, runs in final.items()}
    save()
    # 3) Fig. 6 ablations, paired with ProEx's final runs of the same seeds
    if a.ablations:
        n = a.ablation_seeds
        ablations = {}
        for flag in ABLATIONS:
            try:
                mod.parse_args(common + chosen['proex'].split() + [flag])
            except SystemExit:
                ablations[flag] = f'skipped: {chosen["proex"]!r} already runs without it'
                continue
            runs = [run(mod, common + chosen['proex'].split() + [flag, '--seed', str(s)], store,
                        f'ablation|{flag}|{s}', version, save) for s in range(1, n + 1)]
            ablations[flag] = {m: paired(final['proex'][:n], runs, m, ('proex', 'ablation'))
                               for m in ('recall@20', 'ndcg@20')}
        store['summary']['ablations'] = ablations
        save()
    # 4) single views (Fig. 4b) and 5) Eq. 7's forms, paired with ProEx's final runs of the same
    #    seeds; seed by seed for both, the summary saved after each seed, so that a stopped job
    #    leaves a summary of complete seeds
    cfg = chosen['proex'].split()
    i = cfg.index('--lambda2') if '--lambda2' in cfg else len(cfg)
    chosen_args = vars(mod.parse_args(common + cfg))  # a form that parses to it is the chosen one
    rest, l2 = cfg[:i] + cfg[i + 2:], chosen_args['lambda2']  # lambda2 taken out, and the form
    rest = [x for x in rest if x not in ('--infonce-reg', '--no-infonce-reg')]  # of Eq. 7 it spells
    forms = {name: rest + form.format(l2=l2 or 0.01).split() for name, form in EQ7_FORMS.items()
             } if a.eq7 else {}  # the discriminative files know these flags
    is_chosen = {name: vars(mod.parse_args(common + f)) == chosen_args for name, f in forms.items()}
    view_runs = {k: [] for k in a.view_list.split(',')} if a.views else {}
    form_runs = {name: [] for name in forms} if a.eq7 else {}
    for s in range(1, max(a.view_seeds * a.views, a.eq7_seeds * a.eq7) + 1):
        for k, runs in view_runs.items() if s <= a.view_seeds else ():
            runs.append(view_run(cfg, k, s))
        for name, runs in form_runs.items() if s <= a.eq7_seeds else ():
            runs.append(final['proex'][s - 1] if is_chosen[name] else run(  # chosen: its final run
                mod, common + forms[name] + ['--seed', str(s)], store, f'eq7|{name}|{s}', version, save))
        if view_runs:
            views = {k: with_pairs(runs, final['proex']) for k, runs in view_runs.items()}
            views['all'] = mean_std([r['test']['recall@20'] for r in final['proex'][:min(s, a.view_seeds)]])
            store['summary']['views_recall@20'] = views
        if form_runs:
            store['summary']['eq7'] = {name: dict(config=' '.join(forms[name]), is_chosen=is_chosen[name],
                                                  **with_pairs(runs, final['proex']))
                                       for name, runs in form_runs.items()}
        save()
    # 6) Eq. 11 on the fused Gaussian (DMRec's code), seed by seed, paired with ProEx's finals
    fused = []
    for s in range(1, a.fused_seeds + 1):
        fused.append(fused_run(cfg, s))
        store['summary']['align_fused'] = dict(config=' '.join(cfg + ['--align-fused']), **{
            m: paired(final['proex'][:s], fused, m, ('proex', 'align_fused'))
            for m in ('val_recall@20', 'recall@20', 'ndcg@20')})
        save()
    # 7) the single-profile arm (Tables 2-3) on each view, paired with ProEx's finals
    if one:
        one_profile(a, mod, common, store, chosen[one], final['proex'], tune_seeds, version, save)
    s = store['summary']
    for m in ('recall@20', 'ndcg@20'):
        print(f"{a.model} {a.dataset} {m}: base {s[m]['base']['mean']:.4f} +- {s[m]['base']['std']:.4f}"
              f" | ProEx {s[m]['proex']['mean']:.4f} +- {s[m]['proex']['std']:.4f}"
              f" | p = {s[m]['p_paired_t']}")


if __name__ == '__main__':
    main()
