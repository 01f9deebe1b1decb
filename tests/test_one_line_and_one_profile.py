"""Bad values are one line; ProEx never runs on one profile by accident; the single-profile
baselines (RLMRec-C, DMRec-M) are what their flags say; layouts and variances are checked.
Run: python -m pytest -q tests/test_one_line_and_one_profile.py
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval as E
import proex_core as P

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('PROEX_DATA', REPO.parent / 'shared' / 'datasets')).absolute()
ML100K = DATA / 'ml100k'
needs_ml100k = pytest.mark.skipif(not (ML100K / 'trn_mat.pkl').exists(), reason='no ml100k data')


def cli(*argv, cwd=REPO):
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('script,argv,flag', [
    ('lightgcn.py', ['--epochs', '0'], '--epochs'),
    ('lightgcn.py', ['--lr', 'abc'], '--lr'),
    ('lightgcn.py', ['--epoch', '5'], '--epoch'),
    ('lightgcn.py', ['--device', 'gpu'], '--device'),
    ('lightgcn.py', ['--threads', '-1'], '--threads'),
    ('lightgcn.py', ['--out', '/nonexistent/dir/r.json'], '--out'),
    ('lightgcn.py', ['--out', '/tmp'], '--out'),
    ('lightgcn.py', ['--proex', '--alpha', '-1'], '--alpha'),
    ('gccf.py', ['--proex', '--envs', '0'], '--envs'),
    ('multvae.py', ['--proex', '--beta', '2'], '--beta'),
    ('multvae.py', ['--dmrec', '--profiles', '0,1'], '--profiles'),
    ('simgcl.py', ['--proex', '--rlmrec-con'], '--rlmrec-con'),
    ('data.py', ['--bogus'], '--bogus'),
    ('bench/reproduce.py', ['--model', 'nope', '--out', 'x.json'], '--model'),
])
def test_every_bad_value_is_one_line(script, argv, flag):
    p = cli(script, *argv)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1, p.stderr
    assert lines[0].startswith('error:') and flag in lines[0] and '--help' in lines[0]
    assert 'usage:' not in p.stderr and 'epoch' not in p.stdout


@needs_ml100k
def test_proex_on_the_op_alone_stops_before_training(tmp_path):
    """A folder with only the OP embeddings (as RLMRec's archive ships book): --proex is an
    error naming the files a ProEx run needs and profiles.py; --profiles 0 is a choice."""
    folder = tmp_path / 'ml100k'
    folder.mkdir()
    for f in ('trn_mat.pkl', 'val_mat.pkl', 'tst_mat.pkl', 'usr_emb_np.pkl', 'itm_emb_np.pkl'):
        shutil.copy(ML100K / f, folder / f)
    p = cli('lightgcn.py', '--proex', '--dataset', 'ml100k', '--data-dir', str(tmp_path),
            '--epochs', '1')
    assert p.returncode != 0 and 'epoch' not in p.stdout
    assert 'usr_emb_np_1.pkl (missing)' in p.stderr and 'usr_emb_np.pkl (present)' in p.stderr
    assert 'python profiles.py --dataset ml100k' in p.stderr and 'BlueGhostYi/ProRec' in p.stderr
    p = cli('lightgcn.py', '--proex', '--profiles', '0', '--dataset', 'ml100k', '--data-dir',
            str(tmp_path), '--epochs', '1')
    assert p.returncode == 0, p.stderr


def test_the_paper_datasets_need_k_4(tmp_path):
    import data as D
    folder = tmp_path / 'steam'
    folder.mkdir()
    for side in ('usr', 'itm'):
        for name in (f'{side}_emb_np.pkl', f'{side}_emb_np_1.pkl'):
            (folder / name).write_bytes(b'')
    with pytest.raises(D.DataError, match=r"K = 2 .* at least 4 \(the paper's K = 4\)"):
        D.check_enough_views(folder, 'steam')
    D.check_enough_views(folder, 'my-folder')  # elsewhere K >= 2 is ProEx


def test_rlmrec_con_resolves_to_rlmrecs_values():
    import lightgcn
    a = lightgcn.parse_args(['--rlmrec-con', '--dataset', 'steam'])
    assert (a.rlmrec_con, a.proex, a.kd_weight, a.kd_temp, a.profiles) == (True, False, 1e-3, 0.1, '0')
    a = lightgcn.parse_args(['--rlmrec-con', '--profiles', '2'])
    assert (a.rlmrec_con, a.kd_weight, a.kd_temp, a.profiles) == (True, 1e-2, 0.2, '2')


@pytest.mark.parametrize('name', ['lightgcn', 'gccf', 'simgcl'])
def test_rlmrec_con_changes_the_loss_and_its_weight_acts(name):
    """--rlmrec-con trains with the InfoNCE term: the first epoch's loss differs from the
    base model's, and differs again with another --kd-weight."""
    import importlib
    mod = importlib.import_module(name)
    loss = lambda *flags: mod.main(mod.parse_args(['--epochs', '1', '--seed', '3', *flags]))['history'][0]['loss']  # noqa: E731
    base, kd, heavier = loss(), loss('--rlmrec-con'), loss('--rlmrec-con', '--kd-weight', '0.5')
    assert len({base, kd, heavier}) == 3


def test_rlmrec_con_loss_by_hand():
    """RLMRec's kd_loss: users against all users' profiles, items against the batch's."""
    torch.manual_seed(0)
    B, U, d, tau = 4, 6, 3, 0.2
    z_u, z_i, z_j = torch.randn(B, d), torch.randn(B, d), torch.randn(B, d)
    c_users = torch.randn(1, U, d)
    users = torch.tensor([0, 2, 2, 5])
    c_u, c_i, c_j = c_users[:, users], torch.randn(1, B, d), torch.randn(1, B, d)

    def nce(z, c, c_all):
        n = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
        z, c, c_all = n(z), n(c), n(c_all)
        return sum(float(torch.log(torch.exp(z[b] @ c_all.T / tau).sum()) - z[b] @ c[b] / tau)
                   for b in range(z.shape[0]))
    want = (nce(z_u, c_u[0], c_users[0]) + nce(z_i, c_i[0], c_i[0]) + nce(z_j, c_j[0], c_j[0])) / B
    items, negs = torch.tensor([1, 1, 2, 3]), torch.tensor([4, 5, 4, 4])  # repeats, as in a batch
    c_i, c_j = c_i[:, [0, 0, 2, 3]], c_j[:, [0, 1, 0, 0]]  # a repeated id has one profile
    z_u, z_i, z_j = z_u[[0, 1, 1, 3]], z_i[[0, 0, 2, 3]], z_j[[0, 1, 0, 0]]
    want = (nce(z_u, c_u[0], c_users[0]) + nce(z_i, c_i[0], c_i[0]) + nce(z_j, c_j[0], c_j[0])) / B
    got = P.rlmrec_con_loss(z_u, z_i, z_j, c_u, c_i, c_j, c_users, users, items, negs, tau)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_dmrec_is_the_documented_flag_combination():
    import multvae
    a = multvae.parse_args(['--dmrec', '--beta', '0.2'])
    assert (a.proex, a.envs, a.lambda1, a.lambda2, a.lambda3, a.align_fused, a.profile_input,
            a.profiles, a.beta) == (True, 1, 1.0, 0.0, 0.0, True, 'dropped-sum', '0', 0.2)
    with pytest.raises(SystemExit, match='--dmrec sets lambda2 0'):
        multvae.parse_args(['--dmrec', '--lambda2', '0.3'])


def test_a_transposed_profile_stack_names_the_fix():
    B, K, d = 1024, 4, 64
    z = torch.randn(B, d)
    c = torch.randn(B, K, d)  # [B, K, d] where [K, B, d] belongs
    with pytest.raises(ValueError, match=r'c_u: .*transposed layout \[B, K, d\] with K = 4; '
                                         r'pass c_u.transpose\(0, 1\)'):
        P.discriminative_objective(z, z, z, c, c.transpose(0, 1), c.transpose(0, 1))
    with pytest.raises(ValueError, match=r'c: .*with K = 4; pass c.transpose'):
        P.add_mean_profile(z, c)
    assert P.add_mean_profile(z, c.transpose(0, 1)).shape == (B, d)


def test_nll_fn_must_return_one_value_per_row():
    mu, logvar = torch.randn(5, 3), torch.zeros(5, 3)
    with pytest.raises(ValueError, match=r'nll_fn: expected one loss per row, shape \[5\]'):
        P.generative_objective(lambda z: z.sum(), mu, logvar, torch.randn(2, 5, 3),
                               torch.zeros(2, 5, 3))


@pytest.mark.parametrize('call', [
    lambda v: P.fuse_gaussians(torch.zeros(2, 3), v, torch.zeros(2, 3), torch.ones(2, 3)),
    lambda v: P.kl_diag_gaussians(torch.zeros(2, 3), v, torch.zeros(2, 3), torch.ones(2, 3)),
    lambda v: P.sample_gaussian(torch.zeros(2, 3), v),
    lambda v: P.distribution_alignment(torch.zeros(2, 3), v, torch.zeros(2, 3), torch.ones(2, 3), 0.5),
])
def test_helpers_that_take_variances_refuse_log_variances(call):
    logvar = torch.full((2, 3), -1.0)  # a log-variance passed where a variance belongs
    with pytest.raises(ValueError, match='variances sigma.2 >= 0, not log-variances'):
        call(logvar)
    call(logvar.exp())


def test_one_first_run_time_everywhere():
    """lightgcn.py's docstring, its --help and the README give the first-run time of
    bench/results/first_runs.json."""
    import json
    runs = json.loads((REPO / 'bench/results/first_runs.json').read_text())
    seconds = runs['runs']['python lightgcn.py']['wall_s']
    said = f'~{round(seconds)} s'
    import lightgcn
    help_text = ' '.join(cli('lightgcn.py', '--help').stdout.split())
    assert said in lightgcn.__doc__ and said in help_text
    assert said in (REPO / 'README.md').read_text()


@pytest.mark.parametrize('name', ['gccf', 'lightgcn', 'simgcl'])
def test_base_model_reads_no_profile_where_the_data_has_views(name, monkeypatch):
    """`synthetic` always carries K = 4 views; without --proex or --rlmrec-con the base model
    must train alone (BPR), not build a profile encoder and run ProEx's objective."""
    import importlib
    mod = importlib.import_module(name)

    def refuse(*args, **kwargs):
        raise AssertionError(f'{name}.py without --proex built a ProfileEncoder')
    monkeypatch.setattr(mod.P, 'ProfileEncoder', refuse)
    monkeypatch.setattr(mod.P, 'discriminative_objective', refuse)
    r = mod.main(mod.parse_args(['--dataset', 'synthetic', '--epochs', '1', '--threads', '1']))
    assert r['history'][0]['loss'] < 2.0  # BPR (+ SimGCL's InfoNCE at 0.1) from ln 2, not ProEx's sum over E
