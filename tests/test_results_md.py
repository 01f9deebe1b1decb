"""bench/RESULTS.md is what `python bench/table.py` writes, and table.py survives result
files that are missing, half written or still being filled (pending, not a crash)."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results'


def table():
    spec = importlib.util.spec_from_file_location('bench_table', ROOT / 'bench' / 'table.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_md_is_what_table_py_writes():
    if not RESULTS.is_dir():
        pytest.skip('no bench/results in this checkout')
    assert (ROOT / 'bench' / 'RESULTS.md').read_text() == table().build(RESULTS), \
        'bench/RESULTS.md is stale: run python bench/table.py'


def test_readme_summary_is_what_table_py_prints():
    """The README's results table is `python bench/table.py --readme-summary`, word for word."""
    if not RESULTS.is_dir():
        pytest.skip('no bench/results in this checkout')
    assert table().readme_summary(RESULTS).strip() in (ROOT / 'README.md').read_text(), \
        'the README results table is stale: paste python bench/table.py --readme-summary'


def protocol_file(base, proex, every=3):
    """A bench/reproduce.py file with final runs of the given (best epoch, test R@20) per seed."""
    runs, summary = {}, {}
    for arm, cfg, values in (('base', '', base), ('proex', '--proex', proex)):
        for s, (best, r20) in enumerate(values, 1):
            stop = best + 20 * every
            runs[f'final|{arm}|{cfg}|{s}'] = {
                'best_epoch': best, 'best_val_recall20': r20, 'stop_reason': 'patience', 'stop_epoch': stop,
                'test': {'recall@20': r20, 'ndcg@20': r20 / 2},
                'val_curve': [r20 if e % every == 0 else None for e in range(1, stop + 1)],
                'argv': ['--dataset', 'ml100k', '--threads', '1', '--seed', str(s)],
                'code': {'commit': '0123456789abcdef', 'dirty': False}}
        v = [r for _, r in values]
        summary[arm] = {'mean': statistics.mean(v), 'std': statistics.stdev(v), 'n': len(v)}
    return {'model': 'lightgcn', 'dataset': 'ml100k', 'grids': {'base': [''], 'proex': ['--proex']},
            'chosen': {'base': '', 'proex': '--proex'}, 'runs': runs,
            'command': '/usr/bin/python3 bench/reproduce.py --model lightgcn --data-dir /somewhere/data '
                       '--defaults --out bench/results/protocol_ml100k_lightgcn.json',
            'summary': {'recall@20': summary, 'ndcg@20': {}}}


def test_pending_files_do_not_break_the_tables(tmp_path):
    t = table()
    empty = t.build(tmp_path)  # nothing there yet: every section says pending
    assert 'protocol_ml100k_lightgcn.json`: pending' in empty and 'timing.json`: pending' in empty
    assert 'pending' in t.readme_summary(tmp_path)

    done = protocol_file([(12, .30), (90, .31), (120, .32)], [(150, .33), (27, .20), (160, .34)])
    (tmp_path / 'protocol_ml100k_lightgcn.json').write_text(json.dumps(done))
    (tmp_path / 'protocol_ml100k_gccf.json').write_text(json.dumps(done)[:1000])  # half written
    stale = dict(done, runs={k: v for k, v in done['runs'].items() if not k.endswith('|3')})
    (tmp_path / 'protocol_ml100k_simgcl.json').write_text(json.dumps(stale))  # summary of older runs
    text = t.build(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith('| LightGCN | 3 |'))
    assert '| 1 / 1 |' in row          # best epoch <= 30: one base seed, one ProEx seed
    assert '| 3 / 60 |' in row         # validation every 3 epochs, stopped 60 epochs after the best
    assert '| 0123456 |' in row        # the code commit
    assert '`python bench/reproduce.py --model lightgcn --defaults --out' in text  # no interpreter path, no data dir
    assert 'protocol_ml100k_gccf.json`: pending' in text
    assert 'protocol_ml100k_simgcl.json`: pending' in text
    assert '| LightGCN | pending | 0.3100 → 0.2900 (p ' in t.readme_summary(tmp_path)


def test_readme_timings_is_what_table_py_prints():
    """The README's first-run table is `python bench/table.py --readme-timings`, word for word."""
    if not (RESULTS / 'first_runs.json').exists():
        pytest.skip('no bench/results/first_runs.json yet')
    assert table().readme_timings(RESULTS).strip() in (ROOT / 'README.md').read_text(), \
        'the README first-run table is stale: paste python bench/table.py --readme-timings'


def generative_file():
    """A Mult-VAE protocol file with --align-fused runs (seeds 1, 2 of 3), DMRec-M runs (view 0 on
    seeds 1-3, view 3 on seeds 1-2) and single views (seeds 1-3)."""
    r = protocol_file([(60, .30), (90, .31), (120, .32)], [(150, .33), (60, .20), (160, .34)])
    for s, v in ((1, .31), (2, .25)):
        r['runs'][f'fused|{s}'] = {'best_epoch': 60, 'best_val_recall20': v + .01,
                                   'test': {'recall@20': v, 'ndcg@20': v / 3}}
    for k, values in (('0', [.28, .22, .30]), ('3', [.18, .12])):
        for s, v in enumerate(values, 1):
            r['runs'][f'dmrec|{k}|{s}'] = {'best_epoch': 60, 'best_val_recall20': v, 'test': {'recall@20': v}}
    for k, values in (('0', [.32, .21, .33]), ('3', [.29, .18, .30])):
        for s, v in enumerate(values, 1):
            r['runs'][f'view|{k}|{s}'] = {'best_epoch': 60, 'best_val_recall20': v, 'test': {'recall@20': v}}
    r['summary']['views_recall@20'] = {'0': {}, '3': {}, 'all': {}}
    return r


def test_eq11_forms_and_dmrec_pair_with_proex_on_the_same_seeds(tmp_path):
    t = table()
    (tmp_path / 'protocol_ml100k_multvae.json').write_text(json.dumps(generative_file()))
    text = t.build(tmp_path)
    section3 = text.split('## 4.')[0]
    assert '### Eq. 11 in two forms' in section3 and '### Table 3: DMRec-M with each profile, and ProEx' in section3
    assert '`--profiles k --no-var --align-fused`' in section3
    # --align-fused: seeds 1 and 2, paired with ProEx's seeds 1 and 2 only
    proex, fused = {1: .33, 2: .20}, {1: .31, 2: .25}
    row = next(line for line in text.splitlines() if line.startswith('| Mult-VAE | 2 | `--proex` |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[3:6] == [t.ms(proex.values()), t.ms([.32, .26]), t.pval(t.paired_p(proex, {1: .32, 2: .26}))]
    assert cells[6:9] == [t.ms(proex.values()), t.ms(fused.values()), t.pval(t.paired_p(proex, fused))]
    assert cells[9:12] == [t.ms([.33 / 2, .10]), t.ms([.31 / 3, .25 / 3]),
                           t.pval(t.paired_p({1: .33 / 2, 2: .10}, {1: .31 / 3, 2: .25 / 3}))]
    # DMRec-M: the seeds every profile has (1, 2); DMRec_avg the per-seed mean over the profiles
    avg = {1: (.28 + .18) / 2, 2: (.22 + .12) / 2}
    rows = [line for line in text.splitlines() if line.startswith('| Mult-VAE | `--proex` |')]
    assert [r.split('|')[3].strip() for r in rows] == ['0 (OP)', '3 (NP3)', 'DMRec_avg']
    assert rows[2] == (f"| Mult-VAE | `--proex` | DMRec_avg | {t.msn(avg.values())} | {t.ms(proex.values())} | "
                       f"{statistics.mean(avg.values()) - statistics.mean(proex.values()):+.4f} | "
                       f"{t.pval(t.paired_p(proex, avg))} |")
    # Fig. 4(b) for a generative model, in RESULTS.md and in the compact variant table
    assert '| Mult-VAE | 3 (NP3) |' in text
    assert '| Mult-VAE | 1-3 |' in '\n'.join(t.readme_variants(tmp_path))
    # the synthetic files get the same subsections in section 4
    (tmp_path / 'protocol_synthetic_multvae.json').write_text(json.dumps(generative_file()))
    section4 = t.build(tmp_path).split('## 4.')[1].split('## 5.')[0]
    assert '### Eq. 11 in two forms' in section4 and 'DMRec_avg' in section4


def test_discriminative_grids_are_read_from_each_file(tmp_path):
    t = table()
    new = protocol_file([(60, .30), (90, .31)], [(60, .32), (90, .34)])
    new['grids'] = {'base': [f'--reg {r} --lr {lr}' for r in ('1e-6', '1e-5') for lr in ('5e-4', '1e-3', '2e-3')],
                    'proex': [f'--proex --lambda2 {l2}{form} --lambda1 {l1} --envs {e} --alpha {al}'
                              for l2, form, l1 in ((0, '', 0), (0.01, ' --no-infonce-reg', 0), (0, '', 0.1))
                              for e, al in ((3, 0.1), (2, 0.3))]}
    old = dict(new, grids={'base': [f'--cl {c} --reg {r}' for c in ('0.05', '0.1') for r in ('1e-6', '1e-5')],
                           'proex': [f'--proex --lambda2 {l2} --envs {e} --alpha {al}'
                                     for l2 in (0, 0.01) for e, al in ((3, 0.1), (2, 0.3))]})
    (tmp_path / 'protocol_ml100k_lightgcn.json').write_text(json.dumps(new))
    (tmp_path / 'protocol_ml100k_simgcl.json').write_text(json.dumps(old))
    text = t.build(tmp_path)
    assert ('* LightGCN: ProEx 6 configurations, (lambda2, lambda1) in {(0, 0), (0.01, 0), (0, 0.1)} x '
            '(E, alpha) in {(3, 0.1), (2, 0.3)}; base 6, L2 weight in {1e-6, 1e-5} x learning rate in '
            '{5e-4, 1e-3, 2e-3}.') in text
    assert ('* SimGCL: ProEx 4 configurations, (lambda2, lambda1) in {(0, 0), (0.01, 0)} x (E, alpha) in '
            '{(3, 0.1), (2, 0.3)}; base 4, contrastive weight in {0.05, 0.1} x L2 weight in {1e-6, 1e-5}.') in text
    assert '| LightGCN | 2 | 6 / 6 |' in text and '| SimGCL | 2 | 4 / 4 |' in text


def test_align_cost_and_first_runs(tmp_path):
    t = table()
    empty = t.build(tmp_path)
    assert 'align_cost.json`: pending' in empty and 'first_runs.json`: pending' in empty
    assert '## 11. First runs: wall time of each default command' in empty
    assert '| LightGCN | pending | pending |' in t.readme_timings(tmp_path)
    code = {'commit': '0123456789abcdef', 'dirty': False}
    (tmp_path / 'align_cost.json').write_text(json.dumps({
        'model': 'lightgcn', 'dataset': 'ml100k', 'sec_per_epoch_median': {'0': 1.2, '0.1': 1.5}, 'ratio': 1.25,
        'rounds': 3, 'epochs': 4, 'git': code, 'command': 'python bench/align_cost.py --rounds 3'}))
    (tmp_path / 'first_runs.json').write_text(json.dumps({
        'git': code, 'machine': 'x86_64, 2 cores', 'command': 'python bench/first_runs.py --models lightgcn',
        'runs': {'python lightgcn.py': {'wall_s': 31.2, 'cpu_s': 30.1, 'epochs': 45, 'best_epoch': 30,
                                        'test_recall@20': 0.1234},
                 'python lightgcn.py --proex': {'wall_s': 130.0, 'cpu_s': 128.4, 'epochs': 60, 'best_epoch': 42,
                                                'test_recall@20': 0.2345}}}))
    text = t.build(tmp_path)
    cost = text.split('## 10. Cost')[1].split('## 11.')[0]
    assert '`python bench/align_cost.py --rounds 3`; code 0123456.' in cost
    assert '| 1.20 s | 1.50 s | 1.25x |' in cost and '3 rounds of 4 epochs' in cost
    first = text.split('## 11.')[1]
    assert '| `python lightgcn.py --proex` | 130.0 | 128.4 | 60 | 0.2345 |' in first
    assert '`python bench/first_runs.py --models lightgcn`; code 0123456; x86_64, 2 cores.' in first
    assert '`python gccf.py`' in first  # named as not in the file yet
    timings = t.readme_timings(tmp_path)
    assert '| LightGCN | 31 s | 2.2 min |' in timings and '| GCCF | pending | pending |' in timings
    assert 'x86_64, 2 cores' in timings


def book_file(r20, best, every, stop_after, dirty=False):
    """A bench/book.py file for LightGCN: one run validated every `every` epochs that stopped
    `stop_after` epochs after its best epoch."""
    last = best + stop_after
    history = [{'epoch': e, 'train_s': 6.0, 'eval_s': (6.0 if e % every == 0 else None),
                'val_recall20': (0.1 if e % every == 0 else None)} for e in range(1, last + 1)]
    run = {'config': {'eval_every': every, 'epochs': 1000}, 'best_epoch': best, 'history': history}
    mean = {'recall@10': r20 / 2, 'recall@20': r20, 'ndcg@10': r20 / 3, 'ndcg@20': r20 / 2}
    return json.dumps({'model': 'lightgcn', 'seeds': '2023', 'extra': '--threads 1', 'test_mean': mean,
                       'paper': {'recall@20': 0.1411, 'ndcg@20': 0.0856}, 'best_epochs': [best], 'runs': [run],
                       'git': {'commit': 'abcdef0123', 'dirty': dirty},
                       'command': "python bench/book.py --model lightgcn --extra '--threads 1'"})


def test_book_section_states_the_rule_and_the_earlier_numbers(tmp_path):
    t = table()
    (tmp_path / 'lightgcn_book.json').write_text(book_file(0.1439, 393, 3, 60, dirty=True))
    (tmp_path / 'book_earlier').mkdir()
    (tmp_path / 'book_earlier' / 'lightgcn_book.json').write_text(book_file(0.1410, 224, 1, 20))
    text = t.build(tmp_path).split('## 2.')[1].split('## 3.')[0]
    assert 'These runs use the current stopping rule' in text
    assert '| 393 | 3 / 60 | 60 |' in text             # (453 epochs + 151 validations) x 6 s = 60.4 min
    assert "* `lightgcn_book.json`: `python bench/book.py --model lightgcn --extra '--threads 1'`; code abcdef0+." in text
    assert '"+": tracked files of the checkout differed' in text
    assert 'They validated every epoch and stopped 20 epochs after the best epoch.' in text
    assert '| LightGCN | 0.1410 | 0.1439 | +0.0029 |' in text
    (tmp_path / 'lightgcn_book.json').write_text(book_file(0.1439, 393, 1, 20))  # an old rule: said so
    assert 'These runs predate the current stopping rule' in t.build(tmp_path)
