"""Bad input through the command line of the six model files: every case ends with a
non-zero exit and exactly one `error:` line that names the flag or file (and what to do),
never a traceback and never metrics of a run that should not have happened.
The scripts run in-process (runpy, as `python lightgcn.py ...` would) on tiny datasets
written to tmp folders; two cases also run as real processes to check the exit code and
stderr as a shell sees them.
Run: python -m pytest -q tests/test_bad_input.py
"""
import json
import os
import pickle
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import data as D

pytestmark = pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')
REPO = Path(__file__).resolve().parents[1]


def dump(obj, path):
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def write_toy(folder, n_users=30, n_items=25, K=4, d_s=8, seed=0):
    """An RLMRec-style folder: three coo splits (every user has train and held-out items)
    and K profile views per side."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    part = rng.integers(0, 6, size=(n_users, n_items))           # 0-2 train, 3 val, 4 test
    part[:, :3], part[:, 3], part[:, 4] = 0, 3, 4                 # nobody is left empty
    for s, keep in zip(D.SPLITS, (part <= 2, part == 3, part == 4)):
        dump(sp.coo_matrix(keep.astype(np.float64)), folder / f'{s}_mat.pkl')
    for side, n in (('usr', n_users), ('itm', n_items)):
        for f in D.emb_files(folder, side, K=K):
            dump(rng.normal(size=(n, d_s)).astype(np.float32), f)
    return folder


def cli(script, *argv, capsys, monkeypatch):
    """Run `python <script> argv...` in this process; returns (exit code, all output).
    An exception other than SystemExit (what would print a traceback) fails the test."""
    monkeypatch.setattr(sys, 'argv', [script, *argv])
    code, msg = 0, ''
    try:
        runpy.run_path(str(REPO / script), run_name='__main__')
    except SystemExit as e:                      # a string code is printed to stderr
        code, msg = (1, e.code + '\n') if isinstance(e.code, str) else (e.code or 0, '')
    out = capsys.readouterr()
    return code, out.out + out.err + msg


def assert_one_error(code, out, *names):
    """Non-zero exit, no traceback, exactly one `error:` line, naming every `names`."""
    assert code != 0, out
    assert 'Traceback' not in out, out
    errors = [line for line in out.splitlines() if 'error:' in line]
    assert len(errors) == 1, out
    for name in names:
        assert name in errors[0], errors[0]
    assert 'test recall@20' not in out and 'epoch    1' not in out, out   # nothing ran


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv('PROEX_DATA', str(tmp_path))
    return write_toy(tmp_path / 'toy')


# ---------------------------------------------------------------- flags: ranges

FLAG_CASES = [  # (script, argv, the flag the error line must name, a word of the fix)
    ('lightgcn.py', ['--dim', '0'], '--dim', '>= 1'),
    ('lightgcn.py', ['--dim', '-1'], '--dim', '>= 1'),
    ('lightgcn.py', ['--keep-rate', '0'], '--keep-rate', '(0, 1]'),
    ('lightgcn.py', ['--keep-rate', '2'], '--keep-rate', '(0, 1]'),
    ('lightgcn.py', ['--layers', '-1'], '--layers', '>= 0'),
    ('lightgcn.py', ['--proex', '--released', '--layers', '0'], '--layers', '>= 1'),
    ('lightgcn.py', ['--reg', '-1'], '--reg', '>= 0'),
    ('lightgcn.py', ['--patience', '-1'], '--patience', '>= 1'),
    ('lightgcn.py', ['--patience', '0'], '--patience', '>= 1'),
    ('lightgcn.py', ['--epochs', '0'], '--epochs', '>= 1'),
    ('lightgcn.py', ['--batch', '0'], '--batch', '>= 1'),
    ('lightgcn.py', ['--batch', '-1'], '--batch', '>= 1'),
    ('lightgcn.py', ['--eval-every', '0'], '--eval-every', '>= 1'),
    ('lightgcn.py', ['--threads', '-1'], '--threads', '>= 0'),
    ('lightgcn.py', ['--device', 'tpu'], '--device', 'cpu'),
    ('lightgcn.py', ['--lr', '-1'], '--lr', '> 0'),
    ('lightgcn.py', ['--lr', 'nan'], '--lr', 'finite'),
    ('lightgcn.py', ['--seed', '-1'], '--seed', '[0,'),
    ('lightgcn.py', ['--proex', '--lambda1', '-1'], '--lambda1', '>= 0'),
    ('lightgcn.py', ['--proex', '--lambda2', '-1'], '--lambda2', '>= 0'),
    ('lightgcn.py', ['--proex', '--lambda3', '-1'], '--lambda3', '>= 0'),
    ('lightgcn.py', ['--proex', '--alpha', '0'], '--alpha', '> 0'),
    ('lightgcn.py', ['--proex', '--alpha', '-1'], '--alpha', '> 0'),
    ('lightgcn.py', ['--proex', '--envs', '0'], '--envs', '>= 1'),
    ('lightgcn.py', ['--proex', '--envs', '-1'], '--envs', '>= 1'),
    ('lightgcn.py', ['--proex', '--tau', '0'], '--tau', '> 0'),
    ('gccf.py', ['--layers', '-1'], '--layers', '>= 0'),
    ('gccf.py', ['--dim', '0'], '--dim', '>= 1'),
    ('simgcl.py', ['--cl-tau', '0'], '--cl-tau', '> 0'),
    ('simgcl.py', ['--eps', '-1'], '--eps', '>= 0'),
    ('simgcl.py', ['--cl', '-0.5'], '--cl', '>= 0'),
    ('multvae.py', ['--dim', '0'], '--dim', '>= 1'),
    ('multvae.py', ['--dropout', '1'], '--dropout', '[0, 1)'),
    ('multvae.py', ['--proex', '--beta', '1.5'], '--beta', '[0, 1]'),
    ('cvga.py', ['--dim', '0'], '--dim', '>= 1'),
    ('cvga.py', ['--dropout', '-0.1'], '--dropout', '[0, 1)'),
    ('ldiffrec.py', ['--latent-dim', '0'], '--latent-dim', '>= 1'),
    ('ldiffrec.py', ['--mlp-dims', '300,0'], '--mlp-dims', '>= 1'),
    ('ldiffrec.py', ['--steps', '0'], '--steps', '>= 1'),
    ('ldiffrec.py', ['--lr-denoiser', '0'], '--lr-denoiser', '> 0'),
]


@pytest.mark.parametrize('script,argv,flag,fix', FLAG_CASES,
                         ids=[f'{c[0]}:{" ".join(c[1])}' for c in FLAG_CASES])
def test_flag_out_of_range(script, argv, flag, fix, toy, capsys, monkeypatch):
    code, out = cli(script, '--dataset', 'toy', '--threads', '1', *argv,
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, f'argument {flag}:', fix)


# ---------------------------------------------------------------- flags that do nothing

@pytest.mark.parametrize('script,argv,flag,fix', [
    ('lightgcn.py', ['--proex', '--beta', '0.9'], '--beta', 'unrecognized'),   # generative only
    ('gccf.py', ['--proex', '--beta', '0.9'], '--beta', 'unrecognized'),
    ('simgcl.py', ['--sum-of-samples'], '--sum-of-samples', 'unrecognized'),
    ('lightgcn.py', ['--proex', '--lambda1', '0', '--no-align'], '--no-align', 'lambda1 = 0'),
    ('lightgcn.py', ['--proex', '--released', '--no-align'], '--no-align', '--released'),
    ('lightgcn.py', ['--proex', '--released', '--envs', '5'], '--envs', '--released sets envs 3'),
    ('multvae.py', ['--proex', '--released', '--lambda2', '1'], '--lambda2', '--released sets'),
    ('multvae.py', ['--proex', '--beta', '1', '--no-align'], '--no-align', 'beta = 1'),
    ('lightgcn.py', ['--epoch', '1'], '--epoch', 'unrecognized'),     # not a prefix of --epochs
    ('multvae.py', ['--lambda', '1'], '--lambda', 'unrecognized'),
])
def test_flag_that_would_do_nothing(script, argv, flag, fix, toy, capsys, monkeypatch):
    code, out = cli(script, '--dataset', 'toy', '--threads', '1', *argv,
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, flag, fix)


def test_proex_flags_without_proex_are_named(toy, capsys, monkeypatch):
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1', '--epochs', '1',
                    '--envs', '5', '--no-var', capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and 'note: --envs, --no-var have no effect without --proex' in out


@pytest.mark.parametrize('out_arg,why', [('missing/r.json', 'does not exist'),
                                         ('.', 'is a folder')])
def test_out_checked_before_training(out_arg, why, toy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1', '--out', out_arg,
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, 'argument --out:', why)


# ---------------------------------------------------------------- data

def test_views_differ_between_sides(toy, capsys, monkeypatch):
    (toy / 'itm_emb_np_3.pkl').unlink()
    for script in ('lightgcn.py', 'multvae.py'):
        code, out = cli(script, '--dataset', 'toy', '--threads', '1', '--proex',
                        capsys=capsys, monkeypatch=monkeypatch)
        assert_one_error(code, out, 'itm_emb_np_3.pkl', '--profiles 0,1,2')


def test_embedding_overflows_float32(toy, capsys, monkeypatch):
    a = np.ones((25, 8))
    a[0, 0] = 1e300
    dump(a, toy / 'itm_emb_np_2.pkl')
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1', '--proex',
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, 'itm_emb_np_2.pkl', 'float32')


@pytest.mark.parametrize('missing', [['val'], ['val', 'tst'], ['trn']])
def test_dataset_folder_with_part_of_the_splits(missing, toy, capsys, monkeypatch):
    for s in missing:
        (toy / f'{s}_mat.pkl').unlink()
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1',
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, *[f'{s}_mat.pkl' for s in missing])


@pytest.mark.parametrize('script', ['lightgcn.py', 'multvae.py'])
def test_fewer_items_than_k(script, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('PROEX_DATA', str(tmp_path))
    write_toy(tmp_path / 'tiny', n_items=10)
    code, out = cli(script, '--dataset', 'tiny', '--threads', '1',
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, '10 items', 'K = 20')


@pytest.mark.parametrize('script', ['lightgcn.py', 'multvae.py'])
def test_empty_train_matrix(script, toy, capsys, monkeypatch):
    dump(sp.coo_matrix((30, 25)), toy / 'trn_mat.pkl')
    code, out = cli(script, '--dataset', 'toy', '--threads', '1',
                    capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, 'trn_mat.pkl', 'no interactions')


# ---------------------------------------------------------------- training

def test_diverged_run_fails_and_says_why(toy, tmp_path, capsys, monkeypatch):
    res = tmp_path / 'nan.json'
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1', '--reg', '1e38',
                    '--epochs', '3', '--out', str(res), capsys=capsys, monkeypatch=monkeypatch)
    assert_one_error(code, out, 'diverged', 'at epoch 1', str(res))
    r = json.loads(res.read_text())
    assert (r['stop_reason'], r['stop_epoch'], r['test']) == ('non-finite loss', 1, None)


def test_valid_run_result_says_why_it_stopped(toy, tmp_path, capsys, monkeypatch):
    import eval as E                                   # the module the script's TrainLog uses
    state = {'commit': '0123456789' * 4, 'dirty': False}
    monkeypatch.setattr(E, 'git_state', lambda: state)
    res = tmp_path / 'ok.json'
    code, out = cli('lightgcn.py', '--dataset', 'toy', '--threads', '1', '--epochs', '2',
                    '--out', str(res), capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and 'error:' not in out and 'stopped at epoch 2 (max epochs)' in out
    r = json.loads(res.read_text())
    assert r['stop_reason'] == 'max epochs' and r['argv'][1:5] == ['--dataset', 'toy', '--threads', '1']
    assert set(r['versions']) == {'python', 'torch', 'numpy', 'scipy'}
    assert r['wall_s'] >= r['test_eval_s'] > 0
    assert r['git'] == state                           # the code state goes into the result


# ---------------------------------------------------------------- as a shell sees it

@pytest.mark.parametrize('argv,names', [
    (['--batch', '0'], ['argument --batch:']),
    (['--dataset', 'toy', '--reg', '1e38', '--epochs', '3'], ['diverged']),
])
def test_real_process_exit_code_and_stderr(argv, names, toy, tmp_path):
    env = dict(os.environ, PROEX_DATA=str(tmp_path))
    p = subprocess.run([sys.executable, str(REPO / 'lightgcn.py'), '--threads', '1', *argv],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and 'Traceback' not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if 'error:' in line]
    assert len(errors) == 1 and all(n in errors[0] for n in names), p.stderr


def test_readme_says_seeded_runs_need_one_thread():
    text = (REPO / 'README.md').read_text()
    assert 'bit-identical' in text and '--threads 1' in text
