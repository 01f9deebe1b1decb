"""Tests of ldiffrec.py: the schedule, the forward process and the posterior against their
closed forms, the importance sampler, the losses and their weights by hand, the timestep
embedding, predict (Alg. 2), --mlp-dims, and short runs on `synthetic` (base and --proex).
Run: python -m pytest -q tests/test_ldiffrec.py
"""
import math

import pytest
import torch

import ldiffrec as L


def hand_schedule(T, s, a_min, a_max):
    """abar_t from the linear-var definition 1 - abar_t = s (a_min + (t-1)/(T-1)(a_max - a_min))."""
    return [1 - s * (a_min + (t - 1) / (T - 1) * (a_max - a_min)) for t in range(1, T + 1)]


# ---------------------------------------------------------------- schedule

@pytest.mark.parametrize('T,s,a_min,a_max', [(5, 1e-2, 1e-3, 1e-2), (40, 1e-3, 5e-4, 5e-3),
                                             (100, 1e-5, 5e-3, 1e-2), (5, 0.5, 1e-3, 5e-3)])
def test_schedule_betas_in_range_and_abar_decreasing(T, s, a_min, a_max):
    d = L.GaussianDiffusion(T, s, a_min, a_max)
    assert d.betas.shape == (T,) and d.betas.dtype == torch.float64
    assert ((d.betas > 0) & (d.betas < 1)).all()
    assert (d.alphas_cumprod[1:] < d.alphas_cumprod[:-1]).all()            # strictly decreasing
    # 1 - abar_t is linear from s * a_min to s * a_max (the 'linear-var' schedule)
    assert torch.allclose(d.alphas_cumprod, torch.tensor(hand_schedule(T, s, a_min, a_max),
                                                         dtype=torch.float64), rtol=0, atol=1e-12)


def test_betas_linear_var_by_hand():
    # 1 - abar = 0.1 * (0.1, 0.3, 0.5): abar = 0.99, 0.97, 0.95; beta_t = 1 - abar_t / abar_{t-1}
    b = L.betas_linear_var(3, 0.1, 0.1, 0.5)
    assert b.dtype == torch.float64
    assert b.tolist() == pytest.approx([0.01, 1 - 0.97 / 0.99, 1 - 0.95 / 0.97], rel=1e-12)
    assert L.betas_linear_var(1, 0.2, 0.5, 0.9).tolist() == pytest.approx([0.1])  # T = 1: s a_min
    # abar 0.5 then 1e-7: beta_2 = 1 - 2e-7 is capped at 0.999 (DiffRec's max_beta)
    assert L.betas_linear_var(2, 1.0, 0.5, 1 - 1e-7).tolist() == pytest.approx([0.5, 0.999])


def test_q_sample_statistics():
    torch.manual_seed(0)
    d = L.GaussianDiffusion(5, 0.5, 1e-2, 0.5)                # noisy enough to measure
    x0 = torch.tensor([0.5, -1.0, 2.0]).repeat(200000, 1)     # [N, 3]
    for t_val in (0, 4):
        t = torch.full((x0.shape[0],), t_val)
        x_t = d.q_sample(x0, t, torch.randn_like(x0))
        abar = d.alphas_cumprod[t_val].item()
        assert torch.allclose(x_t.mean(0), math.sqrt(abar) * x0[0], atol=0.01)
        assert torch.allclose(x_t.std(0), torch.full((3,), math.sqrt(1 - abar)), atol=0.01)


def test_posterior_coefficients_by_hand():
    T, s, a_min, a_max = 4, 0.3, 1e-2, 0.2
    d = L.GaussianDiffusion(T, s, a_min, a_max)
    abar = hand_schedule(T, s, a_min, a_max)
    for t in range(T):
        ab, ab_prev = abar[t], (abar[t - 1] if t > 0 else 1.0)
        beta = 1 - ab / ab_prev
        assert d.betas[t].item() == pytest.approx(beta, rel=1e-9)
        # q(x_{t-1}|x_t, x_0): mean = coef1 x_0 + coef2 x_t, variance (Ho et al. Eq. 6-7)
        assert d.posterior_mean_coef1[t].item() == pytest.approx(math.sqrt(ab_prev) * beta / (1 - ab))
        assert d.posterior_mean_coef2[t].item() == pytest.approx(
            math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab))
        assert d.posterior_variance[t].item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta,
                                                               abs=1e-15)
    # the posterior mean on a batch uses the coefficients of each row's own t
    x0, x_t, t = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 3, 1])
    mean, var = d.q_posterior_mean_variance(x0, x_t, t)
    for r in range(3):
        c1, c2 = d.posterior_mean_coef1[t[r]].item(), d.posterior_mean_coef2[t[r]].item()
        assert torch.allclose(mean[r], c1 * x0[r] + c2 * x_t[r], atol=1e-6)
    assert var.shape == (3, 1)


def test_q_sample_closed_form_per_row():
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, each row at its own t, with abar_t from
    the linear-var definition (no sampling inside: the noise is an argument)."""
    T, s, a_min, a_max = 4, 0.3, 1e-2, 0.2
    abar = hand_schedule(T, s, a_min, a_max)
    d = L.GaussianDiffusion(T, s, a_min, a_max)
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    eps = torch.tensor([[0.3, 0.1], [-1.0, 2.0], [0.0, -0.5]])
    t = torch.tensor([0, 3, 1])
    want = torch.tensor([[math.sqrt(abar[k]) * x0[r, c].item() + math.sqrt(1 - abar[k]) * eps[r, c].item()
                          for c in range(2)] for r, k in enumerate(t.tolist())])
    assert torch.allclose(d.q_sample(x0, t, eps), want, atol=1e-6)
    assert torch.equal(d.q_sample(x0, t, torch.zeros_like(x0)),
                       x0 * torch.tensor([math.sqrt(abar[k]) for k in t.tolist()])[:, None])


def test_q_posterior_closed_form_and_its_consistency():
    """q(x_{t-1} | x_t, x_0) = N(mean, var I) with (Ho et al. 2020, Eq. 7)
    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    var = (1 - abar_{t-1}) / (1 - abar_t) beta_t. At the first step (abar_0 = 1) the posterior is
    x_0 itself with variance 0; from a noise-free x_t = sqrt(abar_t) x_0 its mean is
    sqrt(abar_{t-1}) x_0, the noise-free x_{t-1}."""
    T, s, a_min, a_max = 4, 0.3, 1e-2, 0.2
    abar = [1.0] + hand_schedule(T, s, a_min, a_max)                # abar[k + 1] is step k
    d = L.GaussianDiffusion(T, s, a_min, a_max)
    x0 = torch.tensor([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0], [-1.0, 0.0]])
    x_t = torch.tensor([[0.2, 0.4], [-1.0, 2.0], [0.7, -0.5], [1.5, 1.5]])
    t = torch.tensor([0, 1, 2, 3])
    mean, var = d.q_posterior_mean_variance(x0, x_t, t)
    assert mean.shape == (4, 2) and var.shape == (4, 1)
    for r, k in enumerate(t.tolist()):
        ab, ab_prev = abar[k + 1], abar[k]
        beta = 1 - ab / ab_prev
        c1 = math.sqrt(ab_prev) * beta / (1 - ab)
        c2 = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
        for c in range(2):
            assert mean[r, c].item() == pytest.approx(c1 * x0[r, c].item() + c2 * x_t[r, c].item(),
                                                      rel=1e-5, abs=1e-6)
        assert var[r, 0].item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta, rel=1e-5, abs=1e-12)
    assert torch.allclose(mean[0], x0[0], atol=1e-6) and var[0, 0].item() == 0.0
    clean = x0 * torch.tensor([math.sqrt(abar[k + 1]) for k in range(4)])[:, None]
    mean, _ = d.q_posterior_mean_variance(x0, clean, t)
    assert torch.allclose(mean, x0 * torch.tensor([math.sqrt(abar[k]) for k in range(4)])[:, None],
                          atol=1e-6)


def test_loss_weight_is_snr_difference():
    d = L.GaussianDiffusion(5, 1e-2, 1e-3, 1e-2)
    snr = [a / (1 - a) for a in hand_schedule(5, 1e-2, 1e-3, 1e-2)]
    w = d.loss_weight(torch.arange(5))
    assert w[0].item() == 1.0
    for t in range(1, 5):
        assert w[t].item() == pytest.approx(snr[t - 1] - snr[t], rel=1e-4)


def test_p_sample_runs_all_steps_from_the_input():
    """With a denoiser that predicts x_0 = 0, each reverse step is x_{t-1} = coef2_t x_t,
    so the result is prod_t coef2_t * x_start: no noise, all T steps."""
    d = L.GaussianDiffusion(5, 0.5, 1e-2, 0.5)
    x = torch.randn(4, 3)
    out = d.p_sample(lambda x_t, t: torch.zeros_like(x_t), x)
    assert torch.allclose(out, d.posterior_mean_coef2.prod().float() * x, atol=1e-6)


# ---------------------------------------------------------------- importance sampling

def test_importance_sampler_uniform_until_full_then_proportional():
    torch.manual_seed(1)
    s = L.ImportanceSampler(3, history=2, uniform_prob=0.0)
    t, pt = s.sample_timesteps(5, 'cpu')
    assert torch.equal(pt, torch.ones(5))                          # uniform: weights 1
    s.update(torch.tensor([0, 0, 0, 1, 2]), torch.tensor([9.0, 1.0, 1.0, 3.0, 4.0]))
    assert s.Lt_count.tolist() == [2, 1, 1]
    assert s.Lt_history[0].tolist() == [1.0, 1.0]                  # keeps the last 2
    assert (s.sample_timesteps(5, 'cpu')[1] == 1).all()            # steps 1, 2 not full yet
    s.update(torch.tensor([1, 2]), torch.tensor([3.0, 4.0]))
    t, pt = s.sample_timesteps(20000, 'cpu')
    p = torch.tensor([1.0, 3.0, 4.0]) / 8                          # sqrt(mean L^2) = 1, 3, 4
    assert torch.allclose(torch.bincount(t, minlength=3) / 20000., p, atol=0.01)
    assert torch.allclose(pt, (p * 3)[t])                          # loss / (T p_t)


def test_importance_sampler_history_rolls_and_mixes_the_uniform_law():
    s = L.ImportanceSampler(2, history=2, uniform_prob=0.5)
    for t, loss in ((0, 1.0), (0, 2.0), (0, 3.0), (1, 4.0)):       # one example per update
        s.update(torch.tensor([t]), torch.tensor([loss]))
    assert s.Lt_history[0].tolist() == [2.0, 3.0] and s.Lt_count.tolist() == [2, 1]
    assert (s.sample_timesteps(4, 'cpu')[1] == 1).all()            # step 1 not full: uniform
    s.update(torch.tensor([1]), torch.tensor([4.0]))
    # sqrt(mean L^2) = sqrt(6.5), 4; p_t = 0.5 * that / sum + 0.5 / 2
    r = torch.tensor([math.sqrt(6.5), 4.0])
    p = 0.5 * r / r.sum() + 0.25
    t, pt = s.sample_timesteps(6, 'cpu')
    assert torch.allclose(pt, (2 * p)[t].float())                  # returned weight T p_t


def test_importance_sampler_is_uniform_until_every_step_is_full():
    """Full histories at steps 0-2 with large losses do not bias t while step 3 lacks one."""
    torch.manual_seed(3)
    s = L.ImportanceSampler(4, history=3, uniform_prob=0.0)
    s.update(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]),
             torch.tensor([50.0, 50.0, 50.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
    assert s.Lt_count.tolist() == [3, 3, 3, 2]
    t, pt = s.sample_timesteps(8000, 'cpu')
    assert torch.equal(pt, torch.ones(8000))
    assert torch.allclose(torch.bincount(t, minlength=4) / 8000., torch.full((4,), 0.25), atol=0.02)


def test_importance_sampler_probabilities_sum_to_one_and_weights_are_unbiased():
    """p_t = (1 - u) sqrt(E L_t^2) / sum + u / T: with u = 0.2, T = 4 and sqrt(E L_t^2) =
    (2, 0, 1, 1), p = (0.45, 0.05, 0.25, 0.25). A step with zero loss keeps u / T, the p_t sum
    to 1, and E[1 / (T p_t)] = sum_t p_t / (T p_t) = 1: dividing the loss by T p_t keeps its mean."""
    torch.manual_seed(4)
    s = L.ImportanceSampler(4, history=3, uniform_prob=0.2)
    s.update(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]),
             torch.tensor([2.0, -2.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0]))
    t, pt = s.sample_timesteps(40000, 'cpu')
    p = torch.tensor([0.45, 0.05, 0.25, 0.25])
    seen = {k: pt[t == k].unique().tolist() for k in range(4)}      # one weight per step
    assert seen == {k: [pytest.approx(4 * p[k].item(), rel=1e-6)] for k in range(4)}
    assert sum(v[0] for v in seen.values()) / 4 == pytest.approx(1.0)
    assert torch.allclose(torch.bincount(t, minlength=4) / 40000., p, atol=0.01)
    assert (1 / pt).mean().item() == pytest.approx(1.0, abs=0.03)


# ---------------------------------------------------------------- losses and weights

def test_diffusion_loss_by_hand():
    """L_t = w_t * mean_d (x_theta - x_0)^2: with a denoiser predicting 0 it is w_t * mean x_0^2."""
    d = L.GaussianDiffusion(5, 1e-2, 1e-3, 1e-2)
    x0, t = torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([0, 3])
    loss, pred = L.diffusion_loss(lambda x_t, t: torch.zeros_like(x_t), d, x0, t, torch.randn(2, 2))
    w = d.loss_weight(t)
    assert torch.allclose(loss, w * torch.tensor([5.0, 2.0])) and torch.equal(pred, torch.zeros(2, 2))


def test_loss_weights_schedules_by_hand():
    """lamda decays linearly per epoch to its floor; the KL weight grows per batch to its cap
    (the official L-DiffRec training loop, YiyanXu/DiffRec)."""
    a = L.parse_args([])                                     # lamda 0.05 -> 0.005 over 500
    assert (a.lamda, a.anneal_cap, a.anneal_steps, a.vae_anneal_cap, a.vae_anneal_steps) == \
        (0.05, 0.005, 500, 0.3, 200)
    assert L.loss_weights(a, 1, 0) == pytest.approx((0.05, 0.0))
    assert L.loss_weights(a, 251, 50) == pytest.approx((0.025, 0.25))   # half-way; 50 / 200
    assert L.loss_weights(a, 500, 100) == pytest.approx((0.005, 0.3))   # floor; capped at 0.3
    b = L.parse_args(['--anneal-steps', '0', '--vae-anneal-steps', '0', '--lamda', '0.2'])
    assert L.loss_weights(b, 7, 3) == pytest.approx((0.2, 0.3))         # constant weights


def test_loss_weights_floor_and_cap_reached_and_kept():
    """lamda = max((1 - (epoch - 1) / 500) * 0.05, 0.005) reaches its floor at epoch 451
    (1 - 450 / 500 = 0.1) and stays there; the KL weight min(0.3, step / 200) grows by 1/200 per
    batch and so reaches 0.3 at batch 60, then stays."""
    a = L.parse_args([])
    lamdas = [L.loss_weights(a, e, 0)[0] for e in (2, 101, 450, 451, 452, 2000)]
    assert lamdas == pytest.approx([0.05 * (1 - 1 / 500), 0.04, 0.05 * (1 - 449 / 500),
                                    0.005, 0.005, 0.005])
    anneals = [L.loss_weights(a, 1, b)[1] for b in (1, 20, 59, 60, 61, 10000)]
    assert anneals == pytest.approx([1 / 200, 0.1, 0.295, 0.3, 0.3, 0.3])
    c = L.parse_args(['--lamda', '0.001'])                      # below the floor: the floor
    assert L.loss_weights(c, 1, 0)[0] == pytest.approx(0.005)
    d = L.parse_args(['--anneal-steps', '10', '--vae-anneal-steps', '4', '--vae-anneal-cap', '1'])
    assert L.loss_weights(d, 6, 2) == pytest.approx((0.05 * 0.5, 0.5))


# ---------------------------------------------------------------- networks

def test_denoiser_layers_mirror_diffrec():
    d = L.Denoiser(300, [200, 600])
    sizes = [(m.in_features, m.out_features) for m in d.mlp if isinstance(m, torch.nn.Linear)]
    assert sizes == [(310, 600), (600, 200), (200, 600), (600, 300)]
    d.eval()
    assert d(torch.randn(4, 300), torch.tensor([0, 1, 2, 3])).shape == (4, 300)
    emb = L.timestep_embedding(torch.tensor([0, 7]), 10)
    assert emb.shape == (2, 10) and torch.equal(emb[0], torch.tensor([1.] * 5 + [0.] * 5))


def test_encoder_is_tanh_linear_and_eval_is_deterministic():
    torch.manual_seed(2)
    ae = L.AutoEncoder(20, 4).eval()
    x = (torch.rand(3, 20) < 0.3).float()
    x_out, mu, logvar = ae.encode(x)
    h = torch.tanh(ae.encoder(x))
    assert torch.equal(x_out, x) and torch.allclose(torch.cat([mu, logvar], -1), h, atol=1e-6)
    assert ae.decode(mu).shape == (3, 20)


@pytest.mark.parametrize('dim', [10, 7, 1])
def test_timestep_embedding_by_hand(dim):
    """[cos(t f_0..f_{h-1}), sin(t f_0..f_{h-1})] with h = dim // 2 and f_j = 10000^(-j/h);
    an odd dim gets one zero column at the end."""
    t = torch.tensor([0, 3, 40])
    emb = L.timestep_embedding(t, dim)
    assert emb.shape == (3, dim) and emb.dtype == torch.float32
    h = dim // 2
    freqs = [10000.0 ** (-j / h) for j in range(h)]
    for r, step in enumerate(t.tolist()):
        want = [math.cos(step * f) for f in freqs] + [math.sin(step * f) for f in freqs]
        want += [0.0] * (dim % 2)
        assert emb[r].tolist() == pytest.approx(want, abs=1e-5)
    assert emb[0].tolist() == [1.0] * h + [0.0] * (h + dim % 2)  # t = 0: cos 0, sin 0, padding


def test_timestep_embedding_max_period():
    emb = L.timestep_embedding(torch.tensor([2]), 4, max_period=100)   # f = 1, 100^(-1/2)
    want = [math.cos(2), math.cos(0.2), math.sin(2), math.sin(0.2)]
    assert emb[0].tolist() == pytest.approx(want, abs=1e-6)


def test_predict_shape_and_alg2_with_a_known_denoiser():
    """predict = decode(p_sample(mu)); with a denoiser that predicts x_0 = 0 the reverse
    process multiplies by prod_t coef2_t, so the scores are decode(prod * mu); with profiles
    (Alg. 2) mu is replaced by mu + mean_k mu_k of the users asked for."""
    torch.manual_seed(6)
    ae = L.AutoEncoder(n_items=6, d=3).eval()
    diffusion = L.GaussianDiffusion(3, 0.5, 1e-2, 0.5)
    x = (torch.rand(4, 6) < 0.5).float()
    _, mu, _ = ae.encode(x)
    real = L.Denoiser(3, [8], emb_size=4).eval()
    assert L.predict(ae, real, diffusion, x).shape == (4, 6)
    zero = lambda x_t, t: torch.zeros_like(x_t)
    shrink = diffusion.posterior_mean_coef2.prod().item()
    assert torch.allclose(L.predict(ae, zero, diffusion, x), ae.decode(shrink * mu), atol=1e-6)
    mu_k = torch.randn(2, 10, 3)                                      # K = 2 views of 10 users
    asked = []

    def agg(users, x=None):
        asked.append(users.tolist())
        return mu_k[:, users], mu_k[:, users]  # means, log-variances
    users = torch.tensor([7, 0, 7, 3])
    got = L.predict(ae, zero, diffusion, x, agg, users)
    want = ae.decode(shrink * (mu + (mu_k[0, users] + mu_k[1, users]) / 2))
    assert asked == [[7, 0, 7, 3]] and torch.allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------- command line and runs

def test_bad_schedule_and_flag_prefix_are_refused(capsys):
    with pytest.raises(SystemExit, match='noise-min'):
        L.parse_args(['--noise-min', '0.1', '--noise-max', '0.01'])   # min above max
    with pytest.raises(SystemExit, match='unrecognized arguments: --epoch'):                                   # allow_abbrev is off
        L.parse_args(['--epoch', '1'])
    a = L.parse_args(['--noise-min', '0.001', '--noise-max', '0.01'])
    assert (a.noise_min, a.noise_max) == (0.001, 0.01)


def test_mlp_dims_parsing(capsys):
    assert L.dims('300') == [300] and L.dims('200,600') == [200, 600]
    assert L.parse_args([]).mlp_dims == [300]
    a = L.parse_args(['--mlp-dims', '200,600', '--latent-dim', '16'])
    assert a.mlp_dims == [200, 600]
    sizes = [(m.in_features, m.out_features) for m in L.Denoiser(a.latent_dim, a.mlp_dims).mlp
             if isinstance(m, torch.nn.Linear)]
    assert sizes == [(26, 600), (600, 200), (200, 600), (600, 16)]
    for bad in ('200,x', '200,,600', ''):
        with pytest.raises(SystemExit, match='argument --mlp-dims'):
            L.parse_args(['--mlp-dims', bad])


def run_short(extra):
    # learning rates 4x the defaults so that 3 epochs show the trend
    args = L.parse_args(['--dataset', 'synthetic', '--epochs', '3', '--threads', '1',
                         '--eval-every', '1', '--lr', '2e-3', '--lr-denoiser', '4e-4'] + extra)
    return L.main(args)


@pytest.mark.parametrize('extra', [[], ['--proex']])
def test_short_run_improves_validation_recall(extra):
    torch.manual_seed(0)
    result = run_short(extra)
    recalls = [h['val_recall20'] for h in result['history']]
    assert recalls[-1] > recalls[0] + 0.005 and recalls == sorted(recalls), recalls
    test = result['test']
    # synthetic: 2000 items, 4 test items per user; a random ranking has Recall@20 about 0.01
    assert test['recall@20'] > 0.02 and test['recall@10'] < test['recall@20'], test
    assert test['recall@20'] > 0.7 * result['best_val_recall20'], test  # val, test: same size
