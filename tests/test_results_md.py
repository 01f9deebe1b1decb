"""The tables of bench/RESULTS.md and of the README are what `python bench/table.py` makes from
bench/results/, and table.py survives result files that are missing, half written or still being
filled (a pending line, not a crash)."""
import importlib.util
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results'
needs_results = pytest.mark.skipif(not RESULTS.is_dir(), reason='no bench/results in this checkout')


def table():
    spec = importlib.util.spec_from_file_location('bench_table', ROOT / 'bench' / 'table.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_results
def test_results_md_tables_are_what_table_py_writes():
    assert (ROOT / 'bench' / 'RESULTS.md').read_text() == table().build(RESULTS), \
        'a table of bench/RESULTS.md is stale: run python bench/table.py'


@needs_results
@pytest.mark.parametrize('name', ['readme_summary', 'readme_timings'])
def test_readme_tables_are_what_table_py_prints(name):
    assert '\n'.join(table().show(RESULTS, name)) in (ROOT / 'README.md').read_text(), \
        f'a README table is stale: paste python bench/table.py --print {name}'


def test_every_marker_names_a_table_and_every_table_is_used():
    t = table()
    markers = re.findall(r'^<!-- table:(\S+)', (ROOT / 'bench' / 'RESULTS.md').read_text(), re.M)
    assert markers and set(markers) <= set(t.TABLES)
    assert set(t.TABLES) - set(markers) == {'readme_summary', 'readme_timings'}


def test_check_exits_zero_when_up_to_date():
    p = subprocess.run([sys.executable, str(ROOT / 'bench' / 'table.py'), '--check'], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_fill_rewrites_only_the_marked_regions(tmp_path):
    t = table()
    (tmp_path / 'align_cost.json').write_text(json.dumps({'sec_per_epoch_median': {'0': 1.2, '0.1': 1.5},
                                                          'ratio': 1.25}))
    text = ('Hand-written, <!-- table:align_cost --> in a sentence is no marker.\n\n'
            '<!-- table:align_cost -->\nwhatever was here\n<!-- /table -->\n\nMore text.\n')
    assert t.fill(text, tmp_path) == ('Hand-written, <!-- table:align_cost --> in a sentence is no marker.\n\n'
                                      '<!-- table:align_cost -->\n| dataset | s / epoch, lambda1 = 0 | lambda1 | s / epoch, Eq. 13 on '
                                      '| ratio |\n|---|---|---|---|---|\n'
                                      '| ml100k | 1.20 s | 0.1 | 1.50 s | 1.25x |\n\n<!-- /table -->\n\nMore text.\n')
    assert t.fill(text, tmp_path / 'nothing') == text.replace(
        'whatever was here', '* `align_cost.json`: pending (missing or still being written).\n')


def test_commands_as_recorded_with_machine_paths_as_file_names():
    t = table()
    assert t.clean_command('/usr/bin/python3 bench/x.py --merge /work/s/a.json b.json --out=/tmp/o.json '
                           '--data-dir ../shared/datasets') == \
        'python3 bench/x.py --merge a.json b.json --out=o.json --data-dir ../shared/datasets'


# ---------------------------------------------------------------- protocol files

def stat(v):
    return {'mean': statistics.mean(v), 'std': statistics.stdev(v) if len(v) > 1 else 0.0, 'n': len(v)}


def paired(a, b, names=('base', 'proex')):
    """As bench/reproduce.py's summaries: each arm's stat, b - a and the paired t-test p."""
    return {names[0]: stat(a), names[1]: stat(b), 'diff': statistics.mean(b) - statistics.mean(a),
            'p_paired_t': float(stats.ttest_rel(b, a).pvalue)}


def protocol_file(base, proex):
    """A bench/reproduce.py file with final runs of the given (best epoch, test R@20) per seed."""
    runs = {}
    for arm, cfg, values in (('base', '', base), ('proex', '--proex', proex)):
        for s, (best, r20) in enumerate(values, 1):
            runs[f'final|{arm}|{cfg}|{s}'] = {'best_epoch': best, 'best_val_recall20': r20 + .01,
                                             'test': {'recall@20': r20, 'ndcg@20': r20 / 2},
                                             'code': {'commit': '0123456789abcdef', 'dirty': s == 2}}
    r20 = {arm: [v[1] for v in values] for arm, values in (('base', base), ('proex', proex))}
    return {'model': 'lightgcn', 'dataset': 'ml100k', 'grids': {'base': ['', '--reg 1e-5'], 'proex': ['--proex']},
            'chosen': {'base': '', 'proex': '--proex'}, 'runs': runs,
            'command': '/usr/bin/python3 bench/reproduce.py --model lightgcn --data-dir /somewhere/data --defaults '
                       '--out bench/results/protocol_ml100k_lightgcn.json',
            'summary': {'recall@20': paired(r20['base'], r20['proex']),
                        'ndcg@20': paired([v / 2 for v in r20['base']], [v / 2 for v in r20['proex']]),
                        'best_epoch_le_30': {arm: sum(b <= 30 for b, _ in v) for arm, v in (('base', base),
                                                                                           ('proex', proex))}}}


def test_pending_files_do_not_break_the_tables(tmp_path):
    t = table()
    empty = t.build(tmp_path)  # nothing there yet: every table says pending
    assert '* `protocol_ml100k_lightgcn.json`: pending (missing or still being written).' in empty
    assert '`timing.json`: pending' in empty and '`same_numbers.json`: pending' in empty
    assert '| LightGCN | pending | pending | pending |' in t.show(tmp_path, 'readme_summary')

    done = protocol_file([(12, .30), (90, .31), (120, .32)], [(150, .33), (27, .20), (160, .34)])
    (tmp_path / 'protocol_ml100k_lightgcn.json').write_text(json.dumps(done))
    (tmp_path / 'protocol_ml100k_gccf.json').write_text(json.dumps(done)[:1000])  # half written
    stale = dict(done, runs={k: v for k, v in done['runs'].items() if not k.endswith('|3')})
    (tmp_path / 'protocol_ml100k_simgcl.json').write_text(json.dumps(stale))  # summary of older runs
    text = t.build(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith('| LightGCN | 3 |'))
    assert row.startswith('| LightGCN | 3 | 2 / 1 | `(defaults)` | 0.3100 ± 0.0100 | `--proex` | 0.2900 ± 0.0781 | ')
    assert row.endswith('| 1 / 1 | 0123456, 0123456+ |')  # best epoch <= 30 per arm; the commits, '+' if dirty
    assert ('| `protocol_ml100k_lightgcn.json` | `python3 bench/reproduce.py --model lightgcn --data-dir data '
            '--defaults --out bench/results/protocol_ml100k_lightgcn.json` | 0123456, 0123456+ |') in text
    assert '* `protocol_ml100k_gccf.json`: pending (missing or still being written).' in text
    assert ('* `protocol_ml100k_simgcl.json`: pending (its summary is not that of its runs yet; '
            '2 base, 2 ProEx runs).') in text
    assert '| LightGCN | pending | 0.3100 → 0.2900 (p ' in '\n'.join(t.show(tmp_path, 'readme_summary'))


def test_views_eq7_and_eq11_pair_with_proex_on_the_same_seeds(tmp_path):
    t = table()
    r = protocol_file([(60, .30), (90, .31), (120, .32)], [(150, .33), (60, .20), (160, .34)])
    proex = {1: .33, 2: .20, 3: .34}
    for s, v in ((1, .31), (2, .25)):  # --align-fused on seeds 1 and 2
        r['runs'][f'fused|{s}'] = {'best_val_recall20': v + .01, 'test': {'recall@20': v, 'ndcg@20': v / 3}}
    r['summary']['views_recall@20'] = {'all': stat(list(proex.values()))}
    for k, values in (('0', [.32, .21, .33]), ('3', [.29, .18, .30])):
        r['summary']['views_recall@20'][k] = dict(stat(values), vs_chosen=paired(list(proex.values()), values,
                                                                                 ('proex', 'variant')))
    r['summary']['eq7'] = {'printed': {'is_chosen': True}}
    for k, values in (('infonce', [.30, .22, .31]), ('uniformity', [.28, .19, .27])):
        r['summary']['eq7'][k] = {'is_chosen': False, 'vs_chosen': paired(list(proex.values()), values,
                                                                         ('proex', 'variant'))}
        for s, v in enumerate(values, 1):
            r['runs'][f'eq7|{k}|{s}'] = {'best_val_recall20': v - .01, 'test': {'recall@20': v}}
    (tmp_path / 'protocol_ml100k_lightgcn.json').write_text(json.dumps(r))
    row = lambda name: t.show(tmp_path, name, 'ml100k')[2]

    fused = {'val': ({1: .34, 2: .21}, {1: .32, 2: .26}), 'R@20': ({1: .33, 2: .20}, {1: .31, 2: .25}),
             'N@20': ({1: .33 / 2, 2: .10}, {1: .31 / 3, 2: .25 / 3})}
    assert row('eq11') == '| LightGCN | 2 | `--proex` | ' + ' | '.join(
        f'{t.ms(p)} | {t.ms(f)} | {t.pval(t.paired_p(p, f))}' for p, f in fused.values()) + ' |'
    assert row('views').startswith('| LightGCN | 0 (OP) | 0.2867 ± 0.0666 (n=3) | 0.2900 ± 0.0781 | -0.0033 | ')
    val = {1: .33 + .01, 2: .21, 3: .35}, {'infonce': {1: .29, 2: .21, 3: .30}, 'uniformity': {1: .27, 2: .18, 3: .26}}
    assert row('eq7') == ('| LightGCN | `--proex` | 0.2900 ± 0.0781 (n=3); val 0.3000 | = chosen | ' + ' | '.join(
        f"{t.ms(r['summary']['eq7'][k]['vs_chosen']['variant'], n=True)}, "
        f"{r['summary']['eq7'][k]['vs_chosen']['diff']:+.4f} (p {t.pval(r['summary']['eq7'][k]['vs_chosen']['p_paired_t'])}); "
        f"val {statistics.mean(v.values()):.4f} (p {t.pval(t.paired_p(val[0], v))})" for k, v in val[1].items()) + ' |')
    assert '### Eq. 7 in three forms' in t.build(tmp_path).split('\n## 3.')[1].split('\n## 4.')[0]  # section 3, with its text


def test_align_cost_and_first_runs(tmp_path):
    t = table()
    assert '| LightGCN | pending | pending |' in t.show(tmp_path, 'readme_timings')
    code = {'commit': '0123456789abcdef', 'dirty': False}
    (tmp_path / 'align_cost.json').write_text(json.dumps({
        'sec_per_epoch_median': {'0': 1.2, '0.1': 1.5}, 'ratio': 1.25, 'git': code,
        'command': 'python bench/align_cost.py --rounds 3'}))
    (tmp_path / 'first_runs.json').write_text(json.dumps({
        'git': code, 'command': 'python bench/first_runs.py --models lightgcn',
        'runs': {'python lightgcn.py': {'wall_s': 31.2, 'cpu_s': 30.1, 'epochs': 45, 'test_recall@20': 0.1234},
                 'python lightgcn.py --proex': {'wall_s': 130.0, 'cpu_s': 128.4, 'epochs': 60, 'test_recall@20': 0.2345}}}))
    cmds = '\n'.join(t.show(tmp_path, 'commands', 'align_cost.json', 'first_runs.json', 'mlp_floor.json'))
    assert '| `align_cost.json` | `python bench/align_cost.py --rounds 3` | 0123456 |' in cmds
    assert '| `first_runs.json` | `python bench/first_runs.py --models lightgcn` | 0123456 |' in cmds
    assert cmds.endswith('\n\n* `mlp_floor.json`: pending (missing or still being written).')
    first = t.show(tmp_path, 'first_runs')
    assert '| `python lightgcn.py --proex` | 130.0 | 128.4 | 60 | 0.2345 |' in first
    assert first[-1].startswith('Not in the file yet: `python gccf.py`, `python gccf.py --proex`, ')
    timings = t.show(tmp_path, 'readme_timings')
    assert '| LightGCN | 31 s | 2.2 min |' in timings and '| GCCF | pending | pending |' in timings


def book_file(r20, best, dirty=False):
    """A bench/book.py file for LightGCN: one run validated every 3 epochs, stopped 60 epochs after its best."""
    history = [{'epoch': e, 'train_s': 6.0, 'eval_s': 6.0 if e % 3 == 0 else None} for e in range(1, best + 61)]
    mean = {'recall@10': r20 / 2, 'recall@20': r20, 'ndcg@10': r20 / 3, 'ndcg@20': r20 / 2}
    return json.dumps({'model': 'lightgcn', 'seeds': '2023', 'test_mean': mean, 'best_epochs': [best],
                       'paper': {'recall@20': 0.1411, 'ndcg@20': 0.0856}, 'runs': [{'history': history}],
                       'git': {'commit': 'abcdef0123', 'dirty': dirty},
                       'command': "python bench/book.py --model lightgcn --extra '--threads 1'"})


def test_book_and_the_earlier_book_rows(tmp_path):
    t = table()
    (tmp_path / 'lightgcn_book.json').write_text(book_file(0.1439, 393, dirty=True))
    (tmp_path / 'book_earlier').mkdir()
    (tmp_path / 'book_earlier' / 'lightgcn_book.json').write_text(book_file(0.1410, 224))
    book = t.show(tmp_path, 'book')  # (453 epochs + 151 validations) x 6 s = 60.4 min
    assert ("| LightGCN | `python bench/book.py --model lightgcn --extra '--threads 1'` | 2023 | 0.0720 | 0.1439 | "
            '0.0480 | 0.0720 | 0.1411 | 0.0856 | 393 | 60 | abcdef0+ |') in book
    assert book[-1] == '* `cvga_book.json`: pending (missing or still being written).'
    assert t.show(tmp_path, 'book_earlier')[2] == \
        '| LightGCN | 0.1410 | 0.1439 | +0.0029 | 0.0705 | 0.0720 | 224 | 393 |'
