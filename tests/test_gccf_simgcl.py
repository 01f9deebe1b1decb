"""Tests of gccf.py and simgcl.py: propagation, noise and InfoNCE against hand computations
on tiny tensors, and short training runs (base and --proex) on `synthetic`.
Run: python -m pytest -q tests/test_gccf_simgcl.py
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import data as D
import gccf
import simgcl

# 3 users x 4 items; user 2 and item 3 have one interaction each
R = sp.csr_matrix(np.array([[1, 1, 0, 0],
                            [0, 1, 1, 0],
                            [0, 0, 0, 1]], dtype=np.float32))


def dense_bipartite(R):
    U, I = R.shape
    A = np.zeros((U + I, U + I))
    A[:U, U:], A[U:, :U] = R.toarray(), R.toarray().T
    return A


# ---------------------------------------------------------------- GCCF

def test_gccf_propagation_equals_dense_concat_with_self_loops():
    torch.manual_seed(0)
    model = gccf.GCCF(3, 4, d=2, layers=2)
    A_I = dense_bipartite(R) + np.eye(7)                                   # A + I
    d = A_I.sum(1) ** -0.5                                                 # (D + I)^-1/2
    A_self = torch.tensor(d[:, None] * A_I * d[None, :], dtype=torch.float32)
    E0 = model.E0.detach()
    expected = torch.cat([E0, A_self @ E0, A_self @ A_self @ E0], dim=1)   # concat[E^0, E^1, E^2]
    z_u, z_i = model.propagate(D.norm_adj(R, self_loops=True))
    assert model.out_dim == 6 and z_u.shape == (3, 6) and z_i.shape == (4, 6)
    assert torch.allclose(torch.cat([z_u, z_i]), expected, atol=1e-6)


def test_gccf_defaults_and_overrides():
    a = gccf.parse_args(['--dataset', 'book'])
    assert (a.layers, a.reg, a.dim) == (2, 1e-6, 32)
    assert gccf.parse_args(['--dataset', 'steam', '--layers', '3']).layers == 3


# ---------------------------------------------------------------- SimGCL

def test_simgcl_noise_keeps_sign_and_has_norm_eps_per_row():
    torch.manual_seed(1)
    E = torch.randn(50, 8)
    for eps in (0.9, 0.2):
        noise = simgcl.perturb(E, eps) - E                                  # [50, 8]
        assert torch.equal(torch.sign(noise), torch.sign(E))               # same orthant
        assert torch.allclose(noise.norm(dim=1), torch.full((50,), eps), atol=1e-5)


def test_simgcl_clean_view_is_lightgcn_sum_including_layer0():
    torch.manual_seed(2)
    model = simgcl.SimGCL(3, 4, d=2, layers=3)
    A = dense_bipartite(R)
    d = A.sum(1) ** -0.5
    A_hat = torch.tensor(d[:, None] * A * d[None, :], dtype=torch.float32)
    E0 = model.E0.detach()
    expected = E0 + A_hat @ E0 + A_hat @ A_hat @ E0 + A_hat @ A_hat @ A_hat @ E0
    z_u, z_i = model.propagate(D.norm_adj(R))
    assert torch.allclose(torch.cat([z_u, z_i]), expected, atol=1e-6)
    z_u1, _ = model.propagate(D.norm_adj(R), eps=0.9)                      # a noisy view differs
    assert not torch.allclose(z_u1, z_u)


def test_simgcl_noisy_view_noise_feeds_next_layer():
    """Noise at layer l is propagated by layer l+1: fix the noise by seeding, rebuild by hand."""
    model = simgcl.SimGCL(3, 4, d=2, layers=2)
    A_hat = D.norm_adj(R)
    torch.manual_seed(3)
    z_u, z_i = model.propagate(A_hat, eps=0.5)
    torch.manual_seed(3)
    E0 = model.E0.detach()
    E1 = simgcl.perturb(A_hat @ E0, 0.5)
    E2 = simgcl.perturb(A_hat @ E1, 0.5)
    assert torch.allclose(torch.cat([z_u, z_i]), E0 + E1 + E2, atol=1e-6)


@pytest.mark.parametrize('chunk', [256, 2])                              # one chunk, or three
def test_simgcl_info_nce_equals_loop(chunk):
    torch.manual_seed(4)
    z1 = torch.randn(5, 3, requires_grad=True)                             # view 1, all entities
    z2 = torch.randn(5, 3, requires_grad=True)                             # view 2, all entities
    ids = torch.tensor([0, 3, 3, 1, 4, 3])                                 # batch with repeats
    tau = 0.2
    got = 3.0 * simgcl.view_info_nce(z1, z2, ids, tau, chunk=chunk)             # an outer weight too
    n1, n2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    terms = []
    for b in ids.tolist():                                                 # one term per batch row
        num = torch.exp(n1[b] @ n2[b] / tau)
        den = sum(torch.exp(n1[b] @ n2[n] / tau) for n in range(5))       # over ALL of view 2
        terms.append(-torch.log(num / den))
    expected = 3.0 * torch.stack(terms).mean()
    assert torch.allclose(got, expected, atol=1e-5)
    g_got = torch.autograd.grad(got, [z1, z2])
    g_exp = torch.autograd.grad(expected, [z1, z2])
    for a, b in zip(g_got, g_exp):
        assert torch.allclose(a, b, atol=1e-5)


def test_simgcl_chunked_cross_entropy_matches_torch():
    torch.manual_seed(5)
    q, keys = torch.randn(7, 4, requires_grad=True), torch.randn(11, 4, requires_grad=True)
    target, weight = torch.tensor([0, 3, 10, 3, 5, 6, 1]), torch.rand(7)
    got = simgcl.ChunkedCrossEntropy.apply(q, keys, target, weight, 3)
    want = (weight * F.cross_entropy(q @ keys.T, target, reduction='none')).sum()
    assert torch.allclose(got, want, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got, [q, keys]), torch.autograd.grad(want, [q, keys])):
        assert torch.allclose(a, b, atol=1e-5)


def test_simgcl_defaults_per_dataset():
    a = simgcl.parse_args(['--dataset', 'book'])
    assert (a.layers, a.reg, a.cl, a.cl_tau, a.eps) == (3, 1e-5, 0.1, 0.2, 0.9)
    s = simgcl.parse_args(['--dataset', 'steam'])
    assert (s.cl_tau, s.eps) == (0.5, 0.2)
    assert simgcl.parse_args(['--dataset', 'steam', '--eps', '0.1']).eps == 0.1


# ---------------------------------------------------------------- CLI and short runs

@pytest.mark.parametrize('module', [gccf, simgcl])
def test_flag_prefix_is_not_taken_for_the_flag(module, capsys):
    """allow_abbrev is off: --epoch is refused, not read as --epochs."""
    with pytest.raises(SystemExit, match='unrecognized arguments: --epoch'):
        module.parse_args(['--epoch', '1'])


@pytest.mark.parametrize('module, epochs', [(gccf, 30), (simgcl, 5)])
def test_short_base_run_learns_on_synthetic(module, epochs):
    argv = ['--dataset', 'synthetic', '--epochs', str(epochs), '--threads', '1', '--eval-every', '1']
    result = module.main(module.parse_args(argv))
    first, best = result['history'][0]['val_recall20'], result['best_val_recall20']
    assert best > 2 * first and best - first > 0.05, (first, best)
    assert set(result['test']) == {'recall@10', 'recall@20', 'ndcg@10', 'ndcg@20'}


@pytest.mark.parametrize('module, extra', [(gccf, ['--epochs', '8', '--batch', '1024']),
                                           (simgcl, ['--epochs', '7'])])
def test_short_proex_run_learns_on_synthetic(module, extra):
    """--proex starts high (the mapped profiles are informative from epoch 1), so the bar is
    a clear rise after epoch 1. GCCF uses smaller batches: more steps in fewer epochs."""
    argv = ['--dataset', 'synthetic', '--threads', '1', '--eval-every', '1', '--proex'] + extra
    result = module.main(module.parse_args(argv))
    first, best = result['history'][0]['val_recall20'], result['best_val_recall20']
    assert best - first > 0.015 and result['best_epoch'] > 1, (first, best)
