"""Tests of proex_core.py: each function against a hand computation on tiny tensors.
Run: python -m pytest -q tests/test_proex_core.py
"""
import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as E
import proex_core as pc


def unit(v):
    return v / v.norm()


# ---------------------------------------------------------------- mappings

def test_direct_mapping_shapes_and_hidden_size():
    f = pc.DirectMapping(10, 4)
    assert f.mlp[0].out_features == 7  # (10 + 4) // 2
    assert f(torch.randn(3, 5, 10)).shape == (3, 5, 4)


def test_aggregation_mapping_splits_mean_and_variance():
    torch.manual_seed(0)
    f = pc.AggregationMapping(6, 3, hidden=8)
    c = torch.randn(2, 5, 6)
    mu, logvar = f(c)
    out = f.mlp(c)
    assert torch.allclose(mu, out[..., :3]) and torch.allclose(logvar, out[..., 3:])


def test_aggregate_profiles_by_hand():
    x = torch.tensor([[1., 0., 1.], [0., 0., 0.]])  # user 1 has no items
    c_items = torch.arange(2 * 3 * 2, dtype=torch.float).reshape(2, 3, 2)  # [K, I, d_s]
    c_users = torch.ones(2, 2, 2) * 100  # [K, B, d_s]
    out = pc.aggregate_profiles(x, c_items, c_users)
    for k in range(2):
        assert torch.allclose(out[k, 0], (c_items[k, 0] + c_items[k, 2]) / 2 + c_users[k, 0])
        assert torch.allclose(out[k, 1], c_users[k, 1])


def test_profile_encoder_batch_maps_each_row_like_the_mlp():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    usr, itm = [rng.normal(size=(6, 5)) for _ in range(3)], [rng.normal(size=(4, 5)) for _ in range(3)]
    prof = pc.ProfileEncoder(usr, itm, d=2)
    u, i, j = torch.tensor([5, 0, 5]), torch.tensor([1, 1, 3]), torch.tensor([2, 0, 1])
    c_u, c_i, c_j = prof(u, i, j)
    assert c_u.shape == c_i.shape == c_j.shape == (3, 3, 2)  # [K, B, d]
    for c, table, ids in ((c_u, usr, u), (c_i, itm, i), (c_j, itm, j)):
        for k in range(3):
            raw = torch.tensor(table[k][ids.numpy()], dtype=torch.float32)  # [B, d_s]
            assert torch.allclose(c[k], prof.f_psi(raw), atol=1e-6)
    assert torch.allclose(prof.mean_users()[5], c_u[:, 0].mean(0), atol=1e-6)  # Alg. 2


def test_profile_aggregator_dropped_sum_is_dmrecs_input():
    """input_rule 'dropped-sum': f_psi^a of (the row the encoder read) @ c_items + c_user, the
    row as given (after dropout, so rescaled entries count with their weight)."""
    import scipy.sparse as sp
    rng = np.random.default_rng(1)
    train = sp.csr_matrix((rng.random((6, 5)) < 0.5).astype(np.float32))
    usr, itm = [rng.normal(size=(6, 3)) for _ in range(2)], [rng.normal(size=(5, 3)) for _ in range(2)]
    agg = pc.ProfileAggregator(usr, itm, train, d=4, hidden=6, input_rule='dropped-sum')
    users, x = torch.tensor([5, 1]), torch.tensor([[0., 2., 0., 2., 0.], [2., 0., 0., 0., 0.]])
    c_items, c_users = torch.tensor(np.stack(itm), dtype=torch.float32), torch.tensor(np.stack(usr), dtype=torch.float32)
    by_hand = torch.stack([torch.stack([x[b] @ c_items[k] + c_users[k, users[b]] for b in range(2)])
                           for k in range(2)])  # [K, B, d_s]: a sum, not a mean
    mu, var = agg(users, x)
    mu_ref, var_ref = agg.f_psi(by_hand)
    assert torch.allclose(mu, mu_ref, atol=1e-5) and torch.allclose(var, var_ref, atol=1e-5)
    assert not hasattr(agg, 'c_agg')


def test_profile_aggregator_precomputes_the_per_batch_aggregate():
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((7, 5)) < 0.4).astype(np.float32))  # some users empty
    usr, itm = [rng.normal(size=(7, 3)) for _ in range(2)], [rng.normal(size=(5, 3)) for _ in range(2)]
    agg = pc.ProfileAggregator(usr, itm, train, d=4, hidden=6, chunk=3)  # 3 chunks of users
    users = torch.tensor([6, 0, 3, 3])
    expect = pc.aggregate_profiles(torch.from_numpy(train[users.numpy()].toarray()),
                                   torch.tensor(np.stack(itm), dtype=torch.float32),
                                   torch.tensor(np.stack(usr), dtype=torch.float32)[:, users])
    mu, var = agg(users)
    mu_ref, var_ref = agg.f_psi(expect)
    assert mu.shape == (2, 4, 4) and torch.allclose(mu, mu_ref, atol=1e-6)
    assert torch.allclose(var, var_ref, atol=1e-6)  # log-variances


# ---------------------------------------------------------------- environments

@pytest.mark.parametrize('n', [None, 5])
def test_dirichlet_weights_on_simplex(n):
    torch.manual_seed(1)
    theta = pc.dirichlet_weights(4, 3, 0.1, n=n)
    assert theta.shape == ((4, 3) if n is None else (4, 5, 3))
    assert torch.allclose(theta.sum(-1), torch.ones(theta.shape[:-1]), atol=1e-5)
    assert (theta >= 0).all() and (theta <= 1).all()


def test_dirichlet_weights_reproducible_and_mean():
    torch.manual_seed(7)
    a = pc.dirichlet_weights(3, 4, 0.1, n=6)
    torch.manual_seed(7)
    b = pc.dirichlet_weights(3, 4, 0.1, n=6)
    assert torch.equal(a, b)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert torch.equal(pc.dirichlet_weights(2, 4, 0.3, rng=r1), pc.dirichlet_weights(2, 4, 0.3, rng=r2))
    # Dir(alpha,...,alpha) has mean 1/K in every coordinate
    torch.manual_seed(0)
    many = pc.dirichlet_weights(1, 4, 0.2, n=20000)[0]
    assert torch.allclose(many.mean(0), torch.full((4,), 0.25), atol=0.01)


def test_mix_equals_weighted_sum():
    torch.manual_seed(2)
    views = torch.randn(3, 4, 2)  # [K, n, d]
    shared = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])  # [E, K]
    per_entity = torch.rand(2, 4, 3)  # [E, n, K]
    out_s, out_p = pc.mix(views, shared), pc.mix(views, per_entity)
    for e in range(2):
        for i in range(4):
            want_s = sum(shared[e, k] * views[k, i] for k in range(3))
            want_p = sum(per_entity[e, i, k] * views[k, i] for k in range(3))
            assert torch.allclose(out_s[e, i], want_s, atol=1e-6)
            assert torch.allclose(out_p[e, i], want_p, atol=1e-6)


def test_mean_profile():
    c = torch.randn(4, 3, 2)
    assert torch.allclose(pc.mean_profile(c), (c[0] + c[1] + c[2] + c[3]) / 4)


# ---------------------------------------------------------------- regularisation

def eq7_by_hand(views, tau, sign=1):
    """Eq. 7 with Python floats (float64), loops over entities and profiles; sign=-1 is the
    InfoNCE form, exp(-1/tau)."""
    K, n, _ = views.shape
    total = 0.0
    for i in range(n):
        c = [unit(views[k, i].double()) for k in range(K)]
        for k in range(K):
            s = sum(math.exp(float(c[k] @ c[j]) / tau) for j in range(K) if j != k)
            total += math.log(1 + math.exp(sign / tau) * s)
    return total / n


def test_contrastive_reg_matches_eq7():
    torch.manual_seed(3)
    views = torch.randn(4, 5, 3)
    assert pc.contrastive_reg(views, 0.2).item() == pytest.approx(eq7_by_hand(views, 0.2), rel=1e-5)
    assert pc.contrastive_reg(views, 0.7).item() == pytest.approx(eq7_by_hand(views, 0.7), rel=1e-5)


def test_contrastive_reg_infonce_form_matches_by_hand():
    torch.manual_seed(4)
    views = torch.randn(4, 5, 3)
    got = pc.contrastive_reg(views, 0.2, infonce=True).item()
    assert got == pytest.approx(eq7_by_hand(views, 0.2, sign=-1), rel=1e-5)
    assert got < pc.contrastive_reg(views, 0.2).item()  # a different, smaller value


def test_contrastive_reg_small_tau_no_overflow():
    torch.manual_seed(4)
    views = torch.randn(3, 4, 3)
    tau = 0.01  # the printed form multiplies exp(1 / tau) by exp(c.c' / tau): up to exp(200),
    got = pc.contrastive_reg(views, tau)  # inf in float32
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(eq7_by_hand(views, tau), rel=1e-5)


def test_contrastive_reg_single_profile_is_zero_with_finite_grad():
    views = torch.randn(1, 3, 2, requires_grad=True)
    loss = pc.contrastive_reg(views)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(views.grad).all()


def test_uniformity_reg_by_loops():
    torch.manual_seed(5)
    views = torch.randn(2, 4, 3)
    tau = 0.2
    want = 0.0
    for k in range(2):
        c = [unit(views[k, i].double()) for i in range(4)]
        per = [-math.log(math.exp(float(c[i] @ c[i]) / tau)
                         / sum(math.exp(float(c[i] @ c[j]) / tau) for j in range(4))) for i in range(4)]
        want += sum(per) / 4  # mean over entities, summed over k
    assert pc.uniformity_reg(views, tau).item() == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- alignment

def test_info_nce_by_loops():
    torch.manual_seed(6)
    z, c = torch.randn(4, 3), torch.randn(4, 3)
    tau = 0.2
    zn = [unit(v.double()) for v in z]
    cn = [unit(v.double()) for v in c]
    want = sum(-math.log(math.exp(float(zn[i] @ cn[i]) / tau)
                         / sum(math.exp(float(zn[i] @ cn[j]) / tau) for j in range(4))) for i in range(4)) / 4
    assert pc.info_nce(z, c, tau).item() == pytest.approx(want, rel=1e-5)


def test_kl_diag_gaussians_matches_torch():
    torch.manual_seed(8)
    mq, mp = torch.randn(5, 3), torch.randn(5, 3)
    vq, vp = torch.rand(5, 3) + 0.1, torch.rand(5, 3) + 0.1
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mq, vq.sqrt()),
                                             torch.distributions.Normal(mp, vp.sqrt())).sum(-1)
    assert torch.allclose(pc.kl_diag_gaussians(mq, vq, mp, vp), want, atol=1e-5)


def kl_by_hand(mq, vq, mp, vp):
    return sum(0.5 * (math.log(b / a) + (a + (m - p) ** 2) / b - 1)
               for m, a, p, b in zip(mq.tolist(), vq.tolist(), mp.tolist(), vp.tolist()))


def test_distribution_alignment_by_hand_and_beta_one():
    torch.manual_seed(9)
    mu, mu_e = torch.randn(3, 2), torch.randn(3, 2)
    var, var_e = torch.rand(3, 2) + 0.2, torch.rand(3, 2) + 0.2
    beta = 0.3
    want = sum((1 - beta) * kl_by_hand(mu[b], var[b], mu_e[b], var_e[b])
               + beta * kl_by_hand(mu[b], var[b], torch.zeros(2), torch.ones(2)) for b in range(3)) / 3
    assert pc.distribution_alignment(mu, var, mu_e, var_e, beta).mean().item() == pytest.approx(want, rel=1e-5)
    # beta = 1: the usual VAE KL(q || N(0, I)), whatever the environment
    vae_kl = (0.5 * (-var.log() + var + mu ** 2 - 1).sum(-1)).mean()
    assert pc.distribution_alignment(mu, var, mu_e, var_e, 1.0).mean().item() == pytest.approx(vae_kl.item(), rel=1e-5)


def test_sample_gaussian_moments():
    mu = torch.tensor([1.0, -2.0, 0.5])
    var = torch.tensor([0.25, 4.0, 1.0])
    g = torch.Generator().manual_seed(10)
    z = pc.sample_gaussian(mu.expand(200000, 3), var.expand(200000, 3), generator=g)  # [N, 3]
    assert torch.allclose(z.mean(0), mu, atol=0.02)
    assert torch.allclose(z.var(0), var, rtol=0.02)


def test_sample_gaussian_mixed_mean_and_variance():
    """Eq. 9 then sampling: the sample has the mixed mean and the mixed variance."""
    mu_k = torch.tensor([[[0.0, 2.0]], [[4.0, -2.0]]])  # [K=2, n=1, d=2]
    var_k = torch.tensor([[[1.0, 0.5]], [[3.0, 1.5]]])
    theta = torch.tensor([[0.25, 0.75]])  # [E=1, K]
    m, v = pc.mix(mu_k, theta)[0, 0], pc.mix(var_k, theta)[0, 0]
    assert torch.allclose(m, torch.tensor([3.0, -1.0])) and torch.allclose(v, torch.tensor([2.5, 1.25]))
    g = torch.Generator().manual_seed(11)
    z = pc.sample_gaussian(m.expand(200000, 2), v.expand(200000, 2), generator=g)
    assert torch.allclose(z.mean(0), m, atol=0.02) and torch.allclose(z.var(0), v, rtol=0.02)


# ---------------------------------------------------------------- the base models' losses

def test_bpr_loss_by_hand():
    z_u = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    z_i = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # s_pos = 2, 2
    z_j = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # s_neg = 0, 3
    # mean of softplus(s_neg - s_pos) = [log(1 + e^-2) + log(1 + e^1)] / 2
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert pc.bpr_loss(z_u, z_i, z_j).item() == pytest.approx(expected, rel=1e-6)


def test_bpr_rows_per_triple_with_leading_dims():
    """bpr_rows keeps one value per triple, over any leading dims ([E, B] for Eq. 13)."""
    z_u = torch.tensor([[[1.0, 0.0], [1.0, 2.0]], [[0.0, 1.0], [2.0, 0.0]]])  # [E=2, B=2, d]
    z_i = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])
    z_j = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 3.0], [0.5, 0.0]]])
    # s_neg - s_pos: e=0: (0 - 2, 3 - 2); e=1: (3 - 1, 1 - 0)
    want = [[math.log1p(math.exp(d)) for d in row] for row in ([-2.0, 1.0], [2.0, 1.0])]
    got = pc.bpr_rows(z_u, z_i, z_j)
    assert got.shape == (2, 2) and got.tolist() == [pytest.approx(r, rel=1e-6) for r in want]
    assert pc.bpr_loss(z_u[0], z_i[0], z_j[0]).item() == pytest.approx(sum(want[0]) / 2, rel=1e-6)


def test_bpr_large_margins_do_not_overflow():
    z_u = torch.tensor([[1.0]])
    assert pc.bpr_loss(z_u, torch.tensor([[-100.0]]), torch.tensor([[100.0]])).item() \
        == pytest.approx(200.0)  # softplus(200), not log(1 + inf)
    assert pc.bpr_loss(z_u, torch.tensor([[100.0]]), torch.tensor([[-100.0]])).item() \
        == pytest.approx(0.0, abs=1e-30)


def test_l2_reg_is_sum_of_squares_of_all_parameters():
    m = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        m[0].bias.copy_(torch.tensor([3.0]))
        m[1].weight.copy_(torch.tensor([[0.5]]))
    assert pc.l2_reg(m).item() == pytest.approx(1 + 4 + 9 + 0.25)  # every parameter, no 1/2


def test_multinomial_nll_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # row 1: softmax = (1/4, 3/4) -> -(log 1/4 + log 3/4); row 2: softmax = (2/3, 1/3) -> -log 1/3
    expected = [-(math.log(0.25) + math.log(0.75)), -math.log(1 / 3)]
    assert pc.multinomial_nll(logits, x).tolist() == pytest.approx(expected, rel=1e-6)
    # counts weigh the log-probabilities: x = 2 on an item doubles its term
    assert pc.multinomial_nll(logits[:1], torch.tensor([[2.0, 0.0]])).item() == \
        pytest.approx(-2 * math.log(0.25), rel=1e-6)


def test_kl_to_prior_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 1: 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)] = 0.5 * (2 - log 2); row 2: 0
    expected = 0.5 * (2 - math.log(2.0)) / 2  # mean over the 2 rows
    assert pc.kl_to_prior(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert pc.kl_to_prior(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


def test_eq11_with_beta_1_is_the_vae_kl():
    """distribution_alignment with beta = 1, averaged over the batch, is kl_to_prior of
    (mu, log var): the two code paths of the generative models agree."""
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    m_env, v_env = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    eq11 = pc.distribution_alignment(mu, logvar.exp(), m_env, v_env, beta=1.0)
    assert eq11.mean().item() == pytest.approx(pc.kl_to_prior(mu, logvar).item(), rel=1e-5)


def test_reparameterize_has_the_posterior_moments_and_gradient():
    torch.manual_seed(0)
    mu = torch.tensor([1.5, -0.5]).repeat(20000, 1).requires_grad_()
    logvar = torch.tensor([math.log(0.25), math.log(4.0)]).repeat(20000, 1)
    z = pc.reparameterize(mu, logvar)  # variance exp(logvar), not exp(logvar) ** 2 or logvar
    assert torch.allclose(z.mean(0), torch.tensor([1.5, -0.5]), atol=0.04)
    assert torch.allclose(z.var(0), torch.tensor([0.25, 4.0]), rtol=0.05)
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))  # dz/dmu = 1: a differentiable sample


# ---------------------------------------------------------------- objective (Eq. 14)

def test_proex_objective_variance_term():
    equal = torch.tensor([0.7, 0.7, 0.7])  # [E] read as one row
    assert pc.proex_objective(equal, torch.tensor(2.0), 0.5, 10.0).item() == pytest.approx(2.1 + 1.0)
    losses = torch.tensor([1.0, 2.0, 4.0])  # mean 7/3; squared deviations sum 14/3
    pop = pc.proex_objective(losses, torch.tensor(0.0), 0.0, 1.0)
    unb = pc.proex_objective(losses, torch.tensor(0.0), 0.0, 1.0, var_e='unbiased')
    assert pop.item() == pytest.approx(7.0 + 14 / 9, rel=1e-6)
    assert unb.item() == pytest.approx(7.0 + 14 / 6, rel=1e-6)
    one = torch.tensor([1.5])
    assert pc.proex_objective(one, torch.tensor(1.0), 1.0, 5.0, var_e='unbiased').item() == pytest.approx(2.5)


def test_variance_per_row_by_hand():
    # E = 2 environments, B = 2 rows. Row 0: losses 1, 3 (variance 1); row 1: 2, 2 (variance 0).
    L = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # [E, B]
    assert pc.env_variance(L).item() == pytest.approx(0.5)  # mean over rows of (1, 0)
    assert pc.env_variance(L, var_e='unbiased').item() == pytest.approx(1.0)  # (2, 0) / 2
    # batch means are 1.5 and 2.5: their variance is 0.25 (released code)
    assert pc.env_variance(L, var_e='of-means').item() == pytest.approx(0.25)
    # Eq. 14: sum_e of the batch means (1.5 + 2.5) + lambda2 L_reg + lambda3 Var
    total = pc.proex_objective(L, torch.tensor(1.0), 0.1, 2.0)
    assert total.item() == pytest.approx(4.0 + 0.1 + 2.0 * 0.5)
    # opposite per-row differences cancel in the batch means but not per row
    L2 = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert pc.env_variance(L2, var_e='of-means').item() == 0.0
    assert pc.env_variance(L2).item() == pytest.approx(1.0)
    assert pc.env_variance(L2[:1]).item() == 0.0  # one environment


def per_row_vs_batch_mean_inputs(B=1024, K=4, d=16, d_s=24, seed=3):
    torch.manual_seed(seed)
    f = pc.DirectMapping(d_s, d)
    base = torch.randn(1, 3 * B, d_s)
    texts = (base + 1.5 * torch.randn(K, 3 * B, d_s)).split(B, dim=1)  # K related views per entity
    z = [0.3 * torch.randn(B, d) for _ in range(3)]
    return f, z, texts


def test_variance_term_is_of_the_order_of_the_loss():
    f, (z_u, z_i, z_j), texts = per_row_vs_batch_mean_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    kw = dict(envs=3, alpha=0.1, lambda1=0.0, lambda2=0.0, lambda3=1.0, rng=np.random.default_rng(0))
    _, per_row = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, **kw)
    kw['rng'] = np.random.default_rng(0)
    _, of_means = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, var_e='of-means', **kw)
    rec_per_env = float(per_row['rec']) / 3
    assert float(per_row['var']) > 0.05 * rec_per_env  # same order as the loss
    assert float(of_means['var']) < 0.01 * float(per_row['var'])  # the batch mean averages it away


def test_lambda3_changes_the_mapping_gradient():
    f, (z_u, z_i, z_j), texts = per_row_vs_batch_mean_inputs(B=64)
    grads = []
    for lambda3 in (0.0, 1.0):
        f.zero_grad()
        c_u, c_i, c_j = (f(t) for t in texts)
        total, _ = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=3, alpha=0.1,
                                               lambda1=0.0, lambda2=0.0, lambda3=lambda3,
                                               rng=np.random.default_rng(1))
        total.backward()
        grads.append(f.mlp[0].weight.grad.clone())
    change = (grads[1] - grads[0]).norm() / grads[0].norm()
    assert change > 0.01


def disc_inputs(B=5, K=3, d=4, d_s=6, seed=12):
    torch.manual_seed(seed)
    f = pc.DirectMapping(d_s, d)
    z_u, z_i, z_j = (torch.randn(B, d, requires_grad=True) for _ in range(3))
    texts = [torch.randn(K, B, d_s) for _ in range(3)]
    return f, (z_u, z_i, z_j), texts


def infonce_row_by_hand(z, c, b, tau=0.2):
    """-log softmax_j(cos(z_b, c_j) / tau)[b], written out."""
    z, c = z.detach(), c.detach()
    cos = [float(z[b] @ c[j] / (z[b].norm() * c[j].norm())) / tau for j in range(z.shape[0])]
    return -(cos[b] - math.log(sum(math.exp(v) for v in cos)))


def bpr_by_hand(u, i, j):
    u, i, j = u.detach(), i.detach(), j.detach()
    return sum(math.log(1 + math.exp(float(u[b] @ j[b] - u[b] @ i[b]))) for b in range(u.shape[0])) / u.shape[0]


@pytest.mark.parametrize('shared', [True, False])
def test_discriminative_objective_by_hand(shared):
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    E, B, kw = 3, 5, dict(alpha=0.2, lambda1=0.3, lambda2=0.4, lambda3=2.0)
    torch.manual_seed(99)
    total, parts = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=E,
                                               mixing='shared' if shared else 'per-entity', users=torch.arange(B),
                                               pos_items=torch.arange(B) + 10,
                                               neg_items=torch.arange(B) + 20, **kw)
    torch.manual_seed(99)
    theta = pc.dirichlet_weights(E, 3, 0.2, n=None if shared else 3 * B)
    rows = [[0.0] * B for _ in range(E)]  # L^e of each BPR triple, written out
    for e in range(E):
        def mixed(c, offset):  # the weighted sum of Eq. 8, written out
            w = theta[e] if shared else theta[e, offset:offset + B]  # [K] or [B, K]
            return sum((w[k] if shared else w[:, k:k + 1]) * c[k] for k in range(3))
        cu, ci, cj = mixed(c_u, 0), mixed(c_i, B), mixed(c_j, 2 * B)
        for b in range(B):
            rec = bpr_by_hand(z_u[b:b + 1] + cu[b:b + 1], z_i[b:b + 1] + ci[b:b + 1],
                              z_j[b:b + 1] + cj[b:b + 1])
            align = (infonce_row_by_hand(z_u, cu, b) + infonce_row_by_hand(z_i, ci, b)
                     + infonce_row_by_hand(z_j, cj, b))  # users, positives and negatives
            rows[e][b] = rec + 0.3 * align
    env_means = [sum(r) / B for r in rows]
    var = sum(sum((rows[e][b] - sum(rows[f][b] for f in range(E)) / E) ** 2 for e in range(E)) / E
              for b in range(B)) / B  # Var over E per row, mean over rows (Alg. 1)
    reg = eq7_by_hand(c_u.detach(), 0.2) + eq7_by_hand(c_i.detach(), 0.2)
    assert float(parts['reg']) == pytest.approx(reg, rel=1e-5)
    assert float(parts['var']) == pytest.approx(var, rel=1e-4, abs=1e-9)
    assert total.item() == pytest.approx(sum(env_means) + 0.4 * reg + 2.0 * var, rel=1e-5)


@pytest.mark.parametrize('uniformity', [False, True])
def test_discriminative_objective_gradients(uniformity):
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    users, items = torch.tensor([0, 1, 1, 2, 3]), torch.tensor([4, 4, 5, 6, 7])
    total, parts = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=3, alpha=0.1,
                                               lambda1=0.5, lambda2=0.4, lambda3=1.0,
                                               reg='uniformity' if uniformity else 'printed', users=users, pos_items=items,
                                               neg_items=items + 4)
    total.backward()
    for p in list(f.parameters()) + [z_u, z_i, z_j]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert set(parts) == {'rec', 'align', 'reg', 'var'}
    assert all(v.dim() == 0 and not v.requires_grad for v in parts.values())


def test_uniformity_uses_unique_rows():
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    users, items = torch.tensor([0, 1, 1, 2, 0]), torch.tensor([4, 5, 6, 7, 8])
    c_u = c_u[:, [0, 1, 1, 3, 0]]  # duplicated ids carry duplicated profiles
    kw = dict(envs=1, alpha=0.1, lambda1=0.0, lambda2=1.0, lambda3=0.0, reg='uniformity')
    _, parts = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, users=users, pos_items=items, **kw)
    want = pc.uniformity_reg(c_u[:, [0, 1, 3]]) + pc.uniformity_reg(c_i)
    assert float(parts['reg']) == pytest.approx(want.item(), rel=1e-6)
    assert pc.first_occurrences(users).tolist() == [0, 1, 3]


def test_discriminative_no_mixing_is_one_environment_with_the_mean():
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    total, parts = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=4, alpha=0.1,
                                               lambda1=0.2, lambda2=0.4, lambda3=5.0, mixing='mean',
                                               users=torch.arange(5), pos_items=torch.arange(5),
                                               neg_items=torch.arange(5))
    mu, mi, mj = c_u.mean(0), c_i.mean(0), c_j.mean(0)
    rec = bpr_by_hand(z_u + mu, z_i + mi, z_j + mj)
    align = (pc.info_nce(z_u, mu) + pc.info_nce(z_i, mi) + pc.info_nce(z_j, mj)).item()
    reg = eq7_by_hand(c_u.detach(), 0.2) + eq7_by_hand(c_i.detach(), 0.2)
    assert float(parts['var']) == 0.0 and float(parts['rec']) == pytest.approx(rec, rel=1e-5)
    assert total.item() == pytest.approx(rec + 0.2 * align + 0.4 * reg, rel=1e-5)


def test_discriminative_lambda1_zero_skips_alignment():
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    _, parts = pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=2, alpha=0.1,
                                           lambda1=0.0, lambda2=0.4, lambda3=1.0)
    assert float(parts['align']) == 0.0


def gen_inputs(B=4, K=3, d=2, d_s=5, I=6, seed=13):
    torch.manual_seed(seed)
    agg = pc.AggregationMapping(d_s, d, hidden=7)
    decoder = torch.nn.Linear(d, I)
    mu = torch.randn(B, d, requires_grad=True)
    logvar = torch.randn(B, d, requires_grad=True)
    x = (torch.rand(B, I) < 0.5).float()
    c = pc.aggregate_profiles(x, torch.randn(K, I, d_s), torch.randn(K, B, d_s))  # [K, B, d_s]
    nll_fn = lambda z: -(F.log_softmax(decoder(z), dim=-1) * x).sum(-1)  # multinomial NLL per user, [B]
    return agg, decoder, mu, logvar, c, nll_fn


def test_generative_objective_gradients():
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    total, parts = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, envs=3, alpha=0.1,
                                           beta=0.5, lambda1=0.5, lambda2=0.4, lambda3=1.0)
    total.backward()
    for p in list(agg.parameters()) + list(decoder.parameters()) + [mu, logvar]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert float(parts['align']) > 0 and float(parts['reg']) > 0


@pytest.mark.parametrize('sum_of_samples,align_fused', [(False, False), (False, True), (True, False)])
def test_generative_objective_by_hand(sum_of_samples, align_fused):
    """Default: Eq. 12 fuses N(mu, var) with the environment's N(m, v) into N(mu + m, var * v),
    sampled with one noise shared by the environments, and Eq. 11 aligns the base posterior
    N(mu, var) with N(m, v) (Sec. 2.4). align_fused (DMRec): Eq. 11 on the fused Gaussian.
    sum_of_samples (for study, the earlier reading): z ~ q plus a sample of N(m, v) per
    environment, Eq. 11 on q; the draws come in the same order as before."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    var = logvar.exp()
    E, B, kw = 2, 4, dict(alpha=0.2, beta=0.3, lambda1=0.7, lambda2=0.4, lambda3=3.0)
    torch.manual_seed(5)
    total, parts = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, envs=E,
                                           fusion='sum-of-samples' if sum_of_samples else 'gaussians', align='fused' if align_fused else 'posterior',
                                           **kw)
    torch.manual_seed(5)  # same draws in the same order: theta, base noise, (one per environment)
    theta = pc.dirichlet_weights(E, 3, 0.2, n=B)  # [E, B, K]
    eps = torch.randn(B, 2)
    rows = []  # L^e of each user, [E][B]
    for e in range(E):
        m = sum(theta[e, :, k:k + 1] * mu_k[k] for k in range(3))  # Eq. 9
        v = sum(theta[e, :, k:k + 1] * var_k[k] for k in range(3))
        if sum_of_samples:
            q_mu, q_var = mu, var
            z_e = mu + var.sqrt() * eps + m + v.sqrt() * torch.randn(B, 2)
        else:  # by hand: means add, log-variances add
            f_mu, f_var = mu + m, torch.exp(logvar + v.log())
            z_e = f_mu + f_var.sqrt() * eps
            q_mu, q_var = (f_mu, f_var) if align_fused else (mu, var)
        nll = nll_fn(z_e).tolist()
        rows.append([nll[b] + 0.7 * ((1 - 0.3) * kl_by_hand(q_mu[b], q_var[b], m[b], v[b])
                                     + 0.3 * kl_by_hand(q_mu[b], q_var[b], torch.zeros(2), torch.ones(2)))
                     for b in range(B)])
    reg = eq7_by_hand(mu_k.detach(), 0.2)
    env_means = [sum(r) / B for r in rows]
    var_e = sum(sum((rows[e][b] - (rows[0][b] + rows[1][b]) / 2) ** 2 for e in range(E)) / E
                for b in range(B)) / B
    assert float(parts['reg']) == pytest.approx(reg, rel=1e-5)
    assert total.item() == pytest.approx(sum(env_means) + 0.4 * reg + 3.0 * var_e, rel=1e-5)


def test_fuse_gaussians_by_hand():
    mu, var = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.25, 2.0]])
    m, v = torch.tensor([[1.5, 1.0]]), torch.tensor([[4.0, 0.5]])
    mu_f, var_f = pc.fuse_gaussians(mu, var, m, v)
    assert torch.equal(mu_f, torch.tensor([[2.0, 0.0]]))
    assert torch.allclose(var_f, torch.tensor([[1.0, 1.0]]))                 # 0.25 * 4, 2 * 0.5
    assert torch.allclose(var_f.log(), var.log() + v.log())                 # log-variances add


@pytest.mark.parametrize('beta', [0.0, 1.0])
def test_eq11_on_the_fused_gaussian_at_beta_0_and_1(beta):
    """One environment, no mixing: with beta = 1 Eq. 11 is KL(fused || N(0, I)); with beta = 0
    it is KL(fused || N(m, v)), the environment's Gaussian."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    var = logvar.exp()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    total, parts = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, envs=1, alpha=0.1,
                                           beta=beta, lambda1=1.0, lambda2=0.0, lambda3=0.0,
                                           mixing='mean', align='fused', generator=g1)
    m, v = mu_k.mean(0), var_k.mean(0)
    mu_f, var_f = mu + m, var * v
    target = (torch.zeros_like(m), torch.ones_like(v)) if beta == 1.0 else (m, v)
    kl = torch.tensor([kl_by_hand(mu_f[b], var_f[b], target[0][b], target[1][b]) for b in range(len(mu))])
    assert float(parts['align']) == pytest.approx(kl.mean().item(), rel=1e-5)
    z = mu_f + var_f.sqrt() * torch.randn(mu.shape, generator=g2)
    assert total.item() == pytest.approx((nll_fn(z) + kl).mean().item(), rel=1e-5)


@pytest.mark.parametrize('align_fused', [False, True])
def test_eq11_gradient_reaches_the_profile_means_only_in_the_printed_form(align_fused):
    """beta 0, Eq. 7 off and a reconstruction loss that ignores z: only Eq. 11's environment
    term is left. As printed (the base posterior against N(mu~e, var~e)) it moves the profile
    means; on the fused Gaussian (DMRec) mu~e cancels ((mu + mu~e) - mu~e) and their gradient
    is exactly zero."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    mu_k.retain_grad()
    total, _ = pc.generative_objective(lambda z: z.sum(-1) * 0.0, mu, logvar, mu_k, logvar_k,
                                       envs=3, alpha=0.3, beta=0.0, lambda1=1.0, lambda2=0.0,
                                       lambda3=0.0, align='fused' if align_fused else 'posterior',
                                       rng=np.random.default_rng(0))
    total.backward()
    if align_fused:
        assert torch.count_nonzero(mu_k.grad) == 0
    else:
        assert mu_k.grad.abs().min() > 0


def test_eq11_as_printed_by_hand_at_beta_0():
    """One environment, no mixing, beta 0: Eq. 11 is KL(N(mu, var) || N(m, v)), the base
    posterior against the mean profile Gaussian; L_rec still reads the fused sample."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    var = logvar.exp()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    total, parts = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, envs=1, alpha=0.1,
                                           beta=0.0, lambda1=1.0, lambda2=0.0, lambda3=0.0,
                                           mixing='mean', generator=g1)
    m, v = mu_k.mean(0), var_k.mean(0)
    kl = torch.tensor([kl_by_hand(mu[b], var[b], m[b], v[b]) for b in range(len(mu))])
    assert float(parts['align']) == pytest.approx(kl.mean().item(), rel=1e-5)
    z = mu + m + (var * v).sqrt() * torch.randn(mu.shape, generator=g2)
    assert total.item() == pytest.approx((nll_fn(z) + kl).mean().item(), rel=1e-5)


def test_generative_uniformity_replaces_eq7():
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    kw = dict(envs=1, alpha=0.1, beta=0.5, lambda1=0.0, lambda2=1.0, lambda3=0.0)
    _, parts = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, reg='uniformity', **kw)
    assert float(parts['reg']) == pytest.approx(pc.uniformity_reg(mu_k).item(), rel=1e-6)
    _, plain = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, **kw)
    assert float(plain['reg']) == pytest.approx(pc.contrastive_reg(mu_k).item(), rel=1e-6)


def test_alignment_over_distinct_entities_ignores_repeated_rows():
    """Eq. 13's InfoNCE runs over the distinct users and items of a batch: a batch with
    repeated rows gives each row its entity's value, the same as the batch without repeats."""
    torch.manual_seed(4)
    z, c = torch.randn(4, 6), torch.randn(2, 4, 6)  # 4 distinct entities, E = 2 environments
    ids = torch.tensor([7, 3, 9, 5])
    once = pc.entity_alignment(z, c, ids)  # [E, 4]
    assert torch.allclose(once, torch.stack([pc.info_nce_rows(z, c_e) for c_e in c]))
    rows = torch.tensor([0, 1, 1, 2, 0, 3, 3, 3])  # the same entities, repeated
    twice = pc.entity_alignment(z[rows], c[:, rows], ids[rows])  # [E, 8]
    assert torch.allclose(twice, once[:, rows])
    assert not torch.allclose(torch.stack([pc.info_nce_rows(z[rows], c_e[rows]) for c_e in c]),
                              once[:, rows])  # row-wise InfoNCE would count copies as negatives


def test_alignment_needs_the_batch_ids():
    f, (z_u, z_i, z_j), texts = disc_inputs()
    c_u, c_i, c_j = (f(t) for t in texts)
    with pytest.raises(ValueError, match='users=, pos_items= and neg_items='):
        pc.discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, envs=2, alpha=0.1,
                                    lambda1=0.1, lambda2=0.0, lambda3=1.0)


def test_fused_gradient_reaches_the_aggregation_mlp_through_the_sample():
    """The fused sample carries the profile Gaussian: with Eq. 11 and Eq. 7 off (lambda1 =
    lambda2 = 0) the only path to f_psi^a is the reconstruction of z_e, and it is not zero."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    total, _ = pc.generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, envs=3, alpha=0.1,
                                       beta=0.5, lambda1=0.0, lambda2=0.0, lambda3=1.0)
    total.backward()
    for p in agg.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('shared', [True, False])
def test_generative_shared_mixing_draws_one_weight_per_environment(shared):
    """B copies of one user with a near-zero posterior variance, so z_e is the fused mean:
    shared_mixing (one theta^e for the batch) gives B equal rows in every environment; the
    paper's draw per user gives B different rows."""
    agg, decoder, mu, logvar, c, nll_fn = gen_inputs()
    mu_k, logvar_k = agg(c)
    var_k = logvar_k.exp()
    B = mu.shape[0]
    seen = []
    def record(z):  # [B, d] -> [B], keeps each environment's z_e
        seen.append(z.detach())
        return nll_fn(z)
    pc.generative_objective(record, mu[:1].expand(B, -1), torch.full((B, 2), -27.6),
                            mu_k[:, :1].expand(-1, B, -1), logvar_k[:, :1].expand(-1, B, -1),
                            envs=2, alpha=0.1, beta=0.5, lambda1=0.0, lambda2=0.0, lambda3=0.0,
                            mixing='shared' if shared else 'per-entity', rng=np.random.default_rng(0))
    spread = max((z - z[:1]).abs().max().item() for z in seen)  # across the B rows
    assert len(seen) == 2
    assert (spread < 1e-5) if shared else (spread > 1e-3)


# ---------------------------------------------------------------- command line

def parser():
    return E.add_proex_args(argparse.ArgumentParser())


def test_defaults_and_released_shorthand():
    a = parser().parse_args([])
    assert (a.envs, a.alpha, a.lambda1, a.lambda2, a.lambda3, a.tau, a.profiles) == \
        (3, 0.1, 0.0, 0.01, 1.0, 0.2, 'all')
    r = E.resolve_proex_args(parser(), ['--proex', '--released', '--envs', '3'])
    assert r.uniformity_reg and r.shared_mixing and r.unbiased_var
    assert (r.lambda1, r.lambda3, r.envs, r.lambda2) == (0.0, 10.0, 3, 0.4)
    plain = E.resolve_proex_args(parser(), ['--proex'])
    assert not (plain.uniformity_reg or plain.shared_mixing or plain.unbiased_var)
    assert (plain.lambda1, plain.lambda2, plain.lambda3, plain.envs) == (0.0, 0.01, 1.0, 3)


@pytest.mark.parametrize('generative', [False, True])
def test_only_generative_parsers_know_beta_and_sum_of_samples(generative, capsys):
    """The flags of the other model family are absent (argparse refuses them as unknown),
    not accepted and then refused, and --help does not list them."""
    p = E.add_proex_args(argparse.ArgumentParser(), generative=generative)
    for flag in ('--beta', '--sum-of-samples', '--profile-input'):
        assert (flag in p.format_help()) == generative
    if generative:
        a = E.resolve_proex_args(p, ['--proex', '--beta', '0.2', '--sum-of-samples'], True)
        assert a.beta == 0.2 and a.sum_of_samples
    else:
        with pytest.raises(SystemExit):
            p.parse_args(['--beta', '0.2'])
        assert 'unrecognized arguments: --beta' in capsys.readouterr().err


@pytest.mark.parametrize('generative,argv,flag', [
    (False, ['--envs', '5'], '--envs'), (False, ['--lambda2', '1'], '--lambda2'),
    (False, ['--lambda3', '2'], '--lambda3'), (False, ['--lambda1', '0.5'], '--lambda1'),
    (True, ['--envs', '2'], '--envs')])
def test_a_value_that_released_overrides_is_an_error(generative, argv, flag):
    """--released sets envs, lambda2, lambda3 (and lambda1 = 0 for the discriminative
    models): another value given beside it is named, not silently replaced."""
    p = E.add_proex_args(argparse.ArgumentParser(), generative=generative)
    with pytest.raises(SystemExit) as e:
        E.resolve_proex_args(p, ['--proex', '--released', *argv], generative)
    assert str(e.value).startswith(f'error: argument {flag}: --released sets')
    same = E.resolve_proex_args(p, ['--proex', '--released', '--lambda2', '0.4'], generative)
    assert same.lambda2 == 0.4                                  # the value it sets anyway: fine


def test_generative_released_keeps_lambda1():
    """lambda1 weights the KL to the prior in the generative models: --released keeps it."""
    p = E.add_proex_args(argparse.ArgumentParser(), generative=True, lambda1=1.0)
    r = E.resolve_proex_args(p, ['--proex', '--released', '--lambda1', '0.5'], True)
    assert (r.lambda1, r.lambda2, r.lambda3, r.envs) == (0.5, 0.4, 10.0, 3)


def test_resolve_ablations():
    p = parser()
    r = E.resolve_proex_args(p, ['--proex', '--no-var', '--no-reg', '--no-align', '--lambda1', '0.1'])
    assert (r.lambda3, r.envs, r.lambda2, r.lambda1) == (0.0, 1, 0.0, 0.0)
    assert [p.get_default(k) for k in ('lambda3', 'envs', 'lambda2', 'lambda1')] == [1.0, 3, 0.01, 0.0]  # parser untouched
    assert E.resolve_proex_args(p, ['--proex']).lambda2 == 0.01  # the same parser, parsed again
    assert E.resolve_proex_args(parser(), ['--proex', '--no-mixing']).envs == 1
    off = E.resolve_proex_args(parser(), ['--no-mixing', '--profiles', '7'])  # without --proex
    assert (off.envs, off.no_mixing, off.profiles) == (3, False, 'all')  # noted, then unused


def test_a_model_files_own_defaults_are_its_defaults():
    """A model file that passes its own lambda2 / envs / alpha gets them, --help names where
    they come from, and --released compares a given value with the file's default (the file's
    default beside --released is not 'another value')."""
    p = E.add_proex_args(argparse.ArgumentParser(), lambda2=0.0, envs=2, alpha=0.3,
                          chosen='picked on validation')
    a = E.resolve_proex_args(p, ['--proex'])
    assert (a.lambda2, a.envs, a.alpha) == (0.0, 2, 0.3)
    assert ' '.join(p.format_help().split()).count('picked on validation') == 3
    r = E.resolve_proex_args(p, ['--proex', '--released'])
    assert (r.lambda2, r.envs) == (0.4, 3)
    with pytest.raises(SystemExit, match='--lambda2 0.01 would be ignored'):
        E.resolve_proex_args(p, ['--proex', '--released', '--lambda2', '0.01'])


@pytest.mark.parametrize('argv,flag', [(['--no-reg'], '--no-reg'),
                                       (['--infonce-reg'], '--infonce-reg'),
                                       (['--uniformity-reg'], '--uniformity-reg')])
def test_a_switch_of_l_reg_at_lambda2_0_is_refused(argv, flag):
    """With L_reg off (lambda2 = 0), --no-reg or a form of Eq. 7 would change nothing: refused
    with the flag named, not run as plain --proex; with lambda2 > 0 each is accepted."""
    p = E.add_proex_args(argparse.ArgumentParser(), lambda2=0.0)
    with pytest.raises(SystemExit, match=f'^error: argument {flag}: L_reg is'):
        E.resolve_proex_args(p, ['--proex', *argv])
    assert E.resolve_proex_args(p, ['--proex', '--lambda2', '0.01', *argv]).proex
    assert E.resolve_proex_args(p, ['--proex', '--released', '--uniformity-reg']).lambda2 == 0.4


@pytest.mark.parametrize('default', [False, True])
def test_the_form_of_eq7_is_a_file_default_with_a_flag_each_way(default):
    """--infonce-reg / --no-infonce-reg pick Eq. 7's sign over the file's default; the flag that
    restates the default is accepted beside --uniformity-reg, the other one is refused there."""
    p = E.add_proex_args(argparse.ArgumentParser(), infonce_reg=default, form_why='why')
    assert E.resolve_proex_args(p, ['--proex']).infonce_reg is default
    assert E.resolve_proex_args(p, ['--proex', '--infonce-reg']).infonce_reg is True
    assert E.resolve_proex_args(p, ['--proex', '--no-infonce-reg']).infonce_reg is False
    assert E.switches(E.resolve_proex_args(p, ['--proex']))['reg'] == ('infonce' if default else 'printed')
    other = '--no-infonce-reg' if default else '--infonce-reg'
    with pytest.raises(SystemExit, match=f'^error: argument {other}: --uniformity-reg'):
        E.resolve_proex_args(p, ['--proex', '--uniformity-reg', other])
    assert E.resolve_proex_args(p, ['--proex', '--uniformity-reg']).uniformity_reg
    form = 'InfoNCE' if default else 'as printed'
    assert f'(default: {form}; why)' in ' '.join(p.format_help().split())


@pytest.mark.parametrize('name', ['gccf', 'lightgcn', 'simgcl'])
def test_discriminative_proex_defaults_are_the_configuration_validation_chose(name):
    """`--proex` alone parses to the ProEx configuration the ml100k protocol chose on validation
    (its result file is in the repository), Eq. 7's form included."""
    import importlib
    import json
    from pathlib import Path
    mod = importlib.import_module(name)
    r = json.loads((Path(__file__).parent.parent / 'bench' / 'results' /
                    f'protocol_ml100k_{name}.json').read_text())
    assert vars(mod.parse_args(['--proex'])) == vars(mod.parse_args(r['chosen']['proex'].split()))
    assert mod.parse_args(['--proex']).infonce_reg is False  # the grid spells Eq. 7 as printed


MODEL_FILES = ['lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga']


@pytest.mark.parametrize('name', MODEL_FILES)
@pytest.mark.parametrize('argv,flag', [(['--proex', '--lambda4', '1'], '--lambda4'),
                                       (['--proex', '--env', '5'], '--env'),        # not --envs
                                       (['--proex', '--no-mix'], '--no-mix'),       # not --no-mixing
                                       (['--epoch', '3'], '--epoch')])              # not --epochs
def test_model_parsers_refuse_unknown_flags_and_prefixes(name, argv, flag, capsys):
    """The ProEx flags join each model file's own parser; a misspelt or shortened flag is an
    error there (allow_abbrev is off), not silently read as another flag."""
    module = __import__(name)
    with pytest.raises(SystemExit) as e:
        module.parse_args(argv)
    assert str(e.value.code).startswith(f'error: unrecognized arguments: {flag}')  # one line
    assert module.parse_args(['--proex', '--envs', '5']).envs == 5  # the full name works


def test_stack_views_pca_keeps_the_leading_directions():
    torch.manual_seed(21)
    basis = torch.linalg.qr(torch.randn(12, 12))[0]  # orthonormal directions of the text space
    scale = torch.tensor([5.0, 3.0] + [0.01] * 10)  # two strong directions, ten weak ones
    views = [(torch.randn(40, 12) * scale) @ basis.T + 1.0 for _ in range(3)]  # K = 3, n = 40
    full = pc.stack_views(views)
    assert full.shape == (3, 40, 12) and torch.equal(full[1], views[1])
    low, same = pc.project_views(full[:, :20], full[:, 20:], profile_dim=2)  # [K, 20, 2] each
    low = torch.cat([low, same], dim=1)  # [K, n, 2]
    assert low.shape == (3, 40, 2)
    centred = full.reshape(-1, 12) - full.reshape(-1, 12).mean(0)
    # the projection keeps almost all of the variance, and distances between profile vectors
    assert low.reshape(-1, 2).var(0).sum() / centred.var(0).sum() > 0.99
    d_full = torch.cdist(centred[:20], centred[:20])
    d_low = torch.cdist(low.reshape(-1, 2)[:20], low.reshape(-1, 2)[:20])
    assert torch.allclose(d_full, d_low, atol=0.2)
    assert low.reshape(-1, 2).var(0)[0] > low.reshape(-1, 2).var(0)[1]  # leading direction first


def test_profile_dim_keeps_the_order_of_user_item_products():
    """One PCA for users and items together: on low-rank profiles whose users and items sit
    around different centres, the projected user-item inner products keep the order of the
    raw ones (correlation above 0.5); the mapping of Eq. 6 reads one coordinate system."""
    torch.manual_seed(8)
    basis = torch.linalg.qr(torch.randn(32, 32))[0][:, :4]  # a rank-4 text space, [32, 4]
    users = (torch.randn(2, 60, 4) @ basis.T) + 0.3 * basis[:, 0]  # K = 2, [2, 60, 32]
    items = (torch.randn(2, 50, 4) @ basis.T) - 0.3 * basis[:, 1]  # [2, 50, 32]
    users, items = users + 0.01 * torch.randn_like(users), items + 0.01 * torch.randn_like(items)
    pu, pi = pc.project_views(users, items, profile_dim=4)  # [2, 60, 4], [2, 50, 4]
    raw = torch.einsum('kud,kid->kui', users, items).flatten()
    low = torch.einsum('kud,kid->kui', pu, pi).flatten()
    assert torch.corrcoef(torch.stack([raw, low]))[0, 1] > 0.5
    assert pc.project_views(users, items)[0] is users  # no profile_dim: unchanged


# ---------------------------------------------------------------- entry-point checks

def test_views_given_entity_first_are_refused_with_the_layout():
    rng = np.random.default_rng(1)
    usr, itm = rng.normal(size=(9, 4, 5)), rng.normal(size=(7, 4, 5))  # [n, K, d_s]: wrong
    with pytest.raises(ValueError, match=r"usr_prf: expected K arrays \[n, d_s\] .*got \[9, 4, 5\]"):
        pc.ProfileEncoder(usr, itm, d=3)
    enc = pc.ProfileEncoder(usr.transpose(1, 0, 2), itm.transpose(1, 0, 2), d=3)  # [K, n, d_s]
    assert enc(torch.tensor([0, 8]), [1, 2], np.array([3, 6]))[0].shape == (4, 2, 3)  # ids: any int
    with pytest.raises(ValueError, match=r'users: expected integer ids \[B\]'):
        enc.users(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match='the same K and d_s'):
        pc.ProfileEncoder(usr.transpose(1, 0, 2), itm.transpose(1, 0, 2)[:3], d=3)


def test_aggregator_takes_scipy_numpy_or_torch_train_matrices():
    import scipy.sparse as sp
    rng = np.random.default_rng(2)
    dense = (rng.random((6, 5)) < 0.5).astype(np.float32)
    usr, itm = [rng.normal(size=(6, 3)) for _ in range(2)], [rng.normal(size=(5, 3)) for _ in range(2)]
    outs = []
    for train in (sp.coo_matrix(dense), dense, torch.from_numpy(dense), torch.from_numpy(dense).to_sparse()):
        torch.manual_seed(0)
        outs.append(pc.ProfileAggregator(usr, itm, train, d=2, hidden=4)([5, 0])[0])
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    for train in (sp.coo_matrix(dense), sp.csc_matrix(dense), dense):  # rows_of alone, any layout
        assert torch.equal(pc.rows_of(train, 2, 5), torch.from_numpy(dense[2:5]))
    with pytest.raises(TypeError, match=r'train: expected the \[U, I\] user-item matrix'):
        pc.ProfileAggregator(usr, itm, dense.tolist(), d=2)
    with pytest.raises(ValueError, match=r'train: expected \[U, I\] with U, I = 6, 5'):
        pc.ProfileAggregator(usr, itm, dense[:4], d=2)


def test_generative_objective_names_the_layout():
    mu = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"mu_k: expected \[K, B, d\].*got \[5, 3, 2\], the transposed "
                       r"layout \[B, K, d\] with K = 3; pass mu_k.transpose\(0, 1\)"):
        pc.generative_objective(lambda z: z.sum(-1), mu, mu, torch.randn(5, 3, 2), torch.randn(5, 3, 2))
    with pytest.raises(ValueError, match=r"logvar: expected \[B, d\]"):
        pc.generative_objective(lambda z: z.sum(-1), mu, mu[:4], torch.randn(3, 5, 2), torch.randn(3, 5, 2))


def test_the_index_names_every_public_definition():
    import inspect
    import re
    public = [n for n, o in vars(pc).items() if not n.startswith('_') and
              (inspect.isfunction(o) or inspect.isclass(o)) and o.__module__ == 'proex_core']
    assert len(public) > 40 and [n for n in public if not re.search(rf'\b{n}\b', pc.__doc__)] == []


@pytest.mark.parametrize('name', ['gccf', 'lightgcn', 'simgcl'])
@pytest.mark.parametrize('dataset,envs,lambda2', [('book', 3, 0.4), ('yelp', 3, 0.4), ('steam', 2, 2.0)])
def test_paper_datasets_resolve_to_the_paper_and_released_values(name, dataset, envs, lambda2):
    """On book, yelp and steam `--proex` is the paper's K, lambda3, tau and Eq. 7 as printed, with
    the released configuration's E, alpha, lambda2 (lambda1 0), whatever ml100k's choice is."""
    import importlib
    a = importlib.import_module(name).parse_args(['--proex', '--dataset', dataset])
    assert (a.envs, a.alpha, a.lambda1, a.lambda2, a.lambda3, a.tau, a.infonce_reg, a.profiles) == \
        (envs, 0.1, 0.0, lambda2, 1.0, 0.2, False, 'all')
    assert importlib.import_module(name).parse_args(['--proex', '--dataset', 'Book']).envs == 3
