"""ProEx core: the profile-extrapolation parts shared by all six base models.

Paper: Zhang, Zhang, Wang, Chen, Yin. "ProEx: A Unified Framework Leveraging
Large Language Model with Profile Extrapolation for Recommendation", KDD'26,
arXiv 2512.00679. Sec. 2.3-2.4, Alg. 1 (training) and Alg. 2 (inference).

This file holds, one function per idea, in the paper's order:
  mappings f_psi (Eq. 6)           DirectMapping, AggregationMapping, aggregate_profiles
  the K views of all entities      stack_views, ProfileEncoder, ProfileAggregator (Eq. 5-6)
  contrastive regularisation (7)   contrastive_reg (paper), uniformity_reg (released code)
  environments (Eq. 8-10)          dirichlet_weights, mix; mean_profile (Alg. 2)
  alignment (Eq. 11, 13)           info_nce_rows, kl_diag_gaussians, distribution_alignment
  fusion (Eq. 12)                  fuse_vectors (discriminative), fuse_gaussians (generative)
  the base models' losses (L_rec)  bpr_rows, bpr_loss, l2_reg, multinomial_nll, kl_to_prior,
                                   reparameterize (the VAE's sample from mu and log-variance)
  total (Eq. 14)                   env_variance (per row, Alg. 1), proex_objective
  one batch of Alg. 1              discriminative_objective, generative_objective
  shared command-line flags        add_proex_args, resolve_proex_args, switches

Shapes: K profiles per entity, E environments, n (or B) entities, d model size,
d_s text-embedding size. Where the released code (BlueGhostYi/ProRec,
lightgcn_proex.py) differs from the paper, the paper is the default and the
released behaviour is a keyword argument (and a flag) named for what it does.

No entry point: the model files (lightgcn.py, gccf.py, simgcl.py, multvae.py,
ldiffrec.py, cvga.py) import it. Tests: python -m pytest -q tests/test_proex_core.py
"""
import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Mappings from the language space to the recommendation space (Eq. 6)

class DirectMapping(nn.Module):
    """f_psi^d of Eq. 6 for discriminative models: one MLP shared by users,
    items and all K profiles. d is the size the profile is added to (GCCF: the
    concatenated size of its layers)."""

    def __init__(self, d_s, d):
        super().__init__()
        hidden = (d_s + d) // 2
        self.mlp = nn.Sequential(nn.Linear(d_s, hidden), nn.LeakyReLU(), nn.Linear(hidden, d))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.xavier_uniform_(layer.weight)  # paper silent; released code's init

    def forward(self, c):
        return self.mlp(c)  # [..., d_s] -> [..., d]


class AggregationMapping(nn.Module):
    """f_psi^a of Eq. 6 for generative models: an aggregated profile vector is
    mapped to the mean and variance of a diagonal Gaussian in the latent space."""

    def __init__(self, d_s, d, hidden=600):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_s, hidden), nn.Tanh(), nn.Linear(hidden, 2 * d))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.xavier_uniform_(layer.weight)  # Sec. 3.1.4: "initialized using Xavier"

    def forward(self, c):
        mu, logvar = self.mlp(c).chunk(2, dim=-1)  # [..., 2d] -> 2 x [..., d]
        return mu, logvar.exp()  # Eq. 6: mu_{u,k}, sigma^2_{u,k}


def aggregate_profiles(x, c_items, c_users):
    """Input of f_psi^a (Eq. 6): mean of the profile vectors of the user's
    interacted items plus the user's own; a user with no items gets only its own.
    x: [B, I] 0/1 rows, c_items: [K, I, d_s], c_users: [K, B, d_s] -> [K, B, d_s]."""
    x = x.to(c_items.dtype)
    n_items = x.sum(dim=1).clamp(min=1)  # [B]
    item_mean = torch.einsum('bi,kid->kbd', x, c_items) / n_items[None, :, None]  # [K, B, d_s]
    return item_mean + c_users  # [K, B, d_s]


# ----------------------------------------------------------------------------
# The K profile views of every user and item, mapped on demand (used by the model files)

def stack_views(arrays):
    """The K views of one side (users or items), K arrays [n, d_s] -> [K, n, d_s] float32."""
    return torch.stack([torch.as_tensor(a, dtype=torch.float32) for a in arrays])  # [K, n, d_s]


def project_views(c_users, c_items, profile_dim=None):
    """profile_dim=N (optional, for CPUs; not in the paper): project the users' and the items'
    views onto the top N principal directions of all their K (U + I) profile vectors together
    (one centre, one basis, fitted once here), so that the one mapping of Eq. 6 reads the same
    coordinates on both sides. [K, U, d_s], [K, I, d_s] -> [K, U, N], [K, I, N]."""
    if profile_dim is None or profile_dim >= c_users.shape[-1]:
        return c_users, c_items
    flat = torch.cat([c_users, c_items], dim=1).reshape(-1, c_users.shape[-1]).double()  # [K(U+I), d_s]
    centre = flat.mean(dim=0)  # [d_s]
    centred = flat - centre
    _, eigvec = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues, [d_s, d_s]
    top = eigvec[:, -profile_dim:].flip(-1)  # the N leading directions, [d_s, N]
    return tuple(((c.double() - centre) @ top).float() for c in (c_users, c_items))


class ProfileEncoder(nn.Module):
    """Discriminative side: holds the K text-embedding views c_{.,k} (Eq. 5) of all users
    and items as fixed buffers, and maps the rows asked for with one DirectMapping (Eq. 6).
    Only the distinct ids of a batch go through the MLP."""

    def __init__(self, usr_prf, itm_prf, d, profile_dim=None):
        super().__init__()
        # K arrays [n, d_s] -> [K, n, d_s]; persistent=False keeps them out of state_dict
        c_users, c_items = project_views(stack_views(usr_prf), stack_views(itm_prf), profile_dim)
        self.register_buffer('c_users', c_users, persistent=False)
        self.register_buffer('c_items', c_items, persistent=False)
        self.f_psi = DirectMapping(self.c_users.shape[-1], d)

    def _map(self, c, ids):
        uniq, inverse = torch.unique(ids, return_inverse=True)  # map each id once
        # index_select: on a CPU several times faster than c[:, ids] (forward and backward)
        return self.f_psi(c.index_select(1, uniq)).index_select(1, inverse)  # [K, B, d]

    def users(self, ids):
        return self._map(self.c_users, ids)  # [K, B, d]

    def batch(self, u, i, j):
        """The mapped profiles of one BPR batch: users u, positives i, negatives j [B] ->
        c_u, c_i, c_j [K, B, d]; positives and negatives go through the MLP together."""
        c_i, c_j = self.items(torch.cat([i, j])).split(len(i), dim=1)  # [K, B, d] each
        return self.users(u), c_i, c_j

    def items(self, ids):
        return self._map(self.c_items, ids)  # [K, B, d]

    def mean_users(self):
        return mean_profile(self.f_psi(self.c_users))  # Alg. 2, [U, d]

    def mean_items(self):
        return mean_profile(self.f_psi(self.c_items))  # Alg. 2, [I, d]


class ProfileAggregator(nn.Module):
    """Generative side: for the users of a batch, aggregate each profile view over the
    user's interacted items plus the user's own, and map it to (mu_{u,k}, sigma^2_{u,k})
    with one AggregationMapping (Eq. 6). input_rule (Eq. 6 does not say which):
      'mean' (default): the mean over the user's train items, computed once here since it
        depends only on the train matrix and the fixed text embeddings; kept as the default
        because validation picks it (Mult-VAE: equal on ml100k, +.017 R@20 on synthetic;
        bench/RESULTS.md, section 7);
      'dropped-sum': the SUM over the items of the row the encoder reads after input
        dropout, as the authors' DMRec code (BlueGhostYi/ProRec, mult_vae_mddm.py, encode:
        matmul(drop(x), itmprf_embeds) + user_emb); forward() then needs that row."""

    def __init__(self, usr_prf, itm_prf, train, d, hidden=600, chunk=1024, profile_dim=None,
                 input_rule='mean'):
        super().__init__()
        self.input_rule = input_rule
        c_users, c_items = project_views(stack_views(usr_prf), stack_views(itm_prf),
                                         profile_dim)  # [K, U, d_s], [K, I, d_s]
        self.f_psi = AggregationMapping(c_users.shape[-1], d, hidden)
        if input_rule == 'dropped-sum':  # buffers: not in state_dict
            self.register_buffer('c_users', c_users, persistent=False)
            self.register_buffer('c_items', c_items, persistent=False)
            return
        c_agg = torch.empty_like(c_users)  # input of f_psi^a for every user, [K, U, d_s]
        for s in range(0, train.shape[0], chunk):  # dense rows a chunk of users at a time
            x = torch.from_numpy(train[s:s + chunk].toarray())  # [chunk, I]
            c_agg[:, s:s + chunk] = aggregate_profiles(x, c_items, c_users[:, s:s + chunk])
        self.register_buffer('c_agg', c_agg, persistent=False)  # not in state_dict

    def forward(self, users, x=None):
        """users: [B] ids (x: [B, I] the encoder's input row, for 'dropped-sum')
        -> mu_k, var_k: [K, B, d] each (Eq. 6)."""
        if self.input_rule == 'mean':
            return self.f_psi(self.c_agg.index_select(1, users))
        c = torch.einsum('bi,kid->kbd', x.to(self.c_items.dtype), self.c_items)  # [K, B, d_s]
        return self.f_psi(c + self.c_users.index_select(1, users))  # DMRec's sum, [K, B, d] x 2


# ----------------------------------------------------------------------------
# Contrastive regularisation over the K profiles of one entity (Eq. 7)

def contrastive_reg(views, tau=0.2, infonce=False):
    """Eq. 7, as printed: L_reg = sum_k log(1 + exp(1/tau) sum_{k'!=k} exp(c_k.c_k'/tau)),
    with L2-normalised vectors, averaged over the n entities. views: [K, n, d] -> scalar.
    Computed as softplus(1/tau + logsumexp_{k'!=k}(c_k.c_k'/tau)), which cannot overflow.
    infonce=True: exp(-1/tau) instead, the InfoNCE whose positive is c_k with itself
    (c_k.c_k = 1). Both push the K profiles of an entity apart; the printed sign is the default."""
    K = views.shape[0]
    if K == 1:
        return views.sum() * 0.0  # empty sum over k' != k: log(1 + 0) = 0
    gram = torch.einsum('knd,lnd->nkl', views, views)  # c_k.c_k' per entity, [n, K, K]
    norm = gram.diagonal(dim1=1, dim2=2).clamp_min(1e-24).sqrt()  # |c_k|, [n, K]
    logits = gram / (norm[:, :, None] * norm[:, None, :]) / tau  # of the L2-normalised c, [n, K, K]
    self_pair = torch.eye(K, dtype=torch.bool, device=views.device)  # [K, K]
    logits = logits.masked_fill(self_pair, float('-inf'))  # drop k' == k
    sign = -1.0 if infonce else 1.0  # exp(-1/tau): InfoNCE form; exp(+1/tau): as printed
    per_k = F.softplus(sign / tau + torch.logsumexp(logits, dim=-1))  # Eq. 7, [n, K]
    return per_k.sum(dim=1).mean()  # sum over k, mean over entities


def uniformity_reg(views, tau=0.2):
    """Released code's replacement for Eq. 7: for each profile k, the InfoNCE of the
    normalised vectors against themselves over the n entities (positives on the
    diagonal; info_nce below), SUMMED over k as the released code does. [K, n, d] -> scalar.
    The released code adds 1e-5 inside the log; this is the exact form."""
    return sum(info_nce(c_k, c_k, tau) for c_k in views)  # [n, d] per k, summed over k


# ----------------------------------------------------------------------------
# Environments (Eq. 8-10)

def dirichlet_weights(E, K, alpha, n=None, rng=None, device=None):
    """Eq. 10: theta^e ~ Dir(alpha, ..., alpha), one row per environment.
    n=None: [E, K], one draw per environment shared by all entities (released code).
    n given: [E, n, K], one draw per entity per environment (paper).
    Drawn by `rng`, a numpy Generator (on a CPU about 2x faster than torch's sampler);
    rng=None seeds one from torch's global RNG, so torch.manual_seed fixes the draws.
    On a GPU with rng=None, torch draws on the device: no host work and copy per batch."""
    size = (E,) if n is None else (E, n)
    if rng is None and torch.device(device or 'cpu').type == 'cuda':
        concentration = torch.full((K,), float(alpha), device=device)
        return torch.distributions.Dirichlet(concentration).sample(size)  # [*size, K]
    if rng is None:
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,))))
    theta = rng.dirichlet(np.full(K, float(alpha)), size=size)  # float64
    return torch.from_numpy(theta).to(device=device, dtype=torch.float32)


def mix(views, theta):
    """Eq. 8 (and Eq. 9 for means and variances separately): the convex
    combination c~^e = sum_k theta_k^e c_k in every environment.
    views: [K, n, d], theta: [E, K] or [E, n, K] -> [E, n, d]."""
    theta = theta.to(views.device, views.dtype)
    if theta.dim() == 2:
        return torch.einsum('ek,knd->end', theta, views)  # [E, n, d]
    # per entity: a loop over the K (few) views accumulating theta_k [E, n, 1] * c_k [n, d]
    # with addcmul, the weights laid out [K, E, n, 1] contiguously; on a CPU 1.5-2x faster,
    # forward and backward, than a broadcast [K, E, n, d] product summed over K
    theta = theta.permute(2, 0, 1).unsqueeze(-1).contiguous()  # [K, E, n, 1]
    out = theta[0] * views[0]  # [E, n, d]
    for t_k, c_k in zip(theta[1:], views[1:]):
        out = torch.addcmul(out, t_k, c_k)  # out + theta_k * c_k
    return out  # [E, n, d]


def mean_profile(c):
    """Alg. 2 (inference) and the 'w/o mixing' ablation: mean of the K mapped profiles."""
    return c.mean(dim=0)  # [K, n, d] -> [n, d]


# ----------------------------------------------------------------------------
# Alignment between the collaborative and the language space (L_align of Eq. 13:
# contrastive for the discriminative models, the distribution matching of Eq. 11 for the
# generative ones)

def info_nce_rows(z, c, tau=0.2):
    """Discriminative alignment (L_align of Eq. 13, Sec. 2.4): InfoNCE between collaborative
    vectors z and mixed profiles c of the same n entities, both L2-normalised; positives on
    the diagonal, denominators over the n entities of c. [n, d], [n, d] -> [n], one loss per row."""
    z, c = F.normalize(z, dim=-1), F.normalize(c, dim=-1)  # [n, d]
    logits = z @ c.T / tau  # [n, n]
    positives = torch.arange(z.shape[0], device=z.device)  # [n], the diagonal
    return F.cross_entropy(logits, positives, reduction='none')  # -log softmax(logits_i)[i]


def info_nce(z, c, tau=0.2):
    """info_nce_rows averaged over the n rows: [n, d], [n, d] -> scalar."""
    return info_nce_rows(z, c, tau).mean()


def distinct_rows(ids):
    """The distinct ids of a batch: row of each one's first occurrence [n] and, for every
    row, the index of its id among them [B]. ids: [B] -> ([n], [B])."""
    uniq, inverse = torch.unique(ids, return_inverse=True)  # [n], [B]
    rows = torch.arange(ids.numel(), device=ids.device)  # [B]
    first = torch.full_like(uniq, ids.numel())
    return first.scatter_reduce(0, inverse, rows, reduce='amin'), inverse  # [n], [B]


def first_occurrences(ids):
    """Row index of the first occurrence of each distinct id: [B] -> [n]."""
    return distinct_rows(ids)[0]


def entity_alignment(z, c_env, ids, tau=0.2):
    """L_align of Eq. 13 for one side (users or items) of a BPR batch, per environment and row:
    InfoNCE between each DISTINCT entity's collaborative vector and its mixed profile, the
    other distinct entities of the batch being the negatives (a repeated row would be a
    negative as close as the positive). Each row then takes its entity's value (Alg. 1 is
    per row). z: [B, d], c_env: [E, B, d], ids: [B] -> [E, B]."""
    first, inverse = distinct_rows(ids)  # [n], [B]
    z_n = z.index_select(0, first)  # [n, d]
    per_entity = torch.stack([info_nce_rows(z_n, c.index_select(0, first), tau)
                              for c in c_env])  # [E, n]
    return per_entity.index_select(1, inverse)  # [E, B]


def kl_diag_gaussians(mu_q, var_q, mu_p, var_p):
    """Closed-form KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians,
    summed over the last dim: [..., d] -> [...]."""
    kl = torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0  # [..., d]
    return 0.5 * kl.sum(dim=-1)


def distribution_alignment(mu, var, mu_env, var_env, beta):
    """Eq. 11, generative alignment: w_u KL(q || N(mu~^e, var~^e)) + w_prior KL(q || N(0, I))
    with w_u = 1 - beta, w_prior = beta, and q = N(mu, var) the base model's posterior.
    With beta = 1 it is the usual VAE KL term. [B, d] x 4 -> [B], one value per user."""
    kl_env = kl_diag_gaussians(mu, var, mu_env, var_env)  # [B]
    kl_prior = kl_diag_gaussians(mu, var, torch.zeros_like(mu), torch.ones_like(var))  # [B]
    return (1.0 - beta) * kl_env + beta * kl_prior  # Eq. 11, [B]


# ----------------------------------------------------------------------------
# Fusion (Eq. 12): profile and collaborative vectors are added element-wise

def fuse_vectors(z, c_env):
    """Eq. 12 for the discriminative models: the collaborative vector plus the environment's
    mixed profile, element-wise. z: [..., B, d], c_env: [E, B, d] -> [E, B, d]."""
    return z + c_env


def fuse_gaussians(mu, var, mu_env, var_env):
    """Eq. 12 for the generative models: "element-wise addition" applied to the parameters of
    the two Gaussians, as the authors' DMRec code does (BlueGhostYi/ProRec,
    encoder/models/general_cf/mult_vae_mddm.py, cal_loss: mu = mu_src + mu_llm,
    logvar = logvar_src + logvar_llm). Means add; log-variances add, so variances multiply.
    mu, var: [B, d] base posterior; mu_env, var_env: [B, d] one environment -> 2 x [B, d]."""
    return mu + mu_env, var * var_env  # Eq. 12: N(mu + mu~e, sigma^2 * sigma~e^2)


def sample_gaussian(mu, var, generator=None):
    """z = mu + sqrt(var) * eps, eps ~ N(0, I): a differentiable sample of N(mu, var)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)  # [..., d]
    return mu + var.sqrt() * eps


# ----------------------------------------------------------------------------
# The base models' own losses: L_rec of Eq. 13 (BPR for the discriminative models, the
# multinomial likelihood for the generative ones), their L2 and the VAE's KL and sample.
# The base model files use them as they are; ProEx reuses them inside Eq. 13-14.

def bpr_rows(z_u, z_i, z_j):
    """BPR per triple, softplus(s_neg - s_pos) with s the inner product. [..., B, d] x 3 -> [..., B]."""
    s_pos = (z_u * z_i).sum(dim=-1)  # [..., B]
    s_neg = (z_u * z_j).sum(dim=-1)  # [..., B]
    return F.softplus(s_neg - s_pos)


def bpr_loss(z_u, z_i, z_j):
    """BPR of a batch (RLMRec): the mean of bpr_rows. [B, d] x 3 -> scalar."""
    return bpr_rows(z_u, z_i, z_j).mean()


def l2_reg(module):
    """Sum of squared Frobenius norms of all parameters (full tables, as RLMRec)."""
    return sum(p.pow(2).sum() for p in module.parameters())


def multinomial_nll(logits, x):
    """Mult-VAE's likelihood: -sum_i x_ui log softmax(logits)_i per user. [B, I] x 2 -> [B]."""
    return -(F.log_softmax(logits, dim=-1) * x).sum(-1)


def kl_to_prior(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over d, mean over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean()


def reparameterize(mu, logvar):
    """The VAE's sample z = mu + exp(logvar / 2) * eps, eps ~ N(0, I). [B, d] -> [B, d]."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


# ----------------------------------------------------------------------------
# The ProEx objective (Eq. 14)
#
# Alg. 1 (appendix A.1) loops over the users of a batch: for each one it draws the
# environment weights (line 13), forms the environment losses L^e (line 16) and the total
# with the variance over environments (line 18); gradients are averaged over the batch
# (line 20). So the losses here are per ROW, [E, B] (a row is a BPR triple for the
# discriminative models, a user for the generative ones), Var_e is taken per row and then
# averaged. The released code (one draw per environment for the whole batch) instead takes
# the variance of the E batch-mean losses: var_of_means=True. With per-row draws that
# variance averages the per-row differences away (it is thousands of times smaller).

def env_variance(env_losses, unbiased_var=False, var_of_means=False):
    """Var_e(L^e) of Eq. 14 from per-row losses [E, B] -> scalar: population variance over
    the E environments per row, mean over rows (Alg. 1, lines 16-20). unbiased_var: divide by
    E - 1 (released torch.var); var_of_means: variance of the E batch means (released code).
    0 when E == 1."""
    if env_losses.shape[0] < 2:
        return env_losses.sum() * 0.0  # one environment: nothing varies
    correction = 1 if unbiased_var else 0
    if var_of_means:
        return env_losses.mean(dim=1).var(correction=correction)  # [E] -> scalar
    return env_losses.var(dim=0, correction=correction).mean()  # [B] -> scalar


def proex_objective(env_losses, l_reg, lambda2, lambda3, unbiased_var=False, var_of_means=False,
                    var_e=None):
    """Eq. 14: sum_e L^e + lambda2 L_reg + lambda3 Var_e(L^e), with L^e the batch mean of the
    per-row environment losses. env_losses: [E, B] (a 1-D [E] is read as one row each).
    var_e: Var_e(L^e) when the caller has it already (env_variance with the same flags)."""
    if env_losses.dim() == 1:
        env_losses = env_losses[:, None]  # [E] -> [E, 1]
    if var_e is None:
        var_e = env_variance(env_losses, unbiased_var, var_of_means)
    return env_losses.mean(dim=1).sum() + lambda2 * l_reg + lambda3 * var_e


def discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, *, envs, alpha, lambda1,
                             lambda2, lambda3, tau=0.2, shared_mixing=False, uniformity=False,
                             infonce_reg=False, unbiased_var=False, var_of_means=False,
                             no_mixing=False, rng=None, users=None, pos_items=None,
                             rec_rows=bpr_rows):
    """Alg. 1 for one BPR batch of a discriminative model (LightGCN, GCCF, SimGCL).
    z_u, z_i, z_j: [B, d] collaborative vectors of users, positive and negative items.
    c_u, c_i, c_j: [K, B, d] their K profiles, already mapped by DirectMapping.
    users, pos_items: [B] ids; the alignment (lambda1 > 0) and uniformity=True run over the
      distinct ones.
    rec_rows: L_rec of one triple, (z_u, z_i, z_j) [..., B, d] -> [..., B]; BPR by default.
    Returns (total, parts): parts = detached scalar tensors {'rec', 'align', 'reg', 'var'}
    (unweighted; 'rec' and 'align' summed over environments), kept on the device so that
    reading them is the caller's choice (float() waits for the device)."""
    K, B = c_u.shape[0], c_u.shape[1]
    # 1) environments: the mixed profiles of users, positives and negatives (Eq. 8-10)
    if no_mixing:  # Fig. 6 'w/o mixing': one environment, mean pooling
        cu_e, ci_e, cj_e = (mean_profile(c)[None] for c in (c_u, c_i, c_j))  # 3 x [1, B, d]
    elif shared_mixing:  # released code: one draw per environment for the whole batch
        theta = dirichlet_weights(envs, K, alpha, None, rng, c_u.device)  # Eq. 10, [E, K]
        cu_e, ci_e, cj_e = (mix(c, theta) for c in (c_u, c_i, c_j))  # Eq. 8, 3 x [E, B, d]
    else:  # paper: one draw per entity (row of the batch) per environment
        theta = dirichlet_weights(envs, K, alpha, 3 * B, rng, c_u.device)  # Eq. 10, [E, 3B, K]
        cu_e, ci_e, cj_e = (mix(c, t) for c, t in zip((c_u, c_i, c_j), theta.split(B, dim=1)))  # Eq. 8
    # 2) fusion by addition (Eq. 12) and the recommendation loss per environment and triple
    rec = rec_rows(fuse_vectors(z_u, cu_e), fuse_vectors(z_i, ci_e), fuse_vectors(z_j, cj_e))  # [E, B]
    # 3) alignment per environment and row (L_align of Eq. 13); skipped when switched off
    if lambda1 != 0:  # over the distinct users and positive items of the batch
        if users is None or pos_items is None:
            raise ValueError('discriminative_objective: lambda1 > 0 needs users= and pos_items= '
                             '([B] ids), as Eq. 13 contrasts the distinct entities of the batch')
        align = entity_alignment(z_u, cu_e, users, tau) + entity_alignment(z_i, ci_e, pos_items, tau)  # [E, B]
    else:
        align = torch.zeros_like(rec)  # [E, B]
    env_losses = rec + lambda1 * align  # Eq. 13, L^e per row, [E, B]
    # 4) regularisation over each entity's K profiles (Eq. 7)
    if uniformity:  # released code: uniformity over the unique batch users and positive items
        u_rows = first_occurrences(users) if users is not None else slice(None)
        i_rows = first_occurrences(pos_items) if pos_items is not None else slice(None)
        l_reg = uniformity_reg(c_u[:, u_rows], tau) + uniformity_reg(c_i[:, i_rows], tau)
    else:
        l_reg = contrastive_reg(c_u, tau, infonce_reg) + contrastive_reg(c_i, tau, infonce_reg)  # Eq. 7
    # 5) total (Eq. 14)
    var_e = env_variance(env_losses, unbiased_var, var_of_means)  # once, for Eq. 14 and parts
    total = proex_objective(env_losses, l_reg, lambda2, lambda3, var_e=var_e)
    return total, summary(rec, align, l_reg, var_e)


def summary(rec, align, l_reg, var_e):
    """The unweighted parts of Eq. 14 as detached tensors (no device sync). rec, align: [E, B]."""
    return {'rec': rec.detach().mean(dim=1).sum(), 'align': align.detach().mean(dim=1).sum(),
            'reg': l_reg.detach(), 'var': var_e.detach()}


def generative_objective(nll_fn, mu, var, mu_k, var_k, *, envs, alpha, beta, lambda1,
                         lambda2, lambda3, tau=0.2, shared_mixing=False, unbiased_var=False,
                         var_of_means=False, no_mixing=False, sum_of_samples=False,
                         align_fused=False, uniformity=False, generator=None, rng=None):
    """Alg. 1 for one batch of a generative model (Mult-VAE, L-DiffRec, CVGA).
    nll_fn: z [B, d] -> [B] reconstruction loss of each user under the base model (no KL
      term: the KL to the prior is the beta part of Eq. 11, so beta = 1 with lambda1 the
      base's KL weight is the base VAE).
    mu, var: [B, d] the base posterior q(z_u | x_u); mu_k, var_k: [K, B, d] from
    AggregationMapping, one per profile. Returns (total, parts) as discriminative_objective.
    Eq. 12 (default): per environment the fused Gaussian N(mu + mu~e, var * var~e)
      (fuse_gaussians, as DMRec) and one sample of it feed L_rec; Eq. 11 aligns the base
      posterior q = N(mu, var) of Eq. 2 with the environment's Gaussian, as Sec. 2.4 says.
    align_fused=True (DMRec's code): Eq. 11 aligns the FUSED Gaussian instead. Then the
      environment's mean cancels from the mean term ((mu + mu~e) - mu~e = mu): the term
      shrinks mu and gives the profile means no gradient.
    sum_of_samples=True (for study): z ~ q plus a sample of the environment's Gaussian;
      on a batch of ml100k or synthetic users this holds L-DiffRec on a plateau
      (bench/RESULTS.md).
    uniformity=True (released code): L_reg is uniformity_reg over the K profile means
      instead of Eq. 7 (the users of a batch are distinct).
    generator, rng (tests): a torch Generator on mu's device for the Gaussian samples and a
    numpy Generator for the Dirichlet draws; the model files use the global RNGs."""
    B = mu.shape[0]
    # 1) environments: mix means and variances separately (Eq. 9, 10)
    if no_mixing:  # Fig. 6 'w/o mixing': one environment, mean pooling
        mu_env, var_env = mean_profile(mu_k)[None], mean_profile(var_k)[None]  # [1, B, d]
    else:
        n = None if shared_mixing else B  # shared_mixing: one draw per environment (released)
        theta = dirichlet_weights(envs, mu_k.shape[0], alpha, n, rng, mu_k.device)  # Eq. 10
        mu_env, var_env = mix(mu_k, theta), mix(var_k, theta)  # Eq. 9, [E, B, d]
    # 2) one noise draw shared by all environments, so that Var_e only sees what the
    #    environments change
    if sum_of_samples:
        z = sample_gaussian(mu, var, generator)  # z ~ q(z_u | x_u), [B, d]
    else:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)  # [B, d]
    rec, align = [], []
    for m_e, v_e in zip(mu_env, var_env):
        if sum_of_samples:  # for study: a sample of q plus a sample of the environment
            mu_f, var_f, z_e = mu, var, z + sample_gaussian(m_e, v_e, generator)  # [B, d]
        else:
            mu_f, var_f = fuse_gaussians(mu, var, m_e, v_e)  # Eq. 12, [B, d] each
            z_e = mu_f + var_f.sqrt() * eps  # a sample of the fused Gaussian, [B, d]
        rec.append(nll_fn(z_e))  # [B]
        mu_q, var_q = (mu_f, var_f) if align_fused else (mu, var)  # the Gaussian Eq. 11 aligns
        align.append(distribution_alignment(mu_q, var_q, m_e, v_e, beta)
                     if lambda1 != 0 else z_e.new_zeros(B))  # Eq. 11, [B]
    rec, align = torch.stack(rec), torch.stack(align)  # [E, B] each
    env_losses = rec + lambda1 * align  # Eq. 13, L^e per user, [E, B]
    # 3) Eq. 7 over the K profile means (deterministic: no sampling noise in L_reg)
    l_reg = uniformity_reg(mu_k, tau) if uniformity else contrastive_reg(mu_k, tau)
    var_e = env_variance(env_losses, unbiased_var, var_of_means)  # once, for Eq. 14 and parts
    total = proex_objective(env_losses, l_reg, lambda2, lambda3, var_e=var_e)  # Eq. 14
    return total, summary(rec, align, l_reg, var_e)


# ----------------------------------------------------------------------------
# Command-line flags shared by the six model files

# ProEx's values on the paper's datasets for the discriminative models: the paper states
# K = 4, lambda3 = 1, tau = 0.2 and Eq. 7 as printed; E, alpha, lambda2 and lambda1 are the
# released configuration's (BlueGhostYi/ProRec, lightgcn_proex.py and its amazon/yelp/steam
# configs: inv_weight aside, E 3/3/2, alpha 0.1, ex_weight 0.4/0.4/2.0, alignment off)
PAPER_DATASETS = {
    'book':  dict(envs=3, alpha=0.1, lambda2=0.4, lambda1=0.0, infonce_reg=False),
    'yelp':  dict(envs=3, alpha=0.1, lambda2=0.4, lambda1=0.0, infonce_reg=False),
    'steam': dict(envs=2, alpha=0.1, lambda2=2.0, lambda1=0.0, infonce_reg=False),
}


def proex_dataset_defaults(dataset, tuned):
    """The ProEx values a discriminative model file starts from on `dataset`: the paper's
    and released values on book, yelp and steam (PAPER_DATASETS), else `tuned`, the model
    file's own choice (validation on ml100k)."""
    return PAPER_DATASETS.get(dataset, tuned)


def add_proex_args(parser, generative=False, lambda1=0.0, lambda2=0.01, envs=3, alpha=0.1,
                   infonce_reg=False, form_why='', chosen='', released_also='', tuned=None):
    """Add the ProEx flags to an argparse parser (call resolve_proex_args after parsing).
    generative=True: Eq. 11 carries the base model's KL to the prior, so --lambda1 is that
    KL's weight (pass the base's, e.g. 1 for Mult-VAE) and must not default to 0; --beta and
    --sum-of-samples exist only then (a discriminative parser does not know them).
    lambda2, envs, alpha, infonce_reg (the form of Eq. 7, discriminative only): this model
    file's defaults; chosen, form_why: where they come from, in words.
    released_also: what --released sets in this model file besides the shared weights.
    tuned (discriminative): a dict of envs, alpha, lambda1, lambda2, infonce_reg, the file's
    values for every dataset but book, yelp and steam (PAPER_DATASETS); those flags then
    default to None and resolve_proex_args(..., tuned=tuned) fills them for --dataset."""
    if tuned is not None:
        lambda1, lambda2, envs, alpha, infonce_reg = (tuned[k] for k in (
            'lambda1', 'lambda2', 'envs', 'alpha', 'infonce_reg'))
        book, steam = PAPER_DATASETS['book'], PAPER_DATASETS['steam']
        by_set = lambda k, fmt='{:g}': (  # noqa: E731  help text: where each value comes from
            f"book and yelp {fmt.format(book[k])}, steam {fmt.format(steam[k])} (the released "
            f"configuration); ml100k, synthetic and any other dataset {fmt.format(tuned[k])}")
    chosen = f'; {chosen}' if chosen else ''
    said = lambda k, value: (f'default: {by_set(k)}{chosen}' if tuned is not None  # noqa: E731
                             else f'default {value}{chosen}')
    unset = lambda value: None if tuned is not None else value  # noqa: E731  filled per dataset
    g = parser.add_argument_group('ProEx', (  # the model files' help keeps line breaks as written
        '"released" below means the authors\' released ProEx code, BlueGhostYi/ProRec on\n'
        'GitHub (lightgcn_proex.py); where it differs from the paper, the paper is the\n'
        'default and a flag gives the released behaviour.'))
    g.add_argument('--proex', action='store_true',
                   help='train with ProEx (Alg. 1) and predict with Alg. 2; without it the base '
                        'model trains and the other flags of this group have no effect')
    g.add_argument('--envs', type=int, default=unset(envs),
                   help='E, number of environments, i.e. random mixtures of the K profiles '
                        f"(Eq. 8-10; paper 2..8; {said('envs', envs)})")
    g.add_argument('--alpha', type=float, default=unset(alpha),
                   help='Dirichlet concentration of the mixing weights (Eq. 10; paper 0.1, 0.2 '
                        f"or 0.3; {said('alpha', alpha)})")
    g.add_argument('--lambda1', type=float, default=unset(lambda1),
                   help="alignment weight of Eq. 13 (paper range [0, 1]; " + (
                       f'default {lambda1:g}) -- Eq. 11 holds the KL to the prior too, so with '
                       "--beta 1 this is the base model's KL weight" if generative else
                       f"{said('lambda1', lambda1) if tuned is not None else f'default {lambda1:g}'}"
                       ") -- InfoNCE between each distinct user's "
                       "(item's) vector and its mixed profile, over the batch's distinct ones"))
    g.add_argument('--lambda2', type=float, default=unset(lambda2),
                   help='weight of L_reg, the term that keeps the K profiles of an entity apart '
                        '(Eq. 7, 14; paper range [0, 2]; ' + (
                            said('lambda2', lambda2) if tuned is not None or chosen else
                            f'default {lambda2:g}, not tuned here: a small weight') +
                        '; --released: 0.4)')
    g.add_argument('--lambda3', type=float, default=1.0,
                   help='weight of Var_e, the variance of the loss across environments (Eq. 14; '
                        "default %(default)s as the paper; the released code's inv_weight is 10)")
    if generative:
        g.add_argument('--beta', type=float, default=0.5,
                       help='prior weight of Eq. 11: beta pulls the latent Gaussian towards '
                            "N(0, I), 1 - beta towards the environment's Gaussian "
                            '(default %(default)s)')
    g.add_argument('--tau', type=float, default=0.2,
                   help='temperature of Eq. 7 and of the InfoNCE alignment (default %(default)s)')
    if generative:
        g.add_argument('--profile-input', choices=['mean', 'dropped-sum'], default='mean',
                       help="input of Eq. 6's mapping: 'mean' of the profile vectors of the user's "
                            "train items plus the user's own (default: validation picks it, "
                            "bench/RESULTS.md section 7); 'dropped-sum': their sum "
                            "over the items left after input dropout, as DMRec, the authors' "
                            "generative code in BlueGhostYi/ProRec")
    g.add_argument('--profile-dim', type=int, default=None,
                   help='CPU option, not in the paper: project each side\'s profile vectors onto '
                        'their top N principal directions at load (default: full width)')
    g.add_argument('--profiles', type=str, default='all',
                   help="profile views used: 'all' or indices like '0,3', where 0 is the "
                        "original profile (OP) and k >= 1 the k-th extrapolated one (NP#k) "
                        '(default %(default)s)')
    if generative:
        g.add_argument('--align-fused', action=argparse.BooleanOptionalAction, default=False,
                       help="DMRec's code: Eq. 11 aligns the fused Gaussian of Eq. 12 with the "
                            "environment's; the environment's mean then cancels from it, so it "
                            'only shrinks the posterior mean and never moves the profile means '
                            '(default --no-align-fused: the posterior of Eq. 2, as Sec. 2.4)')
        g.add_argument('--sum-of-samples', action='store_true',
                       help='for study, not the default: Eq. 12 as a sample of the posterior '
                            "plus a sample of the environment's Gaussian (default: the two "
                            "Gaussians fused, means and log-variances added, as DMRec's code)")
    # ablations of the paper's Fig. 6
    g.add_argument('--no-var', action='store_true',
                   help='ablation: no variance term, first environment only')
    g.add_argument('--no-reg', action='store_true', help='ablation: no L_reg (lambda2 = 0)')
    g.add_argument('--no-align', action='store_true', help='ablation: no alignment (' + (
        'beta = 1: only the KL to the prior is left)' if generative else 'lambda1 = 0)'))
    g.add_argument('--no-mixing', action='store_true',
                   help='ablation: mean pooling of the K profiles instead of environments')
    if not generative:
        form = 'InfoNCE' if infonce_reg else 'as printed'
        where = (f'book, yelp and steam as printed (the paper); ml100k, synthetic and any other '
                 f'dataset {form}' if tuned is not None else form)
        g.add_argument('--infonce-reg', action=argparse.BooleanOptionalAction,
                       default=unset(infonce_reg),
                       help="Eq. 7 with exp(-1/tau) where the paper prints exp(+1/tau): the "
                            'InfoNCE form, whose positive is a profile with itself; '
                            '--no-infonce-reg: as printed; acts only with --lambda2 > 0 '
                            f"(default: {where}{'; ' + form_why if form_why else ''})")
    # released-code behaviours (BlueGhostYi/ProRec lightgcn_proex.py)
    g.add_argument('--uniformity-reg', action='store_true',
                   help='released: uniformity InfoNCE per profile instead of Eq. 7 (needs '
                        '--lambda2 > 0 or --released)')
    g.add_argument('--shared-mixing', action='store_true',
                   help='released: one Dirichlet draw per environment for the whole batch')
    g.add_argument('--unbiased-var', action='store_true',
                   help='released: unbiased Var_e (divide by E - 1)')
    g.add_argument('--var-of-means', action='store_true',
                   help='released: Var_e of the batch-mean environment losses instead of the '
                        'per-row variance averaged over the batch (Alg. 1)')
    owned = 'lambda2 0.4, lambda3 10, envs 3' + (
        '; lambda1 is kept, as it weights the KL to the prior here' if generative
        else ', lambda1 0')
    g.add_argument('--released', action='store_true',
                   help='with --proex, all released behaviours: --uniformity-reg --shared-mixing '
                        f'--unbiased-var --var-of-means, {owned}{released_also}. Giving one of '
                        'the values it sets another value is an error')
    return parser


# what --released sets (resolve_proex_args); lambda1 only for the discriminative models
RELEASED = dict(lambda2=0.4, lambda3=10.0, envs=3)


def resolve_proex_args(parser, argv=None, generative=False, tuned=None):
    """Parse argv with the model file's parser (add_proex_args called on it), then apply
    --released and the ablation switches; returns the Namespace.
    generative=True: 'w/o alignment' drops the profile part of Eq. 11 (beta = 1) but keeps
    lambda1, the weight of the KL to the prior (lambda1 = 0 would drop the VAE's KL too).
    tuned: the dict given to add_proex_args; fills the flags left unset for --dataset.
    Without --proex the ProEx flags are only reported as having no effect, not checked."""
    a = parser.parse_args(argv)
    proex_flags = vars(add_proex_args(argparse.ArgumentParser(), generative).parse_args([]))
    defaults = argparse.Namespace(**{k: parser.get_default(k) for k in proex_flags})  # this file's
    for k, v in proex_dataset_defaults(a.dataset, tuned).items() if tuned is not None else ():
        setattr(defaults, k, v)  # this file's value on this dataset
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not a.proex:  # the ProEx flags only act with --proex: one note, then their defaults
        given = [k for k, v in vars(defaults).items() if k not in ('proex', 'lambda1')
                 and getattr(a, k) != v]
        if given:
            print(f"note: {', '.join('--' + k.replace('_', '-') for k in given)} "
                  f"{'has' if len(given) == 1 else 'have'} no effect without --proex")
        for k in given:
            setattr(a, k, getattr(defaults, k))
    rules = [('envs', a.envs >= 1, 'an integer >= 1 (the number E of environments)'),
             ('alpha', a.alpha > 0, '> 0 (the Dirichlet concentration of Eq. 10)'),
             ('lambda1', a.lambda1 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('lambda2', a.lambda2 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('lambda3', a.lambda3 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('tau', a.tau > 0, '> 0 (a temperature, Eq. 7)')]
    if generative:  # the discriminative parsers have no --beta
        rules.append(('beta', 0 <= a.beta <= 1, 'in [0, 1] (the prior weight of Eq. 11)'))
    for flag, ok, need in rules:  # one `error:` line naming the flag
        if not (ok and np.isfinite(getattr(a, flag))):
            raise SystemExit(f'error: argument --{flag}: must be {need}, got {getattr(a, flag)}')
    # a form of Eq. 7 given where it would change nothing is an error, not a silent no-op
    sign = [] if generative or a.infonce_reg == defaults.infonce_reg else \
        ['--infonce-reg' if a.infonce_reg else '--no-infonce-reg']  # given, not the default
    if a.proex and sign and (a.uniformity_reg or a.released):
        raise SystemExit(f'error: argument {sign[0]}: --uniformity-reg (or --released) '
                         'replaces Eq. 7, so its sign would be ignored; give one of them')
    form = sign + ['--uniformity-reg'] * a.uniformity_reg
    if a.proex and form and a.lambda2 == 0 and not a.released:  # L_reg off: the form is unused
        raise SystemExit(f'error: argument {form[0]}: L_reg is off (lambda2 = 0), so its '
                         'form would change nothing; set --lambda2')
    if a.profile_dim is not None and a.profile_dim < 1:
        raise SystemExit(f'error: argument --profile-dim: must be an integer >= 1, got {a.profile_dim}')
    owned = dict(RELEASED, **({} if generative else {'lambda1': 0.0}))
    for k, v in owned.items() if a.released and a.proex else ():  # a value --released overwrites
        if getattr(a, k) not in (getattr(defaults, k), v):
            raise SystemExit(f'error: argument --{k}: --released sets {k} {v:g} (the released '
                             f'code\'s value), so --{k} {getattr(a, k):g} would be ignored; drop '
                             f'--{k} or --released')
    if a.proex and generative and a.sum_of_samples and a.align_fused:
        raise SystemExit('error: argument --align-fused: --sum-of-samples samples the posterior '
                         'and the environment apart, so there is no fused Gaussian to align; '
                         'give one of them')
    if a.released:  # the released LightGCN also switches its InfoNCE alignment off (lambda1)
        a.uniformity_reg, a.shared_mixing, a.unbiased_var, a.var_of_means = True, True, True, True
        for k, v in owned.items():
            setattr(a, k, v)
    if a.no_var:
        a.lambda3, a.envs = 0.0, 1
    if a.no_reg:  # refused when it would change nothing, as --no-align below
        if a.lambda2 == 0:
            raise SystemExit('error: argument --no-reg: L_reg is already off (lambda2 = 0), so '
                             'this run would equal plain --proex; drop --no-reg, or set --lambda2')
        a.lambda2 = 0.0
    if a.no_align:  # an ablation that would change nothing is refused, not run as --proex
        weight, off = ('beta', 1.0) if generative else ('lambda1', 0.0)
        if getattr(a, weight) == off:
            raise SystemExit(f'error: argument --no-align: the alignment is already off '
                             f'({weight} = {off:g}{", as in --released" if a.released else ""}),'
                             f' so this run would equal plain --proex; drop --no-align, or set '
                             f'--{weight} to turn the alignment on')
        setattr(a, weight, off)
    if a.no_mixing:
        a.envs = 1
    return a


def switches(args, generative=False):
    """The released-code and ablation switches of the one-batch objectives, from the parsed
    flags (all off by default: the paper). The weights and sizes are passed by name."""
    kw = dict(shared_mixing=args.shared_mixing, unbiased_var=args.unbiased_var,
              var_of_means=args.var_of_means, no_mixing=args.no_mixing)
    if generative:
        return dict(kw, sum_of_samples=args.sum_of_samples, align_fused=args.align_fused,
                    uniformity=args.uniformity_reg)
    return dict(kw, uniformity=args.uniformity_reg, infonce_reg=args.infonce_reg)
