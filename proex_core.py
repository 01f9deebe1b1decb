"""ProEx core: the profile-extrapolation method, shared by all six base models.

Paper: Zhang, Zhang, Wang, Chen, Yin. "ProEx: A Unified Framework Leveraging Large
Language Model with Profile Extrapolation for Recommendation", KDD'26, arXiv 2512.00679.
Sec. 2.3-2.4, Alg. 1 (training) and Alg. 2 (inference). Imports torch and numpy only, so it
can be copied alone into another codebase (the flags live in eval.py).

Every public definition, in the order of the file (helpers before their first use):
  checks of the inputs             check_shape, check_profiles, check_variance, as_ids
  mappings f_psi (Eq. 6)           DirectMapping, AggregationMapping, aggregate_profiles
  the K views of all entities      stack_views, project_views, check_views, check_train,
                                   rows_of, ProfileEncoder, ProfileAggregator
  contrastive regularisation (7)   info_nce_rows, info_nce, contrastive_reg (paper),
                                   uniformity_reg (released code)
  environments (Eq. 8-10)          dirichlet_weights, mix, mean_profile
  inference (Alg. 2)               add_mean_profile
  alignment (Eq. 11, 13)           distinct_rows, first_occurrences, entity_alignment,
                                   kl_diag_gaussians, distribution_alignment
  fusion (Eq. 12)                  fuse_vectors, fuse_gaussians, sample_gaussian
  the base models' losses (L_rec)  bpr_rows, bpr_loss, l2_reg, multinomial_nll, kl_to_prior,
                                   reparameterize
  RLMRec-C (Table 2's baseline)    info_nce_summed, rlmrec_con_loss
  the variants, one name each      mix_per_entity, mix_shared, mix_mean (MIXING), REG,
                                   VAR_E, FUSION, ALIGN, choose
  total (Eq. 14)                   env_variance, proex_objective, loss_parts
  one batch of Alg. 1              discriminative_environments, discriminative_reg,
                                   discriminative_objective; generative_environments,
                                   generative_objective

Layouts: K profiles per entity, E environments, B rows of a batch (n entities), d model
size, d_s text-embedding size. Profiles are K-first: [K, B, d]; environments E-first.
Gaussians: what comes in from a model is a log-variance (`logvar`: the VAE encoder's output,
AggregationMapping's, generative_objective's arguments, kl_to_prior, reparameterize);
generative_objective turns them into variances once, and the helpers of Eq. 9, 11 and 12
it calls (mix, fuse_gaussians, kl_diag_gaussians, distribution_alignment, sample_gaussian)
take variances (`var`).
Where the released code (BlueGhostYi/ProRec, lightgcn_proex.py) differs from the paper, the
paper is the default and the released behaviour is a named value of one keyword (mixing,
reg, var_e; fusion and align for the generative models), checked with one error that lists
the names. A [B, K, d] stack where [K, B, d] belongs is named as transposed; with B = K the
two layouts look alike and are not told apart.

Tests: python -m pytest -q tests/test_proex_core.py
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Checks of the inputs, at the entry points (shapes only: no device sync)

def check_shape(name, t, want, layout, why=''):
    """Raise one ValueError naming the layout unless t.shape matches `want` (None: any size).
    Example: c_u: expected [K, B, d] with B = 4096 (z_u's rows), got [4096, 4, 32]."""
    shape = tuple(t.shape)
    if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
        raise ValueError(f'{name}: expected {layout}{" with " + why if why else ""}, '
                         f'got {list(shape)}')


def check_profiles(name, c, B, d, K=None):
    """A [K, B, d] stack of K profiles per row: K is read off dim 0 (or given), never off a
    dim that equals B when the other does not; [B, K, d] is named as the transposed layout.
    -> K."""
    shape = tuple(c.shape)
    if len(shape) == 3 and shape[0] == B and shape[1] != B and shape[2] == d and K in (None, shape[1]):
        raise ValueError(f'{name}: expected [K, B, d] (K profiles first) with B = {B}, d = {d}, '
                         f'got {list(shape)}, the transposed layout [B, K, d] with K = {shape[1]}; '
                         f'pass {name}.transpose(0, 1)')
    K = shape[0] if K is None and len(shape) == 3 else K
    check_shape(name, c, (K, B, d), '[K, B, d]', f'K = {K}, B = {B}, d = {d}')
    return K


def check_variance(name, var):
    """Variances (not log-variances) must be >= 0. Checked on the CPU only: on a GPU reading
    the answer would wait for the device once per batch."""
    if var.device.type == 'cpu' and bool((var < 0).any()):
        raise ValueError(f'{name}: negative values; this helper takes variances sigma^2 >= 0, '
                         f'not log-variances (pass logvar.exp())')


def as_ids(ids, name, device=None):
    """Entity ids as a LongTensor [B] (lists, numpy arrays and integer tensors are taken)."""
    ids = torch.as_tensor(ids, device=device)
    if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f'{name}: expected integer ids [B], got {ids.dtype} {list(ids.shape)}')
    return ids.long()


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
            nn.init.xavier_uniform_(layer.weight)  # Sec. 3.1.4: "initialized using Xavier"

    def forward(self, c):
        return self.mlp(c)  # [..., d_s] -> [..., d]


class AggregationMapping(nn.Module):
    """f_psi^a of Eq. 6 for generative models: an aggregated profile vector is mapped to the
    mean and log-variance of a diagonal Gaussian in the latent space."""

    def __init__(self, d_s, d, hidden=600):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_s, hidden), nn.Tanh(), nn.Linear(hidden, 2 * d))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.xavier_uniform_(layer.weight)  # Sec. 3.1.4: "initialized using Xavier"

    def forward(self, c):
        mu, logvar = self.mlp(c).chunk(2, dim=-1)  # [..., 2d] -> 2 x [..., d]
        return mu, logvar  # Eq. 6: mu_{u,k} and log sigma^2_{u,k}


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


def check_views(c_users, c_items):
    """The K views of both sides, K-first: [K, U, d_s] and [K, I, d_s] with the same K, d_s."""
    for name, c in (('usr_prf', c_users), ('itm_prf', c_items)):
        if c.dim() != 3 or c.shape[0] > c.shape[1]:  # K (a few views) < n (entities)
            raise ValueError(f'{name}: expected K arrays [n, d_s] (a [K, n, d_s] stack, K views '
                             f'first), got {list(c.shape)}; an [n, K, d_s] array needs '
                             f'.transpose(1, 0, 2) first')
    if c_users.shape[0] != c_items.shape[0] or c_users.shape[2] != c_items.shape[2]:
        raise ValueError(f'usr_prf, itm_prf: expected the same K and d_s on both sides, got '
                         f'{list(c_users.shape)} and {list(c_items.shape)} ([K, n, d_s])')


def check_train(train, n_users, n_items):
    """The user-item train matrix: a scipy sparse matrix (anything with .tocsr()), a numpy
    array or a torch tensor (dense or sparse), [U, I]."""
    if not (hasattr(train, 'tocsr') or isinstance(train, (np.ndarray, torch.Tensor))):
        raise TypeError(f'train: expected the [U, I] user-item matrix as a scipy sparse matrix, '
                        f'a numpy array or a torch tensor, got {type(train).__name__}')
    check_shape('train', train, (n_users, n_items), '[U, I]',
                f"U, I = {n_users}, {n_items}, the rows of usr_prf's and itm_prf's views")


def rows_of(train, start, stop):
    """Dense rows start:stop of a train matrix (check_train) -> float tensor [rows, I]."""
    if hasattr(train, 'tocsr'):  # any scipy format; tocsr() of a CSR matrix is the matrix itself
        return torch.from_numpy(train.tocsr()[start:stop].toarray())
    if isinstance(train, np.ndarray):
        return torch.from_numpy(train[start:stop])
    return (train.to_dense() if train.is_sparse else train)[start:stop].cpu()


class ProfileEncoder(nn.Module):
    """Discriminative side: holds the K text-embedding views c_{.,k} (Eq. 5) of all users
    and items as fixed buffers, and maps the rows asked for with one DirectMapping (Eq. 6).
    usr_prf, itm_prf: K arrays [U, d_s] and K arrays [I, d_s] (or [K, n, d_s] stacks).
    forward(u, i, j): the mapped profiles of a BPR batch (ids [B]) -> 3 x [K, B, d].
    Only the distinct ids of a batch go through the MLP."""

    def __init__(self, usr_prf, itm_prf, d, profile_dim=None):
        super().__init__()
        c_users, c_items = stack_views(usr_prf), stack_views(itm_prf)  # [K, U, d_s], [K, I, d_s]
        check_views(c_users, c_items)
        c_users, c_items = project_views(c_users, c_items, profile_dim)
        # persistent=False keeps the fixed views out of state_dict
        self.register_buffer('c_users', c_users, persistent=False)
        self.register_buffer('c_items', c_items, persistent=False)
        self.f_psi = DirectMapping(self.c_users.shape[-1], d)

    def _map(self, c, ids):
        uniq, inverse = torch.unique(ids, return_inverse=True)  # map each id once
        # index_select: on a CPU faster than c[:, ids] (forward and backward)
        return self.f_psi(c.index_select(1, uniq)).index_select(1, inverse)  # [K, B, d]

    def users(self, ids):
        return self._map(self.c_users, as_ids(ids, 'users', self.c_users.device))  # [K, B, d]

    def items(self, ids):
        return self._map(self.c_items, as_ids(ids, 'items', self.c_items.device))  # [K, B, d]

    def forward(self, u, i, j):
        """The mapped profiles of one BPR batch: users u, positives i, negatives j [B] ->
        c_u, c_i, c_j [K, B, d]; positives and negatives go through the MLP together."""
        i, j = as_ids(i, 'i', self.c_items.device), as_ids(j, 'j', self.c_items.device)
        c_i, c_j = self._map(self.c_items, torch.cat([i, j])).split(len(i), dim=1)  # [K, B, d] each
        return self.users(u), c_i, c_j

    def all_users(self):
        return self.f_psi(self.c_users)  # every user's K mapped profiles, [K, U, d]

    def mean_users(self):
        return mean_profile(self.all_users())  # Alg. 2, [U, d]

    def mean_items(self):
        return mean_profile(self.f_psi(self.c_items))  # Alg. 2, [I, d]


class ProfileAggregator(nn.Module):
    """Generative side: for the users of a batch, aggregate each profile view over the
    user's interacted items plus the user's own, and map it to (mu_{u,k}, log sigma^2_{u,k})
    with one AggregationMapping (Eq. 6). train: the [U, I] user-item train matrix (rows_of).
    input_rule (Eq. 6 does not say which):
      'mean' (default): the mean over the user's train items, computed once here since it
        depends only on the train matrix and the fixed text embeddings; the default, as
        validation picks it (bench/RESULTS.md);
      'dropped-sum': the SUM over the items of the row the encoder reads after input
        dropout, as the authors' DMRec code (BlueGhostYi/ProRec, mult_vae_mddm.py, encode:
        matmul(drop(x), itmprf_embeds) + user_emb); forward() then needs that row."""

    def __init__(self, usr_prf, itm_prf, train, d, hidden=600, chunk=1024, profile_dim=None,
                 input_rule='mean'):
        super().__init__()
        self.input_rule = input_rule
        c_users, c_items = stack_views(usr_prf), stack_views(itm_prf)  # [K, U, d_s], [K, I, d_s]
        check_views(c_users, c_items)
        check_train(train, c_users.shape[1], c_items.shape[1])
        train = train.tocsr() if hasattr(train, 'tocsr') else train  # converted once, not per chunk
        c_users, c_items = project_views(c_users, c_items, profile_dim)
        self.f_psi = AggregationMapping(c_users.shape[-1], d, hidden)
        if input_rule == 'dropped-sum':  # buffers: not in state_dict
            self.register_buffer('c_users', c_users, persistent=False)
            self.register_buffer('c_items', c_items, persistent=False)
            return
        c_agg = torch.empty_like(c_users)  # input of f_psi^a for every user, [K, U, d_s]
        for s in range(0, train.shape[0], chunk):  # dense rows a chunk of users at a time
            x = rows_of(train, s, s + chunk)  # [chunk, I]
            c_agg[:, s:s + chunk] = aggregate_profiles(x, c_items, c_users[:, s:s + chunk])
        self.register_buffer('c_agg', c_agg, persistent=False)  # not in state_dict

    def forward(self, users, x=None):
        """users: [B] ids (x: [B, I] the encoder's input row, for 'dropped-sum')
        -> mu_k, logvar_k: [K, B, d] each (Eq. 6)."""
        if self.input_rule == 'mean':
            return self.f_psi(self.c_agg.index_select(1, as_ids(users, 'users', self.c_agg.device)))
        c = torch.einsum('bi,kid->kbd', x.to(self.c_items.dtype), self.c_items)  # [K, B, d_s]
        users = as_ids(users, 'users', self.c_users.device)
        return self.f_psi(c + self.c_users.index_select(1, users))  # DMRec's sum, [K, B, d] x 2


# ----------------------------------------------------------------------------
# Contrastive regularisation over the K profiles of one entity (Eq. 7)

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
    Drawn by `rng`, a numpy Generator (on a CPU faster than torch's sampler);
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
    # with addcmul, the weights laid out [K, E, n, 1] contiguously; on a CPU faster,
    # forward and backward, than a broadcast [K, E, n, d] product summed over K
    theta = theta.permute(2, 0, 1).unsqueeze(-1).contiguous()  # [K, E, n, 1]
    out = theta[0] * views[0]  # [E, n, d]
    for t_k, c_k in zip(theta[1:], views[1:]):
        out = torch.addcmul(out, t_k, c_k)  # out + theta_k * c_k
    return out  # [E, n, d]


def mean_profile(c):
    """Alg. 2 (inference) and the 'w/o mixing' ablation: mean of the K mapped profiles."""
    return c.mean(dim=0)  # [K, n, d] -> [n, d]


def add_mean_profile(z, c):
    """Alg. 2: a model's vector (or posterior mean) plus the mean of the entity's K mapped
    profiles (means). z: [n, d], c: [K, n, d] -> [n, d]."""
    check_profiles('c', c, z.shape[0], z.shape[-1])
    return z + mean_profile(c)


# ----------------------------------------------------------------------------
# Alignment between the collaborative and the language space (L_align of Eq. 13:
# contrastive for the discriminative models, the distribution matching of Eq. 11 for the
# generative ones)

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


def kl_diag_gaussians(mu_q, var_q, mu_p, var_p, check=True):
    """Closed-form KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians,
    summed over the last dim: [..., d] -> [...]. var_q, var_p: variances.
    The paper's Eq. 11 prints ln(mu~/mu) in the first term; the Gaussian KL has the ratio of
    the standard deviations, ln(sigma~/sigma) = 0.5 ln(var_p / var_q), as here."""
    if check:  # generative_objective's variances come from exp(): it passes check=False
        check_variance('var_q', var_q)
        check_variance('var_p', var_p)
    kl = torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0  # [..., d]
    return 0.5 * kl.sum(dim=-1)


def distribution_alignment(mu, var, mu_env, var_env, beta, check=True):
    """Eq. 11, generative alignment: w_u KL(q || N(mu~^e, var~^e)) + w_prior KL(q || N(0, I))
    with w_u = 1 - beta, w_prior = beta, and q = N(mu, var) the base model's posterior.
    With beta = 1 it is the usual VAE KL term. [B, d] x 4 -> [B], one value per user."""
    if check:
        check_variance('var', var)
        check_variance('var_env', var_env)
    kl_env = kl_diag_gaussians(mu, var, mu_env, var_env, check=False)  # [B]
    kl_prior = kl_diag_gaussians(mu, var, torch.zeros_like(mu), torch.ones_like(var), check=False)  # [B]
    return (1.0 - beta) * kl_env + beta * kl_prior  # Eq. 11, [B]


# ----------------------------------------------------------------------------
# Fusion (Eq. 12): profile and collaborative vectors are added element-wise

def fuse_vectors(z, c_env):
    """Eq. 12 for the discriminative models: the collaborative vector plus the environment's
    mixed profile, element-wise. z: [..., B, d], c_env: [E, B, d] -> [E, B, d]."""
    return z + c_env


def fuse_gaussians(mu, var, mu_env, var_env, check=True):
    """Eq. 12 for the generative models: "element-wise addition" applied to the parameters of
    the two Gaussians, as the authors' DMRec code does (BlueGhostYi/ProRec,
    encoder/models/general_cf/mult_vae_mddm.py, cal_loss: mu = mu_src + mu_llm,
    logvar = logvar_src + logvar_llm). Means add; log-variances add, so variances multiply.
    mu, var: [B, d] base posterior; mu_env, var_env: [B, d] one environment -> 2 x [B, d]."""
    if check:
        check_variance('var', var)
        check_variance('var_env', var_env)
    return mu + mu_env, var * var_env  # Eq. 12: N(mu + mu~e, sigma^2 * sigma~e^2)


def sample_gaussian(mu, var, generator=None, check=True):
    """z = mu + sqrt(var) * eps, eps ~ N(0, I): a differentiable sample of N(mu, var)."""
    if check:
        check_variance('var', var)
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
# A single-profile baseline of the paper's Table 2: RLMRec-C (Ren et al., WWW'24), the
# contrastive alignment of one profile (the OP) with the collaborative vectors, as RLMRec's
# code writes it (HKUDS/RLMRec, encoder/models/general_cf/lightgcn_plus.py, cal_loss, and
# models/loss_utils.py, cal_infonce_loss). The profile is not fused into the vectors and plays
# no part at inference. (DMRec-M of Table 3 is generative_objective with one profile, one
# environment and Eq. 11 on the fused Gaussian: eval.py's --dmrec.)

def info_nce_summed(z, c, ids, c_all=None, tau=0.2):
    """RLMRec's InfoNCE summed over the B rows of a batch: for each row,
    -log(exp(z.c / tau) / sum_{c'} exp(z.c' / tau)), all vectors L2-normalised, the sum over c'
    running over c_all [N, d] or, when None, over the B rows of c themselves (repeats included).
    Computed once per distinct id and weighted by its count (rows of one id are equal, and a
    repeated row in the denominator is its count times exp): the same value, with [n, n]
    logits instead of [B, B]. z, c: [B, d], ids: [B] -> scalar."""
    first, inverse = distinct_rows(ids)  # [n], [B]
    count = torch.bincount(inverse, minlength=first.numel()).to(z.dtype)  # [n]
    z, c = F.normalize(z.index_select(0, first), dim=-1), F.normalize(c.index_select(0, first), dim=-1)
    if c_all is None:  # the batch's rows: each distinct one, log(count) times over
        logits = z @ c.T / tau + count.log()[None, :]  # [n, n]
    else:
        logits = z @ F.normalize(c_all, dim=-1).T / tau  # [n, N]
    per_id = torch.logsumexp(logits, dim=-1) - (z * c).sum(-1) / tau  # [n]
    return (count * per_id).sum()


def rlmrec_con_loss(z_u, z_i, z_j, c_u, c_i, c_j, c_users, users, pos_items, neg_items, tau=0.2):
    """RLMRec-C's kd_loss before its weight: the InfoNCE of each user against ALL users'
    mapped profiles, of each positive against the batch's positive profiles and of each
    negative against the batch's negative profiles (repeats included, as RLMRec), summed over
    rows and divided by the batch size. z_*: [B, d]; c_u, c_i, c_j: [1, B, d] (one profile,
    ProfileEncoder's layout); c_users: [1, U, d]; users, pos_items, neg_items: [B] ids -> scalar."""
    B, d = z_u.shape[0], z_u.shape[-1]
    for name, c in (('c_u', c_u), ('c_i', c_i), ('c_j', c_j)):
        check_profiles(name, c, B, d, K=1)
    check_shape('c_users', c_users, (1, None, d), '[1, U, d]', 'one profile of every user')
    ids = [as_ids(x, name, z_u.device) for x, name in ((users, 'users'), (pos_items, 'pos_items'),
                                                        (neg_items, 'neg_items'))]
    return (info_nce_summed(z_u, c_u[0], ids[0], c_users[0], tau)
            + info_nce_summed(z_i, c_i[0], ids[1], None, tau)
            + info_nce_summed(z_j, c_j[0], ids[2], None, tau)) / B


# ----------------------------------------------------------------------------
# The variants, one keyword each with named values; adding one is a function and a name.
# The paper's reading is the first of each; the released code's (BlueGhostYi/ProRec,
# lightgcn_proex.py) and the Fig. 6 ablation are the others.

def mix_per_entity(stacks, envs, alpha, rng, same_rows=False):
    """Paper (Eq. 10, Alg. 1 line 13): one Dirichlet draw per row per environment.
    stacks: [K, n, d] each -> [E, n, d] each. The rows of different stacks are different
    entities (a BPR batch's users, positives, negatives) and draw apart; same_rows=True: the
    stacks are two sides of the same rows (Eq. 9's means and variances) and share the draw."""
    sizes = [c.shape[1] for c in stacks]
    theta = dirichlet_weights(envs, stacks[0].shape[0], alpha, sizes[0] if same_rows else sum(sizes),
                              rng, stacks[0].device)  # [E, n, K]
    weights = [theta] * len(stacks) if same_rows else theta.split(sizes, dim=1)
    return [mix(c, t) for c, t in zip(stacks, weights)]  # Eq. 8 (9)


def mix_shared(stacks, envs, alpha, rng, same_rows=False):
    """Released code: one draw per environment for the whole batch."""
    theta = dirichlet_weights(envs, stacks[0].shape[0], alpha, None, rng, stacks[0].device)  # [E, K]
    return [mix(c, theta) for c in stacks]


def mix_mean(stacks, envs, alpha, rng, same_rows=False):
    """Fig. 6 'w/o mixing': one environment, the mean of the K profiles."""
    return [mean_profile(c)[None] for c in stacks]  # [1, n, d] each


MIXING = {'per-entity': mix_per_entity, 'shared': mix_shared, 'mean': mix_mean}

# L_reg over an entity's K profiles: Eq. 7 as printed, with the InfoNCE sign, or the released
# code's uniformity loss; views [K, n, d] -> scalar
REG = {'printed': lambda views, tau: contrastive_reg(views, tau),
       'infonce': lambda views, tau: contrastive_reg(views, tau, infonce=True),
       'uniformity': lambda views, tau: uniformity_reg(views, tau)}

# Var_e(L^e) of Eq. 14 from per-row losses [E, B] -> scalar. Alg. 1 (appendix A.1) loops over
# the rows of a batch: the draw (line 13), the environment losses (line 16) and the variance
# over the environments (line 18) are per row, the gradients averaged (line 20). The released
# code takes the variance of the E batch means instead (with per-row draws it averages the
# differences away) and divides by E - 1 (torch.var).
VAR_E = {'paper': lambda L: L.var(dim=0, correction=0).mean(),      # per row, then the mean
         'unbiased': lambda L: L.var(dim=0, correction=1).mean(),
         'of-means': lambda L: L.mean(dim=1).var(correction=0),     # of the E batch means
         'released': lambda L: L.mean(dim=1).var(correction=1)}


def choose(family, name, table):
    """The variant `name` of a family, or one error listing the names."""
    if name not in table:
        raise ValueError(f'{family}={name!r}: expected one of {", ".join(map(repr, table))}')
    return table[name]


# ----------------------------------------------------------------------------
# The ProEx objective (Eq. 14)

def env_variance(env_losses, var_e='paper'):
    """Var_e(L^e) of Eq. 14 (VAR_E[var_e]) from per-row losses [E, B] -> scalar; 0 when E == 1."""
    if env_losses.shape[0] < 2:
        return env_losses.sum() * 0.0  # one environment: nothing varies
    return choose('var_e', var_e, VAR_E)(env_losses)


def proex_objective(env_losses, l_reg, lambda2, lambda3, var_e='paper', variance=None):
    """Eq. 14: sum_e L^e + lambda2 L_reg + lambda3 Var_e(L^e), with L^e the batch mean of the
    per-row environment losses. env_losses: [E, B] (a 1-D [E] is read as one row each).
    variance: Var_e(L^e) when the caller has it already (env_variance with the same var_e)."""
    if env_losses.dim() == 1:
        env_losses = env_losses[:, None]  # [E] -> [E, 1]
    if variance is None:
        variance = env_variance(env_losses, var_e)
    return env_losses.mean(dim=1).sum() + lambda2 * l_reg + lambda3 * variance


def loss_parts(rec, align, l_reg, var_e):
    """The unweighted parts of Eq. 14 as detached tensors (no device sync). rec, align: [E, B]."""
    return {'rec': rec.detach().mean(dim=1).sum(), 'align': align.detach().mean(dim=1).sum(),
            'reg': l_reg.detach(), 'var': var_e.detach()}


# ----------------------------------------------------------------------------
# One batch of Alg. 1

def discriminative_environments(c_u, c_i, c_j, envs, alpha, mixing='per-entity', rng=None):
    """The environments of one BPR batch (Eq. 8-10): the mixed profiles of users, positives
    and negatives, each row its own draw. c_u, c_i, c_j: [K, B, d] -> 3 x [E, B, d]."""
    return tuple(choose('mixing', mixing, MIXING)([c_u, c_i, c_j], envs, alpha, rng))  # Eq. 8


def discriminative_reg(c_u, c_i, tau=0.2, reg='printed', users=None, pos_items=None):
    """L_reg over the K profiles of the batch's users and positive items (Eq. 7); the
    released uniformity loss over the distinct ones. -> scalar."""
    form = choose('reg', reg, REG)
    if reg == 'uniformity':  # released: over the distinct users and positives of the batch
        c_u = c_u[:, first_occurrences(users)] if users is not None else c_u
        c_i = c_i[:, first_occurrences(pos_items)] if pos_items is not None else c_i
    return form(c_u, tau) + form(c_i, tau)


def discriminative_objective(z_u, z_i, z_j, c_u, c_i, c_j, *, envs=2, alpha=0.3, lambda1=0.0,
                             lambda2=0.0, lambda3=1.0, tau=0.2, mixing='per-entity',
                             reg='printed', var_e='paper', rng=None, users=None,
                             pos_items=None, neg_items=None, rec_rows=bpr_rows):
    """Alg. 1 for one BPR batch of a discriminative model (LightGCN, GCCF, SimGCL).
    z_u, z_i, z_j: [B, d] collaborative vectors of users, positive and negative items.
    c_u, c_i, c_j: [K, B, d] their K profiles, already mapped (ProfileEncoder, Eq. 6).
    users, pos_items, neg_items: [B] ids, needed for the alignment (lambda1 > 0), which runs
      over the distinct ones of each; reg='uniformity' uses users and pos_items.
    Weights (defaults: an ml100k choice of LightGCN's grid with the alignment off, so that
      no ids are needed; lightgcn.py's own default turns it on): envs E, alpha (Eq. 10),
      lambda1 the weight of the InfoNCE alignment (Eq. 13), lambda2 of L_reg (Eq. 7),
      lambda3 of Var_e (Eq. 14), tau the temperature of both.
    Variants: mixing (MIXING), reg (REG), var_e (VAR_E); the paper's by default.
    rec_rows: L_rec of one triple, (z_u, z_i, z_j) [..., B, d] -> [..., B]; BPR by default.
    rng: a numpy Generator for the Dirichlet draws (None: seeded from torch's RNG).
    Returns (total, parts): parts = detached scalar tensors {'rec', 'align', 'reg', 'var'}
    (unweighted; 'rec' and 'align' summed over environments), kept on the device so that
    reading them is the caller's choice (float() waits for the device)."""
    B, d = z_u.shape[0], z_u.shape[-1]
    for name, z in (('z_u', z_u), ('z_i', z_i), ('z_j', z_j)):
        check_shape(name, z, (B, d), '[B, d]', f"B, d = {B}, {d} (z_u's shape)")
    K = check_profiles('c_u', c_u, B, d)  # B, d: z_u's rows and columns
    check_profiles('c_i', c_i, B, d, K)
    check_profiles('c_j', c_j, B, d, K)
    for family, name, table in (('mixing', mixing, MIXING), ('reg', reg, REG), ('var_e', var_e, VAR_E)):
        choose(family, name, table)
    if lambda1 != 0 and (users is None or pos_items is None or neg_items is None):
        raise ValueError('discriminative_objective: lambda1 > 0 needs users=, pos_items= and '
                         'neg_items= ([B] ids), as Eq. 13 contrasts the distinct entities of the batch')
    users = None if users is None else as_ids(users, 'users', z_u.device)
    pos_items = None if pos_items is None else as_ids(pos_items, 'pos_items', z_u.device)
    neg_items = None if neg_items is None else as_ids(neg_items, 'neg_items', z_u.device)
    for name, ids in (('users', users), ('pos_items', pos_items), ('neg_items', neg_items)):
        if ids is not None:
            check_shape(name, ids, (B,), '[B]', f"B = {B} (z_u's rows)")
    # 1) environments: the mixed profiles of users, positives and negatives (Eq. 8-10)
    cu_e, ci_e, cj_e = discriminative_environments(c_u, c_i, c_j, envs, alpha, mixing, rng)  # 3 x [E, B, d]
    # 2) fusion by addition (Eq. 12) and the recommendation loss per environment and triple
    rec = rec_rows(fuse_vectors(z_u, cu_e), fuse_vectors(z_i, ci_e), fuse_vectors(z_j, cj_e))  # [E, B]
    # 3) alignment per environment and row (L_align of Eq. 13) over the distinct users,
    #    positives and negatives, as the released code's (switched-off) alignment
    if lambda1 != 0:
        align = (entity_alignment(z_u, cu_e, users, tau) + entity_alignment(z_i, ci_e, pos_items, tau)
                 + entity_alignment(z_j, cj_e, neg_items, tau))  # [E, B]
    else:
        align = torch.zeros_like(rec)  # [E, B]
    env_losses = rec + lambda1 * align  # Eq. 13, L^e per row, [E, B]
    # 4) regularisation over each entity's K profiles (Eq. 7)
    l_reg = discriminative_reg(c_u, c_i, tau, reg, users, pos_items)
    # 5) total (Eq. 14)
    variance = env_variance(env_losses, var_e)  # once, for Eq. 14 and parts
    total = proex_objective(env_losses, l_reg, lambda2, lambda3, variance=variance)
    return total, loss_parts(rec, align, l_reg, variance)


FUSION = {'gaussians': 'the fused Gaussian of Eq. 12, sampled once', 'sum-of-samples': 'for study'}
ALIGN = {'posterior': 'Eq. 11 on q of Eq. 2 (Sec. 2.4)', 'fused': "Eq. 11 on the fused Gaussian (DMRec's code)"}


def generative_environments(mu_k, var_k, envs, alpha, mixing='per-entity', rng=None):
    """The environments' Gaussians (Eq. 9-10): means and variances mixed separately with the
    same weights. mu_k, var_k: [K, B, d] -> mu_env, var_env: [E, B, d]."""
    mu_env, var_env = choose('mixing', mixing, MIXING)([mu_k, var_k], envs, alpha, rng, same_rows=True)
    return mu_env, var_env  # Eq. 9, [E, B, d] each


def generative_objective(nll_fn, mu, logvar, mu_k, logvar_k, *, envs=3, alpha=0.1, beta=0.5,
                         lambda1=1.0, lambda2=0.01, lambda3=1.0, tau=0.2, mixing='per-entity',
                         reg='printed', var_e='paper', fusion='gaussians', align='posterior',
                         generator=None, rng=None):
    """Alg. 1 for one batch of a generative model (Mult-VAE, L-DiffRec, CVGA).
    nll_fn: z [B, d] -> [B] reconstruction loss of each user under the base model (no KL
      term: the KL to the prior is the beta part of Eq. 11).
    mu, logvar: [B, d] the base posterior q(z_u | x_u) of Eq. 2, as the encoder gives it;
    mu_k, logvar_k: [K, B, d] from AggregationMapping (ProfileAggregator), one per profile.
    Weights (defaults: Mult-VAE's on ml100k): envs E, alpha (Eq. 10); lambda1 weighs ALL of
      Eq. 11, the KL to the prior included (unlike the InfoNCE weight of the discriminative
      objective): lambda1 * beta is the base VAE's KL weight, so beta = 1 is the base VAE's
      loss per environment; lambda2 weighs L_reg (Eq. 7 over the K profile means), lambda3
      Var_e (Eq. 14), tau is Eq. 7's temperature.
    fusion='gaussians' (Eq. 12, as DMRec's code): per environment the fused Gaussian
      N(mu + mu~e, var * var~e) and one sample of it feed L_rec; 'sum-of-samples' (for study):
      a sample of q plus a sample of the environment's Gaussian.
    align='posterior' (Sec. 2.4): Eq. 11 aligns the base posterior q = N(mu, var) of Eq. 2
      with the environment's Gaussian; 'fused' (DMRec's code): the fused Gaussian, from which
      the environment's mean cancels ((mu + mu~e) - mu~e = mu), so the profile means get no
      gradient from it.
    mixing, reg, var_e: as discriminative_objective (the users of a batch are distinct).
    generator, rng (tests): a torch Generator on mu's device for the Gaussian samples and a
      numpy Generator for the Dirichlet draws; the model files use the global RNGs.
    Returns (total, parts) as discriminative_objective."""
    B, d = mu.shape[0], mu.shape[-1]
    check_shape('mu', mu, (B, d), '[B, d]')
    check_shape('logvar', logvar, (B, d), '[B, d]', f"B, d = {B}, {d} (mu's shape)")
    K = check_profiles('mu_k', mu_k, B, d)  # B, d: mu's rows and columns
    check_profiles('logvar_k', logvar_k, B, d, K)
    for family, name, table in (('mixing', mixing, MIXING), ('reg', reg, REG), ('var_e', var_e, VAR_E),
                                ('fusion', fusion, FUSION), ('align', align, ALIGN)):
        choose(family, name, table)
    if fusion == 'sum-of-samples' and align == 'fused':
        raise ValueError("align='fused' needs fusion='gaussians': sum-of-samples has no fused Gaussian")
    var, var_k = logvar.exp(), logvar_k.exp()  # the one conversion: variances from here on
    # 1) environments: mix means and variances separately (Eq. 9, 10)
    mu_env, var_env = generative_environments(mu_k, var_k, envs, alpha, mixing, rng)  # [E, B, d] each
    # 2) one noise draw shared by all environments, so that Var_e only sees what the
    #    environments change
    if fusion == 'sum-of-samples':
        z = sample_gaussian(mu, var, generator, check=False)  # z ~ q(z_u | x_u), [B, d]
    else:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)  # [B, d]
    rec, aligned = [], []
    for m_e, v_e in zip(mu_env, var_env):
        if fusion == 'sum-of-samples':  # a sample of q plus a sample of the environment
            mu_f, var_f, z_e = mu, var, z + sample_gaussian(m_e, v_e, generator, check=False)  # [B, d]
        else:
            mu_f, var_f = fuse_gaussians(mu, var, m_e, v_e, check=False)  # Eq. 12, [B, d] each
            z_e = mu_f + var_f.sqrt() * eps  # a sample of the fused Gaussian, [B, d]
        rec.append(nll_fn(z_e))  # [B]
        if rec[-1].shape != (B,):
            raise ValueError(f'nll_fn: expected one loss per row, shape [{B}], got '
                             f'{list(rec[-1].shape)}; return the per-user loss, not its mean')
        mu_q, var_q = (mu_f, var_f) if align == 'fused' else (mu, var)  # the Gaussian Eq. 11 aligns
        aligned.append(distribution_alignment(mu_q, var_q, m_e, v_e, beta, check=False)
                       if lambda1 != 0 else z_e.new_zeros(B))  # Eq. 11, [B]
    rec, aligned = torch.stack(rec), torch.stack(aligned)  # [E, B] each
    env_losses = rec + lambda1 * aligned  # Eq. 13, L^e per user, [E, B]
    # 3) L_reg over the K profile means (deterministic: no sampling noise in it)
    l_reg = REG[reg](mu_k, tau)  # Eq. 7
    variance = env_variance(env_losses, var_e)  # once, for Eq. 14 and parts
    total = proex_objective(env_losses, l_reg, lambda2, lambda3, variance=variance)  # Eq. 14
    return total, loss_parts(rec, aligned, l_reg, variance)

