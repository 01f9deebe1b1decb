"""How each model file wires ProEx in (Alg. 1 in training, Alg. 2 at inference), and the
Dirichlet draws of Eq. 10 against their closed-form variance.

Every model runs main() for one epoch on a small synthetic dataset (data.make_synthetic with
200 users, 100 items, 16-wide profile views) with eval.TrainLog replaced by a recorder, so no
evaluation runs: the recorder hands back the trained modules and make_score_fn.
  * training (Alg. 1): the base model's parameters after one epoch depend on the profile
    views, and the profile mapping f_psi is trained;
  * inference (Alg. 2): the scores equal the base model's with the mean of the K mapped
    profiles added (to z_u and z_i; to mu for the generative models), recomputed here;
  * --shared-mixing reaches the objective and its Dirichlet draw;
  * dirichlet_weights: per-coordinate variance (K-1) / (K^2 (K alpha + 1)).
Run: python -m pytest -q tests/test_wiring.py
"""
import importlib

import numpy as np
import pytest
import torch

import data as D
import proex_core as P

DISCRIMINATIVE = ('lightgcn', 'gccf', 'simgcl')
GENERATIVE = ('multvae', 'ldiffrec', 'cvga')
COMMON = ['--dataset', 'synthetic', '--epochs', '1', '--threads', '1', '--device', 'cpu']
# small sizes per model; --reg 0: no L2 gradient reaches f_psi, only the objective's
SIZES = {
    'lightgcn': ['--dim', '16', '--layers', '2', '--batch', '256', '--reg', '0'],
    'gccf':     ['--dim', '16', '--layers', '2', '--batch', '256', '--reg', '0'],
    'simgcl':   ['--dim', '16', '--layers', '2', '--batch', '256', '--reg', '0'],
    'multvae':  ['--dim', '16', '--hidden', '32', '--batch', '64'],
    'ldiffrec': ['--latent-dim', '16', '--mlp-dims', '16', '--emb-size', '4', '--batch', '64'],
    'cvga':     ['--dim', '16', '--batch', '64'],
}
N_USERS, N_ITEMS = 200, 100


class RecordingLog:
    """Stands in for eval.TrainLog: no validation, no test split; test() returns what the
    checks need (the trained modules, make_score_fn, the data and the per-epoch losses)."""

    def __init__(self, args, data, device):
        self.args, self.data, self.losses = args, data, []

    def epoch(self, epoch, loss, seconds, modules, make_score_fn=None):
        self.losses.append(loss)
        return False

    def test(self, modules, make_score_fn):
        return {'args': self.args, 'data': self.data, 'losses': self.losses,
                'modules': modules, 'make_score_fn': make_score_fn}


def small_synthetic(reverse_views):
    """data.load_dataset's stand-in: a small synthetic set; reverse_views=True gives every
    user and item the profile views of another one (rows reversed), interactions unchanged."""
    def load(name, data_dir=None, profiles=False, views=None, seed=2023, **kw):
        ds = D.make_synthetic(seed, n_users=N_USERS, n_items=N_ITEMS, r=8, per_user=10, d_s=16)
        if reverse_views:
            ds = D.Dataset(ds.name, ds.train, ds.val, ds.test,
                           [v[::-1].copy() for v in ds.usr_prf], [v[::-1].copy() for v in ds.itm_prf])
        return D.select_views(ds, views)
    return load


_runs = {}


def run(name, extra=(), reverse_views=False, spies=None):
    """One epoch of <name>.main on the small set; returns the recorder's dict plus 'prof'
    (the profile module) and 'prof_init' (its parameters at construction). Cached unless
    `spies` ({attribute of proex_core: replacement}) is given."""
    key = (name, tuple(extra), reverse_views)
    if spies is None and key in _runs:
        return _runs[key]
    mod = importlib.import_module(name)
    made = []

    def recording(cls):
        class Recording(cls):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                made.append((self, [p.detach().clone() for p in self.parameters()]))
        return Recording

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mod, 'TrainLog', RecordingLog)
        mp.setattr(D, 'load_dataset', small_synthetic(reverse_views))
        mp.setattr(P, 'ProfileEncoder', recording(P.ProfileEncoder))
        mp.setattr(P, 'ProfileAggregator', recording(P.ProfileAggregator))
        for attr, fn in (spies or {}).items():
            mp.setattr(P, attr, fn)
        out = mod.main(mod.parse_args(COMMON + SIZES[name] + list(extra)))
    if made:
        out['prof'], out['prof_init'] = made[0]
    if spies is None:
        _runs[key] = out
    return out


def base_params(out):
    """The base model's parameters (every module but the profile one, which comes last)."""
    return [p.detach() for m in out['modules'][:-1] for p in m.parameters()]


# ---------------------------------------------------------------- training (Alg. 1)

@pytest.mark.parametrize('name', DISCRIMINATIVE + GENERATIVE)
def test_proex_training_uses_the_mapped_profiles(name):
    """Catches a --proex training step that ignores the profiles (e.g. plain BPR / the base
    ELBO with f_psi built but unused, or the mapped profiles detached from the objective)."""
    out = run(name, ['--proex'])
    assert np.isfinite(out['losses']).all()
    # 1) the profiles change what the base model learns: same seed and interactions, every
    #    entity given another one's profile views -> different base parameters after one epoch
    other = run(name, ['--proex'], reverse_views=True)
    assert any(not torch.equal(a, b) for a, b in zip(base_params(out), base_params(other))), \
        f'{name} --proex: base parameters do not depend on the profile views'
    # 2) the mapping f_psi (Eq. 6) is trained through the objective (no L2 on it here)
    prof = out['prof']
    assert prof is out['modules'][-1]
    changed = [not torch.equal(p.detach(), p0) for p, p0 in zip(prof.parameters(), out['prof_init'])]
    assert all(changed), f'{name} --proex: f_psi parameters unchanged by training: {changed}'


# ---------------------------------------------------------------- inference (Alg. 2)

@torch.no_grad()
def expected_scores(name, out, users, with_profiles=True):
    """Alg. 2 recomputed from the trained modules: the base vectors (z_u, z_i; or mu) plus
    the mean over the K mapped profiles (without it when with_profiles=False). [B, I]."""
    mod, data, args, modules = importlib.import_module(name), out['data'], out['args'], out['modules']
    modules.eval()
    prof = modules[-1]
    if name in DISCRIMINATIVE:
        A = D.norm_adj(data.train, self_loops=(name == 'gccf'))
        z_u, z_i = modules[0].propagate(A)                                   # [U, d], [I, d]
        if with_profiles:
            z_u = z_u + prof.f_psi(prof.c_users).mean(dim=0)                 # [K, U, d] -> [U, d]
            z_i = z_i + prof.f_psi(prof.c_items).mean(dim=0)
        return z_u[users] @ z_i.T
    x = D.dense_rows(data.train, users)                                      # [B, I]
    if name == 'multvae':
        mu, _ = modules[0].encode(x)
    elif name == 'cvga':
        mu, _ = modules[0].encode(D.dense_rows(mod.normalized_R(data.train), users))
    else:
        _, mu, _ = modules[0].encode(x)
    if with_profiles:
        mu = mu + prof(users, x)[0].mean(dim=0)                              # mean of K means
    if name == 'ldiffrec':
        diffusion = mod.GaussianDiffusion(args.steps, args.noise_scale, args.noise_min, args.noise_max)
        return modules[0].decode(diffusion.p_sample(modules[1], mu))
    return modules[0].decode(mu)


@pytest.mark.parametrize('name', DISCRIMINATIVE + GENERATIVE)
def test_proex_inference_adds_the_mean_profile(name):
    """Catches inference that drops Alg. 2's profile term (mean of the K mapped profiles added
    to z_u and z_i, or to mu), adds it on one side only, or uses something other than the mean."""
    out = run(name, ['--proex'])
    users = torch.arange(N_USERS)
    with torch.no_grad():
        scores = out['make_score_fn']()(users)                               # [U, I]
    want = expected_scores(name, out, users)
    without = expected_scores(name, out, users, with_profiles=False)
    gap = (want - without).abs().max().item()
    assert gap > 1e-2, f'{name}: the profile term hardly changes the scores ({gap}); test too weak'
    err = (scores - want).abs().max().item()
    assert err < 1e-4 * max(1.0, want.abs().max().item()), \
        f'{name}: scores differ from Alg. 2 by {err} (dropping the term would differ by {gap})'


# ---------------------------------------------------------------- --shared-mixing

@pytest.mark.parametrize('name', GENERATIVE + DISCRIMINATIVE)
def test_shared_mixing_reaches_the_objective_and_its_draw(name):
    """Catches --shared-mixing not reaching the objective (switches not passed) or the
    objective ignoring it: one Dirichlet draw per environment [E, K] instead of per row."""
    objective = 'generative_objective' if name in GENERATIVE else 'discriminative_objective'
    real_obj, real_draw = getattr(P, objective), P.dirichlet_weights
    seen = []

    def spy_obj(*a, **k):
        seen.append(('objective', k.get('mixing') == 'shared'))
        return real_obj(*a, **k)

    def spy_draw(E, K, alpha, n=None, rng=None, device=None):
        theta = real_draw(E, K, alpha, n, rng, device)
        seen.append(('draw', n, tuple(theta.shape)))
        return theta

    spies = {objective: spy_obj, 'dirichlet_weights': spy_draw}
    for flags, shared in ((['--proex'], False), (['--proex', '--shared-mixing'], True)):
        seen.clear()
        run(name, flags + ['--envs', '3'], spies=spies)
        calls = [s for s in seen if s[0] == 'objective']
        draws = [s for s in seen if s[0] == 'draw']
        assert calls and all(s[1] is shared for s in calls), (flags, calls[:3])
        assert len(draws) == len(calls), (len(draws), len(calls))
        if shared:
            assert all(n is None and shape == (3, 4) for _, n, shape in draws), draws[:3]
        else:
            assert all(n is not None and shape == (3, n, 4) for _, n, shape in draws), draws[:3]


# ---------------------------------------------------------------- Eq. 10's concentration

def dirichlet_variance(K, alpha):
    """Var(theta_k) of Dir(alpha, ..., alpha): (K - 1) / (K^2 (K alpha + 1))."""
    return (K - 1) / (K ** 2 * (K * alpha + 1))


@pytest.mark.parametrize('alpha', [0.1, 1.0])
@pytest.mark.parametrize('shared', [True, False], ids=['shared', 'per_entity'])
def test_dirichlet_weights_variance_follows_alpha(alpha, shared):
    """Catches dirichlet_weights ignoring alpha (or drawing one weight vector for all entities)."""
    n, K = 20000, 4
    torch.manual_seed(11)                                 # rng=None: seeded from torch, as the models
    theta = P.dirichlet_weights(n, K, alpha) if shared else P.dirichlet_weights(1, K, alpha, n)[0]
    theta = theta.double().numpy()                        # [n, K], n draws
    assert theta.shape == (n, K)
    assert np.allclose(theta.sum(1), 1.0, atol=1e-5) and (theta >= 0).all()
    want = dirichlet_variance(K, alpha)
    centred = theta - theta.mean(0)
    var = (centred ** 2).mean(0)                          # [K]
    # standard error of a sample variance: sqrt((m4 - var^2) / n), m4 the 4th central moment
    se = np.sqrt(((centred ** 4).mean(0) - var ** 2) / n)
    assert (np.abs(var - want) < 5 * se).all(), (alpha, var, want, se)
    assert (np.abs(theta.mean(0) - 1 / K) < 5 * np.sqrt(want / n)).all()
