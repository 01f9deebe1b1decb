"""Tests of lightgcn.py: propagation against a dense A_hat (layers 0..L, and 1..L as in the
released ProEx-LightGCN), edge dropout (keep rate, no rescaling, its transpose), the
per-dataset defaults and the --released overrides, BPR and L2 by hand.
Run: python -m pytest -q tests/test_lightgcn.py
"""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import data as D
import lightgcn as L
import proex_core as P

# 4 users x 5 items; user 3 and item 4 have no interaction (zero-degree rows of A_hat)
R = sp.csr_matrix(np.array([[1, 1, 0, 0, 0],
                            [0, 1, 1, 0, 0],
                            [1, 0, 0, 1, 0],
                            [0, 0, 0, 0, 0]], dtype=np.float32))


def dense_a_hat(R):
    """D^-1/2 A D^-1/2 of A = [[0, R], [R^T, 0]] (He et al., SIGIR'20, matrix form of
    LightGCN), zero-degree rows and columns left at 0."""
    U, I = R.shape
    A = np.zeros((U + I, U + I))
    A[:U, U:], A[U:, :U] = R.toarray(), R.toarray().T
    deg = A.sum(1)
    d = np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0)
    return torch.tensor(d[:, None] * A * d[None, :], dtype=torch.float32)


def dense(A):
    return A.to_dense()


# ---------------------------------------------------------------- propagation

@pytest.mark.parametrize('layers', [0, 1, 2, 3])
def test_propagate_is_sum_of_layers_0_to_L(layers):
    torch.manual_seed(0)
    model = L.LightGCN(4, 5, d=3, layers=layers)
    A_hat, E0 = dense_a_hat(R), model.E0.detach()
    expected, E = E0.clone(), E0
    for _ in range(layers):                                    # E^{l+1} = A_hat E^l
        E = A_hat @ E
        expected = expected + E
    z_u, z_i = model.propagate(D.norm_adj(R))
    assert z_u.shape == (4, 3) and z_i.shape == (5, 3)
    assert torch.allclose(torch.cat([z_u, z_i]), expected, atol=1e-6)
    assert torch.equal(z_u[3], E0[3]) and torch.equal(z_i[4], E0[4 + 4])  # no neighbours: E^0 only


@pytest.mark.parametrize('layers', [1, 2, 3])
def test_skip_layer0_is_sum_of_layers_1_to_L(layers):
    """The released ProEx-LightGCN (BlueGhostYi/ProRec lightgcn_proex.py) sums layers 1..L."""
    torch.manual_seed(1)
    model = L.LightGCN(4, 5, d=3, layers=layers, skip_layer0=True)
    A_hat, E = dense_a_hat(R), model.E0.detach()
    expected = torch.zeros_like(E)
    for _ in range(layers):
        E = A_hat @ E
        expected = expected + E
    z_u, z_i = model.propagate(D.norm_adj(R))
    assert torch.allclose(torch.cat([z_u, z_i]), expected, atol=1e-6)
    assert torch.equal(z_u[3], torch.zeros(3))                 # isolated user: no layer >= 1
    with_0 = L.LightGCN(4, 5, d=3, layers=layers)
    with_0.E0.data.copy_(model.E0.data)
    assert torch.allclose(torch.cat(with_0.propagate(D.norm_adj(R))),
                          expected + model.E0.detach(), atol=1e-6)


def test_propagate_gradient_through_dropped_matrix_matches_dense():
    """With a dropped (non-symmetric) A, the backward pass needs A^T: the gradient of E0 must
    equal the one autograd gives on the dense dropped matrix."""
    torch.manual_seed(2)
    A = D.norm_adj(R)
    A_d, A_dt = L.drop_edges(A, D.transpose_perm(A), 0.6, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(dense(A_d), dense(A_d).T)           # the mask broke the symmetry
    model = L.LightGCN(4, 5, d=3, layers=2)
    w = torch.randn(9, 3)
    z_u, z_i = model.propagate(A_d, A_dt)
    (torch.cat([z_u, z_i]) * w).sum().backward()
    E0 = model.E0.detach().clone().requires_grad_(True)
    M = dense(A_d)
    ((E0 + M @ E0 + M @ (M @ E0)) * w).sum().backward()
    assert torch.allclose(model.E0.grad, E0.grad, atol=1e-5)


# ---------------------------------------------------------------- edge dropout

def random_graph(U=150, I=200, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((U, I)) < density).astype(np.float32))


def test_drop_edges_keep_rate_1_returns_A_itself():
    A = D.norm_adj(R)
    A_d, A_t = L.drop_edges(A, D.transpose_perm(A), 1.0)
    assert A_d is A and A_t is A


@pytest.mark.parametrize('keep', [0.8, 0.5])
def test_drop_edges_empirical_keep_rate_and_no_rescaling(keep):
    A = D.norm_adj(random_graph())                             # about 6000 x 2 entries
    vals = A.values()
    A_d, _ = L.drop_edges(A, D.transpose_perm(A), keep, generator=torch.Generator().manual_seed(1))
    kept = A_d.values() != 0
    assert abs(kept.float().mean().item() - keep) < 0.02       # std about 0.005 here
    assert torch.equal(A_d.values()[kept], vals[kept])        # kept entries keep their value
    assert torch.equal(A_d.crow_indices(), A.crow_indices())  # same pattern, zeros stored
    # one draw per stored entry, (i, j) and (j, i) independently: both kept with prob keep^2
    M = dense(A_d)
    both = ((M != 0) & (M.T != 0)).sum().item() / (dense(A) != 0).sum().item()
    assert abs(both - keep ** 2) < 0.03


def test_drop_edges_transpose_equals_dense_transpose():
    A = D.norm_adj(random_graph(30, 40, 0.2, seed=3))
    perm = D.transpose_perm(A)
    A_d, A_t = L.drop_edges(A, perm, 0.7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(dense(A_t), dense(A_d).T)
    assert not torch.equal(dense(A_d), dense(A_d).T)


def test_drop_edges_same_generator_same_mask():
    A = D.norm_adj(random_graph(30, 40, 0.2, seed=4))
    perm = D.transpose_perm(A)
    a, _ = L.drop_edges(A, perm, 0.5, generator=torch.Generator().manual_seed(9))
    b, _ = L.drop_edges(A, perm, 0.5, generator=torch.Generator().manual_seed(9))
    c, _ = L.drop_edges(A, perm, 0.5, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a.values(), b.values()) and not torch.equal(a.values(), c.values())


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize('dataset,expected', [('book', (3, 1e-6, 0.8)), ('yelp', (3, 1e-6, 0.8)),
                                              ('steam', (2, 1e-6, 0.8)),
                                              ('ml100k', (3, 1e-6, 0.8))])  # others: book's
def test_per_dataset_defaults(dataset, expected):
    """RLMRec's lightgcn.yml (HKUDS/RLMRec): layer_num, reg_weight, keep_rate per dataset."""
    a = L.parse_args(['--dataset', dataset])
    assert (a.layers, a.reg, a.keep_rate) == expected and a.skip_layer0 is False


def test_explicit_flags_win_over_dataset_defaults():
    a = L.parse_args(['--dataset', 'steam', '--layers', '4', '--reg', '0.5', '--keep-rate', '0.3'])
    assert (a.layers, a.reg, a.keep_rate) == (4, 0.5, 0.3)


def test_released_sets_layers_1_to_L_and_no_dropout_only_with_proex(capsys):
    """The released ProEx-LightGCN (BlueGhostYi/ProRec lightgcn_proex.py) sums layers 1..L and
    trains on the full graph; plain --proex keeps LightGCN as in He et al. (layers 0..L,
    RLMRec's edge dropout)."""
    r = L.parse_args(['--proex', '--released', '--dataset', 'steam'])
    assert r.skip_layer0 is True and r.keep_rate == 1.0 and r.layers == 2
    assert r.lambda1 == 0.0 and (r.lambda2, r.lambda3, r.envs) == (0.4, 10.0, 3)
    p = L.parse_args(['--proex', '--dataset', 'steam'])
    assert p.skip_layer0 is False and p.keep_rate == 0.8
    b = L.parse_args(['--released'])                           # without --proex: base LightGCN
    assert b.skip_layer0 is False and b.keep_rate == 0.8
    assert 'no effect without --proex' in capsys.readouterr().out


def test_skip_layer0_with_zero_layers_is_refused(capsys):
    with pytest.raises(SystemExit):
        L.parse_args(['--skip-layer0', '--layers', '0'])
    assert '--layers' in capsys.readouterr().err
    assert L.parse_args(['--layers', '0']).layers == 0         # layer 0 alone is a valid model


# ---------------------------------------------------------------- losses by hand

def test_bpr_loss_by_hand():
    z_u = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    z_i = torch.tensor([[2.0, 0.0], [0.0, 1.0]])               # s_pos = 2, 2
    z_j = torch.tensor([[0.0, 1.0], [1.0, 1.0]])               # s_neg = 0, 3
    # mean of softplus(s_neg - s_pos) = [log(1 + e^-2) + log(1 + e^1)] / 2
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert P.bpr_loss(z_u, z_i, z_j).item() == pytest.approx(expected, rel=1e-6)


def test_l2_reg_is_sum_of_squares_of_all_parameters():
    m = torch.nn.Linear(2, 1)
    m.weight.data = torch.tensor([[1.0, -2.0]])
    m.bias.data = torch.tensor([3.0])
    assert P.l2_reg(m).item() == pytest.approx(1 + 4 + 9)
    g = L.LightGCN(2, 3, d=2, layers=1)
    assert P.l2_reg(g).item() == pytest.approx(g.E0.detach().pow(2).sum().item(), rel=1e-6)
