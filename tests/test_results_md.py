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
