"""L-DiffRec (Wang et al., SIGIR'23, "Diffusion Recommender Model", latent variant with one
item cluster), base and with ProEx (KDD'26, Alg. 1-2), in one file.

    python ldiffrec.py                                  # offline first run on `synthetic`
    python ldiffrec.py --dataset book --data-dir DIR
    python ldiffrec.py --proex --dataset ml100k --data-dir DIR --out r.json

Model, top to bottom (DiffRec section names in brackets):
  1. a variational autoencoder compresses the user's row x [I] into a latent z_0 [d]:
     Linear(I -> 2d) + tanh gives mu and logvar, both in (-1, 1)         [L-DiffRec, encoding]
  2. a Gaussian diffusion in that latent space: the forward process adds a little noise,
     x_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, with the linear-variance schedule
     (1 - abar_t grows linearly with t)                                   [forward process]
  3. an MLP x_theta(x_t, t) predicts z_0 (x0 parameterisation), trained with the
     SNR-weighted MSE and importance-sampled timesteps                     [DiffRec training]
  4. the decoder Linear(d -> I) maps the predicted z_0 to item logits; multinomial NLL
     against the (dropped-out) input row                                  [L-DiffRec, decoding]
  5. inference: z = mu (no noise added), then all T reverse steps with the posterior mean
     and no sampling noise, then decode                                    [DiffRec inference]
Loss = lamda * diffusion loss + NLL + anneal * KL(q(z|x) || N(0, I)) (the official code).
With --proex, the K profiles of the user give Gaussians in the same latent space (Eq. 6),
mixed into environments (Eq. 9); the KL term is replaced by Eq. 11 and the latent by a
sample of the fused Gaussian (Eq. 12); the total is Eq. 14 (see proex_core.py).
Inference: z = mu + mean_k mu_k.
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import data as D
import eval as E
import proex_core as P
from eval import TrainLog, add_train_args, interruptible, on_interrupt, start_run, timed

# per-dataset defaults from the paper's grid (steps {5, 40, 100}, scale {1e-5..1e-2}, min
# {5e-4, 1e-3, 5e-3}, max {5e-3, 1e-2}); other datasets: book's. Book: the grid point whose
# loss weights SNR(t-1) - SNR(t) are smallest at T = 5 (mean 2.5e3; 2e4 and up at the other
# T = 5 points), the closest to the official amazon run's balance (its noise scale 0.5 lies
# outside the grid); one run on book, no wider search.
DATASET_DEFAULTS = {
    'book': dict(steps=5, noise_scale=1e-2, noise_min=5e-3, noise_max=1e-2),
}


# ---------------------------------------------------------------------------
# 1. the autoencoder (one cluster: no item clustering, a single encoder and decoder)
# ---------------------------------------------------------------------------
class AutoEncoder(nn.Module):
    """q(z|x) = N(mu, exp(logvar)) with [mu, logvar] = tanh(Linear(dropout(x))); the decoder
    Linear(d -> I) gives item logits. Returns the dropped-out row too: it is the
    reconstruction target (official behaviour, nn.Dropout rescales kept entries by 1/(1-p))."""

    def __init__(self, n_items, d, dropout=0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Linear(n_items, 2 * d)
        self.decoder = nn.Linear(d, n_items)
        xavier_normal_init(self)

    def encode(self, x):
        x = self.drop(x)                                             # [B, I]
        # tanh(self.encoder(x)), multiplying only the non-zeros of the sparse row (faster)
        h = torch.tanh(torch.sparse.mm(x.to_sparse(), self.encoder.weight.T) + self.encoder.bias)
        mu, logvar = h.chunk(2, dim=-1)                              # 2 x [B, d], in (-1, 1)
        return x, mu, logvar

    def decode(self, z):
        return self.decoder(z)                                       # [B, d] -> [B, I] logits


def xavier_normal_init(module):
    """Xavier-normal weights, zero biases (official init of both networks)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------
# 2. the denoiser x_theta(x_t, t) (DiffRec's "DNN")
# ---------------------------------------------------------------------------
def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of the step index: [cos(t f_j), sin(t f_j)], f_j = P^(-j/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # [half]
    args = t[:, None].float() * freqs[None]                                                 # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)                            # [B, 2 half]
    return F.pad(emb, (0, dim % 2))                                                         # [B, dim]


class Denoiser(nn.Module):
    """Predicts z_0 from x_t: MLP over [dropout(x_t), Linear(emb(t))] with tanh between layers.
    Hidden sizes are mirrored as DiffRec builds them: mlp_dims [300] -> (d+10)-300-d,
    [200, 600] -> (d+10)-600-200-600-d."""

    def __init__(self, d, mlp_dims, emb_size=10, dropout=0.5):
        super().__init__()
        self.emb_size = emb_size
        self.emb_layer = nn.Linear(emb_size, emb_size)
        self.drop = nn.Dropout(dropout)
        sizes = [d + emb_size] + mlp_dims[::-1] + mlp_dims[1:] + [d]
        layers = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(d_in, d_out), nn.Tanh()]
        self.mlp = nn.Sequential(*layers[:-1])                       # no tanh on the output
        xavier_normal_init(self)

    def forward(self, x_t, t):
        emb = self.emb_layer(timestep_embedding(t, self.emb_size))  # [B, 10]
        return self.mlp(torch.cat([self.drop(x_t), emb], dim=-1))   # [B, d] = predicted z_0


# ---------------------------------------------------------------------------
# 3. the Gaussian diffusion: schedule, forward jump, posterior, reverse process
# ---------------------------------------------------------------------------
def betas_linear_var(steps, noise_scale, noise_min, noise_max):
    """DiffRec's 'linear-var' schedule: 1 - abar_t = s * [a_min + (t-1)/(T-1) (a_max - a_min)],
    t = 1..T, i.e. the variance of q(x_t|x_0) grows linearly; beta_t = 1 - abar_t / abar_{t-1}
    (capped at 0.999). Returns float64 [T]."""
    variance = torch.linspace(noise_scale * noise_min, noise_scale * noise_max, steps,
                              dtype=torch.float64)                  # 1 - abar_t, [T]
    alphas_cumprod = 1.0 - variance
    betas = 1.0 - alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64),
                                              alphas_cumprod[:-1]])
    return betas.clamp(max=0.999)                                    # beta_1 = 1 - abar_1


class GaussianDiffusion:
    """The fixed forward process q and the x0-parameterised reverse process p_theta.
    Index t = 0..T-1 in code is the paper's step t+1. Schedule tensors are float64 [T]."""

    def __init__(self, steps, noise_scale, noise_min, noise_max, device='cpu'):
        self.steps = steps
        self.betas = betas_linear_var(steps, noise_scale, noise_min, noise_max).to(device)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)                          # abar_t
        self.alphas_cumprod_prev = torch.cat([self.alphas_cumprod.new_ones(1),
                                              self.alphas_cumprod[:-1]])            # abar_{t-1}
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance I)
        self.posterior_mean_coef1 = (self.betas * self.alphas_cumprod_prev.sqrt()
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * alphas.sqrt()
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_variance = (self.betas * (1.0 - self.alphas_cumprod_prev)
                                   / (1.0 - self.alphas_cumprod))

    @staticmethod
    def _extract(arr, t):
        return arr[t].float()[:, None]                                               # [B, 1]

    def q_sample(self, x_start, t, noise):
        """Forward jump q(x_t | x_0): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return (self._extract(self.sqrt_alphas_cumprod, t) * x_start
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t) * noise)     # [B, d]

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean and variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._extract(self.posterior_mean_coef1, t) * x_start
                + self._extract(self.posterior_mean_coef2, t) * x_t)                # [B, d]
        return mean, self._extract(self.posterior_variance, t)

    def p_mean_variance(self, model, x_t, t):
        """p_theta(x_{t-1} | x_t): the posterior with x_0 replaced by the prediction x_theta."""
        return self.q_posterior_mean_variance(model(x_t, t), x_t, t)

    def p_sample(self, model, x_start):
        """Inference from x_T = x_start (no noise added first, DiffRec's sampling_steps = 0):
        T reverse steps, each taking the mean only (sampling_noise = False)."""
        x_t = x_start                                                                # [B, d]
        for i in reversed(range(self.steps)):
            t = torch.full((x_t.shape[0],), i, dtype=torch.long, device=x_t.device)
            x_t, _ = self.p_mean_variance(model, x_t, t)
        return x_t                                                                   # [B, d]

    def SNR(self, t):
        return self.alphas_cumprod[t] / (1.0 - self.alphas_cumprod[t])

    def loss_weight(self, t):
        """Weight of ||x_theta - x_0||^2 in L_t: SNR(t-1) - SNR(t) (DiffRec's L_t for the x0
        parameterisation, the 1/2 dropped as in the official code); 1 at the first step."""
        return torch.where(t == 0, 1.0, self.SNR(t - 1) - self.SNR(t)).float()     # [B]


class ImportanceSampler:
    """DiffRec's 'importance' sampling of t: p_t proportional to sqrt(E[L_t^2]) over the last
    `history` losses seen at each t, mixed with `uniform_prob` of the uniform law; uniform
    while any t has fewer than `history` losses. The loss is then divided by T p_t, so its
    expectation is unchanged. Lt_history is training state (kept on the CPU), not a parameter."""

    def __init__(self, steps, history=10, uniform_prob=0.001):
        self.steps, self.history, self.uniform_prob = steps, history, uniform_prob
        self.Lt_history = torch.zeros(steps, history, dtype=torch.float64)        # [T, H]
        self.Lt_count = torch.zeros(steps, dtype=torch.long)                      # [T]

    def sample_timesteps(self, batch_size, device):
        """Returns t [B] and T * p_t [B] (all ones while sampling uniformly)."""
        if (self.Lt_count < self.history).any():
            t = torch.randint(0, self.steps, (batch_size,))
            return t.to(device), torch.ones(batch_size, device=device)
        Lt_sqrt = self.Lt_history.pow(2).mean(-1).sqrt()                           # [T]
        pt_all = Lt_sqrt / Lt_sqrt.sum() * (1 - self.uniform_prob) + self.uniform_prob / self.steps
        t = torch.multinomial(pt_all, batch_size, replacement=True)               # [B]
        return t.to(device), (pt_all[t] * self.steps).float().to(device)

    def update(self, t, losses):
        """Append each example's loss to its step's history, keeping the last `history`."""
        t, losses = t.cpu(), losses.detach().cpu().double()
        for s in t.unique().tolist():
            h = torch.cat([self.Lt_history[s, :self.Lt_count[s]], losses[t == s]])[-self.history:]
            self.Lt_history[s, :len(h)] = h
            self.Lt_count[s] = len(h)


# ---------------------------------------------------------------------------
# 4. losses
# ---------------------------------------------------------------------------
def diffusion_loss(denoiser, diffusion, x_start, t, noise):
    """Per-example L_t for the x0 parameterisation (DiffRec training):
    (SNR(t-1) - SNR(t)) * mean_d (x_theta(x_t, t) - x_0)^2, with x_t = q_sample(x_0, t, noise).
    Returns L_t [B] and the predicted x_0 [B, d] (the decoder's input)."""
    x_t = diffusion.q_sample(x_start, t, noise)                                   # [B, d]
    pred_xstart = denoiser(x_t, t)                                                # [B, d]
    return diffusion.loss_weight(t) * (pred_xstart - x_start).pow(2).mean(-1), pred_xstart


def loss_weights(args, epoch, step, kl_cap=None):
    """The official balance of the terms: lamda decays linearly per epoch from --lamda to
    --anneal-cap over --anneal-steps epochs; the KL weight is min(cap, step / steps) at batch
    `step` (official: it rises by 1 / --vae-anneal-steps per batch until --vae-anneal-cap;
    0 steps: constant). kl_cap: another cap on the same schedule (--proex: lambda1, the
    weight of Eq. 11, so that both arms anneal their KL alike); default --vae-anneal-cap."""
    cap = args.vae_anneal_cap if kl_cap is None else kl_cap
    lamda = max((1.0 - (epoch - 1) / args.anneal_steps) * args.lamda, args.anneal_cap) \
        if args.anneal_steps > 0 else max(args.lamda, args.anneal_cap)
    anneal = min(cap, step / args.vae_anneal_steps) if args.vae_anneal_steps > 0 else cap
    return lamda, anneal


def predict(ae, denoiser, diffusion, x, agg=None, users=None):
    """Item scores [B, I]: z = mu (+ the mean of the K profile means with ProEx, Alg. 2),
    T noise-free reverse steps, decode."""
    _, mu, _ = ae.encode(x)                                                       # [B, d]
    if agg is not None:
        mu_k, _ = agg(users, x)                                                   # [K, B, d]
        mu = P.add_mean_profile(mu, mu_k)                                         # Alg. 2
    return ae.decode(diffusion.p_sample(denoiser, mu))                            # [B, I]


# ---------------------------------------------------------------------------
# 5. command line and training
# ---------------------------------------------------------------------------
def dims(s):
    return [int(v) for v in s.split(',')]


def parse_args(argv=None):
    from eval import float_range, int_range  # argparse types: a bad value is one error line
    p = E.ArgumentParser(description=__doc__,  # one-line errors; --epoch is not --epochs
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, lr=5e-4, batch=400, eval_every=5,  # --lr: the AE's AdamW (official lr1); batch
                   # 400 as the official code, where the paper gives 1,024 for generative methods
                   optimizer="the autoencoder's AdamW (lr1 of the official code, the "
                             "L-DiffRec authors' YiyanXu/DiffRec on GitHub)")
    # the official L-DiffRec validates every 5 epochs
    p.add_argument('--lr-denoiser', type=float_range(0, lo_open=True), default=1e-4,
                   help="the denoiser's AdamW learning rate (default 1e-4, official lr2)")
    p.add_argument('--latent-dim', type=int_range(1), default=300,
                   help='latent size d of the autoencoder (default 300, official in_dims [300])')
    p.add_argument('--mlp-dims', type=dims, default=[300],
                   help="denoiser hidden sizes, comma-separated, mirrored as DiffRec's "
                        "(default 300, the official code's; the paper's grid for DiffRec's MLP, "
                        "200,600 or 1000, does not hold it)")
    p.add_argument('--emb-size', type=int_range(1), default=10,
                   help='timestep embedding size (default 10)')
    p.add_argument('--dropout', type=float_range(0, 1, hi_open=True), default=0.1,
                   help='dropout on the input row (default 0.1)')
    p.add_argument('--mlp-dropout', type=float_range(0, 1, hi_open=True), default=0.5,
                   help="dropout on the denoiser's input x_t (default 0.5, as the official code)")
    p.add_argument('--steps', type=int_range(1), default=None,
                   help='diffusion steps T (paper grid 5, 40, '
                   '100; default 5 on every dataset: the grid point chosen on book)')
    p.add_argument('--noise-scale', type=float, default=None, help='noise scale s of the linear-var '
                   'schedule (paper grid 1e-5..1e-2; default 1e-2 on every dataset, chosen on book)')
    p.add_argument('--noise-min', type=float, default=None, help='a_min of the schedule (paper grid '
                   '5e-4, 1e-3, 5e-3; default 5e-3 on every dataset, chosen on book)')
    p.add_argument('--noise-max', type=float, default=None, help='a_max of the schedule (paper grid '
                   '5e-3, 1e-2; default 1e-2 on every dataset, chosen on book)')
    p.add_argument('--lamda', type=float_range(0), default=0.05,
                   help='weight of the diffusion loss against '
                   'the reconstruction (default 0.05: the official name and amazon value)')
    p.add_argument('--anneal-cap', type=float_range(0), default=0.005,
                   help='lamda decays to this floor (default 0.005, as the official code)')
    p.add_argument('--anneal-steps', type=int_range(0), default=500,
                   help='epochs over which lamda decays (default 500, as the official code; 0: '
                        'constant lamda)')
    p.add_argument('--vae-anneal-cap', type=float_range(0), default=0.3,
                   help='final weight of the KL term of the base model (default 0.3, as the '
                        'official code)')
    p.add_argument('--vae-anneal-steps', type=int_range(0), default=200,
                   help='N: the KL weight at batch s is min(--vae-anneal-cap, s / N) (default '
                        '200, as the official code); with --proex, Eq. 11 (which replaces the KL) '
                        'weighs min(--lambda1, s / N), the same schedule')
    E.add_proex_args(p, generative=True, lambda1=0.3)  # Eq. 11 carries the KL: the base's final weight 0.3
    args = E.resolve_proex_args(p, argv, generative=True)
    for k, v in DATASET_DEFAULTS.get(args.dataset, DATASET_DEFAULTS['book']).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not (args.steps >= 1 and 0 < args.noise_scale * args.noise_min < args.noise_scale
            * args.noise_max < 1):
        E.fail(p, 'need --steps >= 1 and 0 < noise-scale * noise-min < noise-scale * noise-max < 1')
    if min(args.mlp_dims) < 1:
        E.fail(p, f'argument --mlp-dims: every size must be >= 1, got {args.mlp_dims}')
    return args


def main(args):
    device, rng = start_run(args)                                        # device, threads, seeds
    data = D.load_dataset(args.dataset, args.data_dir, profiles=args.proex,
                          views=D.parse_views(args.profiles), seed=args.seed)
    ae = AutoEncoder(data.n_items, args.latent_dim, args.dropout).to(device)
    denoiser = Denoiser(args.latent_dim, args.mlp_dims, args.emb_size, args.mlp_dropout).to(device)
    diffusion = GaussianDiffusion(args.steps, args.noise_scale, args.noise_min, args.noise_max, device)
    sampler = ImportanceSampler(args.steps)
    agg = P.ProfileAggregator(data.usr_prf, data.itm_prf, data.train, args.latent_dim,
                              profile_dim=args.profile_dim, input_rule=args.profile_input
                              ).to(device) if args.proex else None
    # two AdamW as the official code (weight decay 0); the profile mapping joins the encoder's
    ae_params = list(ae.parameters()) + (list(agg.parameters()) if agg else [])
    opt_ae = torch.optim.AdamW(ae_params, lr=args.lr, weight_decay=0.0)
    opt_dn = torch.optim.AdamW(denoiser.parameters(), lr=args.lr_denoiser, weight_decay=0.0)
    n_batches = math.ceil(data.n_users / args.batch)
    modules = nn.ModuleList([ae, denoiser] + ([agg] if agg else []))

    def train_epoch(epoch):
        modules.train()
        total = 0.0
        for b, users in enumerate(D.user_batches(data.n_users, args.batch, rng)):
            x = D.dense_rows(data.train, users, device)                      # [B, I]
            lamda, anneal = loss_weights(args, epoch, (epoch - 1) * n_batches + b,
                                         args.lambda1 if agg else None)  # KL / Eq. 11 weight
            x_drop, mu, logvar = ae.encode(x)                                # target, [B, d] x 2
            t, pt = sampler.sample_timesteps(len(users), device)             # [B], T p_t [B]
            noise = torch.randn_like(mu)                                     # [B, d]

            def nll_fn(z):  # the L-DiffRec loss of each user given the latent z [B, d] -> [B]
                loss_t, pred_xstart = diffusion_loss(denoiser, diffusion, z, t, noise)  # [B]
                sampler.update(t, loss_t)
                elbo = loss_t / pt                                           # importance-weighted
                return lamda * elbo + P.multinomial_nll(ae.decode(pred_xstart), x_drop)  # [B]

            if agg is None:
                z = P.sample_gaussian(mu, logvar.exp())                       # z ~ q(z|x), [B, d]
                loss = nll_fn(z).mean() + anneal * P.kl_to_prior(mu, logvar)
            else:  # Alg. 1: Eq. 11, annealed to lambda1, replaces anneal * KL; notes below
                mu_k, logvar_k = agg(users.to(device), x_drop)                  # [K, B, d], Eq. 6
                loss, _ = P.generative_objective(                            # Eq. 9, 11, 12, 14
                    nll_fn, mu, logvar, mu_k, logvar_k,
                    envs=args.envs, alpha=args.alpha, beta=args.beta, tau=args.tau,
                    lambda1=anneal, lambda2=args.lambda2, lambda3=args.lambda3,  # min(lambda1, s/N)
                    **E.switches(args, generative=True))
            opt_ae.zero_grad()
            opt_dn.zero_grad()
            loss.backward()
            opt_ae.step()
            opt_dn.step()
            total += loss.detach()                                          # no sync per batch
        return float(total) / n_batches

    def make_score_fn():
        modules.eval()
        def score_fn(users):
            x = D.dense_rows(data.train, users.cpu(), device)
            return predict(ae, denoiser, diffusion, x, agg, users)
        return score_fn

    log = TrainLog(args, data, device)  # validation R@20 every --eval-every epochs, patience, --out
    with interruptible(log):            # Ctrl-C: the epochs so far go to --out, then one line
        for epoch in range(1, args.epochs + 1):
            loss, seconds = timed(train_epoch, epoch)
            if log.epoch(epoch, loss, seconds, modules, make_score_fn):  # patience spent, or loss not finite
                break
    return log.test(modules, make_score_fn)                          # best parameters, test split once


# Notes on --proex (no released ProEx code for L-DiffRec; decisions taken here):
#  * Eq. 12 fuses the encoder's N(mu, exp(logvar)) with the environment's Gaussian as the
#    authors' DMRec code does (BlueGhostYi/ProRec, encoder/models/general_cf/mult_vae_mddm.py,
#    cal_loss): means added, log-variances added (proex_core.fuse_gaussians); a sample z_e of
#    the fused Gaussian is what the diffusion denoises and the decoder reconstructs, so nll_fn
#    runs the whole L-DiffRec loss (lamda * diffusion + NLL) once per environment, and each
#    run feeds the importance sampler's loss history; --sum-of-samples adds a sample of the
#    environment's Gaussian to z ~ q instead (for study: it holds the model on a plateau);
#  * t, the diffusion noise and the latent noise are drawn once per batch and shared by the
#    environments, so Var_e (Eq. 14) sees what the environments change rather than the
#    spread of the diffusion loss over random steps;
#  * Eq. 11 (the posterior against the environment's Gaussian, Sec. 2.4; --align-fused: the
#    fused Gaussian, as DMRec) replaces the base's annealed KL term, on the base's schedule: weight min(lambda1, step / --vae-anneal-steps), lambda1 by default the base's
#    final KL weight 0.3, so the two arms differ only by the profiles;
#  * Eq. 6 averages the profile vectors of the user's train items plus the user's own
#    (DMRec sums over the items left after input dropout: --profile-input dropped-sum); the
#    aggregator is trained by the autoencoder's optimizer (lr --lr);
#  * inference (Alg. 2): z = mu + mean_k mu_k, then the same noise-free reverse process (DMRec's
#    full_predict adds its one mu_llm to mu: the same rule with K = 1);
#  * not the paper's: batch 400 and the denoiser's [300] are the official L-DiffRec code's (the
#    paper gives batch 1,024 for generative methods and the grid {200,600 | 1000}); the book
#    row with them is in bench/RESULTS.md.

if __name__ == '__main__':
    args = parse_args()
    try:
        main(args)
    except D.DataError as e:
        raise SystemExit(f'error: {e}')
    except KeyboardInterrupt as e:      # Ctrl-C: one line, exit status 130
        raise SystemExit(on_interrupt(e))
