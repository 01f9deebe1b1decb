"""Tests of lightgcn.py: propagation against a dense A_hat (layers 0..L, and 1..L as in the
released ProEx-LightGCN), edge dropout (keep rate, no rescaling, its transpose), the
per-dataset defaults and the --released overrides, the L2 term of LightGCN.
Run: python -m pytest -q tests/test_lightgcn.py
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import data as D
import lightgcn as L
import eval as E
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
    expected = E0 + M @ E0 + M @ (M @ E0)                      # forward on the dropped matrix
    assert torch.allclose(torch.cat([z_u, z_i]), expected.detach(), atol=1e-6)
    (expected * w).sum().backward()
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


@pytest.mark.parametrize('keep', [0.3, 0.7, 0.95])
def test_drop_edges_transpose_equals_dense_transpose(keep):
    A = D.norm_adj(random_graph(30, 40, 0.2, seed=3))
    perm = D.transpose_perm(A)
    A_d, A_t = L.drop_edges(A, perm, keep, generator=torch.Generator().manual_seed(2))
    assert torch.equal(dense(A_t), dense(A_d).T)
    assert not torch.equal(dense(A_d), dense(A_d).T)           # so a plain A_d would not do
    assert torch.equal(A_t.crow_indices(), A.crow_indices())   # the pattern of A, as spmm expects
    assert torch.equal(A_t.col_indices(), A.col_indices())


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


MODEL_FIELDS = ('layers', 'reg', 'keep_rate', 'skip_layer0', 'dim')


@pytest.mark.parametrize('dataset', ['book', 'steam'])
def test_released_with_proex_sets_the_flags_it_owns(dataset):
    """--released: the full graph (keep rate 1), layers 1..L, and proex_core's released
    weights and switches."""
    r = L.parse_args(['--proex', '--released', '--dataset', dataset])
    assert (r.skip_layer0, r.keep_rate) == (True, 1.0)
    assert (r.lambda1, r.lambda2, r.lambda3, r.envs) == (0.0, 0.4, 10.0, 3)
    assert r.uniformity_reg and r.shared_mixing and r.unbiased_var and r.var_of_means
    assert E.switches(r) == dict(mixing='shared', var_e='released', reg='uniformity')
    assert r.layers == L.DATASET_DEFAULTS[dataset]['layers']  # L itself is not changed
    p = L.parse_args(['--proex', '--dataset', dataset, '--keep-rate', '0.5'])
    assert (p.skip_layer0, p.keep_rate) == (False, 0.5)        # plain --proex: the flag holds


@pytest.mark.parametrize('argv,flag', [(['--keep-rate', '0.5'], '--keep-rate'),
                                       (['--envs', '6'], '--envs'), (['--lambda1', '0.3'], '--lambda1')])
def test_released_with_proex_refuses_a_value_it_would_override(argv, flag, capsys):
    """A flag that --released overrides is an error naming it, not silently replaced."""
    with pytest.raises(SystemExit) as e:
        L.parse_args(['--proex', '--released', *argv])
    out = capsys.readouterr().err + str(e.value.code)
    assert f'argument {flag}: --released sets' in out and f'drop {flag} or --released' in out
    assert L.parse_args(['--proex', '--released', '--keep-rate', '1']).keep_rate == 1.0  # same value
    assert L.parse_args(['--released', '--keep-rate', '0.5']).keep_rate == 0.5   # no --proex: base


@pytest.mark.parametrize('extra', [[], ['--keep-rate', '0.6', '--layers', '1', '--dim', '8']])
def test_released_without_proex_changes_no_model_field(extra, capsys):
    plain, released = L.parse_args(extra), L.parse_args(extra + ['--released'])
    assert [getattr(released, k) for k in MODEL_FIELDS] == [getattr(plain, k) for k in MODEL_FIELDS]
    assert released.skip_layer0 is False and released.keep_rate == plain.keep_rate < 1


def test_released_with_zero_layers_is_refused(capsys):
    """--released sums layers 1..L: with L = 0 there is nothing to sum."""
    with pytest.raises(SystemExit, match='argument --layers'):
        L.parse_args(['--proex', '--released', '--layers', '0'])
    assert L.parse_args(['--released', '--layers', '0']).layers == 0  # base model: valid


def test_skip_layer0_with_zero_layers_is_refused(capsys):
    with pytest.raises(SystemExit, match='--layers'):
        L.parse_args(['--skip-layer0', '--layers', '0'])
    assert L.parse_args(['--layers', '0']).layers == 0         # layer 0 alone is a valid model


# ---------------------------------------------------------------- the L2 term of the loss

def test_l2_reg_of_lightgcn_is_the_squared_norm_of_E0():
    """LightGCN's only parameters are the layer-0 embeddings: the L2 term is ||E0||^2
    (BPR and l2_reg themselves are tested in test_proex_core.py)."""
    g = L.LightGCN(2, 3, d=2, layers=3)
    assert [n for n, _ in g.named_parameters()] == ['E0'] and g.E0.shape == (5, 2)
    with torch.no_grad():
        g.E0.copy_(torch.tensor([[1.0, -2.0], [0.0, 3.0], [0.5, 0.5], [0.0, 0.0], [-1.0, 1.0]]))
    assert P.l2_reg(g).item() == pytest.approx(1 + 4 + 9 + 0.25 + 0.25 + 1 + 1)
