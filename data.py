"""Data for the ProEx reference implementation (KDD'26, "A Unified Framework
Leveraging Large Language Model with Profile Extrapolation for Recommendation").

What this file holds, top to bottom:
  1. `Dataset` and `load_dataset` (what every model calls): the three splits plus the
     K profile-embedding views per side, checked for shape and finiteness, with errors
     that name the file and the fix;
  2. BPR batches (one uniform negative per training interaction, re-drawn every epoch),
     and the user batches and dense rows of the generative models;
  3. the normalised bipartite adjacency as a torch sparse CSR tensor, and a sparse
     product whose backward reuses a precomputed transpose (fast on CPU);
  4. `synthetic`: an offline dataset with planted structure and K = 4 profile views;
  5. where datasets live (`--data-dir`, else $PROEX_DATA, else ./data) and the
     download of the public RLMRec archive (book / yelp / steam);
  6. `ml100k-grouplens`: MovieLens-100K built from the GroupLens archive (the splits of
     the prepared `ml100k` folder, plus side information for profiles.py's F1);
  7. a safe loader for the official pickles (`*_mat.pkl`, `*_emb_np*.pkl`).

    python data.py --dataset ml100k --data-dir DIR   # prints a summary
    python data.py --dataset ml100k-grouplens     # downloads and builds it, then a summary
"""
import contextlib
import json
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
import zlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

# dataset name on the command line -> folder under the data root
FOLDERS = {'book': 'amazon', 'yelp': 'yelp', 'steam': 'steam', 'ml100k': 'ml100k'}
DOWNLOADED = ('book', 'yelp', 'steam')   # fetched from the RLMRec archive when missing
RLMREC_URL = 'https://archive.org/download/rlmrec_data/data.zip'  # holds amazon/ yelp/ steam/
ML100K_NAME = 'ml100k-grouplens'   # built by fetch_ml100k; `ml100k` is the prepared folder
ML100K_URL = 'https://files.grouplens.org/datasets/movielens/ml-100k.zip'  # $PROEX_ML100K_URL
ML100K_SEED = 2025                 # splits u1.test's positives into validation and test
SPLITS = ('trn', 'val', 'tst')
KNOWN_NAMES = ('book', 'yelp', 'steam', 'ml100k', ML100K_NAME, 'synthetic', 'synthetic-book',
               'synthetic-book-1536')   # matched case-insensitively; other names are folders
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')


class DataError(Exception):
    """Bad or missing input data; the message names the file and the fix."""


# ---------------------------------------------------------------------------
# 1. the dataset: splits + K profile views per side
# ---------------------------------------------------------------------------
@dataclass
class Dataset:
    name: str
    train: sp.csr_matrix          # [n_users, n_items] binary
    val: sp.csr_matrix
    test: sp.csr_matrix
    usr_prf: list = field(default_factory=list)  # K arrays [n_users, d_s] (view 0 = OP)
    itm_prf: list = field(default_factory=list)  # K arrays [n_items, d_s]

    @property
    def n_users(self):
        return self.train.shape[0]

    @property
    def n_items(self):
        return self.train.shape[1]

    def summary(self):
        k = len(self.usr_prf)
        views = f', K={k} profile views of dim {self.usr_prf[0].shape[1]}' if k else ', no profiles'
        return (f'{self.name}: {self.n_users} users, {self.n_items} items, train/val/test '
                f'{self.train.nnz}/{self.val.nnz}/{self.test.nnz}{views}')


def load_dataset(name, data_dir=None, profiles=False, views=None, seed=2023, download_ok=True):
    """Load a dataset by name. profiles=True also loads the K profile views per side
    (an error lists what is missing). Any folder under the data root loads by its name."""
    name = known_name(name)
    if name == 'synthetic':
        return select_views(make_synthetic(seed), views)
    if name in ('synthetic-book', 'synthetic-book-1536'):  # Amazon-Book's size (11,000 x 9,332,
        # ~120k train) for cost benchmarks; -1536: views as wide as text-embedding-ada-002's
        d_s = 1536 if name.endswith('1536') else 64
        return select_views(make_synthetic(seed, n_users=11000, n_items=9332, per_user=18, d_s=d_s),
                            views)
    root = data_root(data_dir)
    folder = dataset_folder(root, name)
    splits = [folder / f'{s}_mat.pkl' for s in SPLITS]
    check_splits_together(folder, splits)
    if not splits[0].exists():
        fetch_missing(name, root, folder, splits, download_ok)
    train, val, test = (load_matrix(f) for f in splits)
    if train.nnz == 0:
        raise DataError(f'{splits[0]}: no interactions (shape {train.shape}), nothing to train '
                        f'on; regenerate the split')
    for s, m in (('val', val), ('tst', test)):
        if m.shape != train.shape:
            raise DataError(f'{folder / (s + "_mat.pkl")}: shape {m.shape} differs from '
                            f'trn_mat.pkl {train.shape}; all splits must index the same '
                            f'users and items')
    data = Dataset(name, train, val, test)
    if profiles:  # name every missing file of both sides in one error
        check_view_range(folder, name, views)
        if views is None:  # all views present: ProEx mixes K >= 2 of them (Eq. 8-10)
            check_enough_views(folder, name)
        check_profile_files(profile_files(folder, 'usr', views) + profile_files(folder, 'itm', views), name)
        data.usr_prf = load_profiles(folder, 'usr', train.shape[0], views)
        data.itm_prf = load_profiles(folder, 'itm', train.shape[1], views)
        n_u, n_i = len(data.usr_prf), len(data.itm_prf)
        if n_u != n_i:  # view k of users is mixed with view k of items (Eq. 8)
            short = 'itm' if n_i < n_u else 'usr'
            raise DataError(f'{folder}: {n_u} user views but {n_i} item views; view k of one '
                            f'side is paired with view k of the other, so add '
                            f'{emb_files(folder, short, max(n_u, n_i))[min(n_u, n_i)]} or use '
                            f'the common views with --profiles '
                            f'{",".join(map(str, range(min(n_u, n_i))))}')
        if data.usr_prf[0].shape[1] != data.itm_prf[0].shape[1]:
            raise DataError(f'{folder}: user and item embeddings differ in width; embed both '
                            f'sides with the same model')
    return data


def known_name(name):
    """A known dataset name in any case ('Book' -> 'book'); any other name as given."""
    return name.lower() if name.lower() in KNOWN_NAMES else name


def dataset_folder(root, name):
    """The folder of a dataset under the data root; a name that is neither known nor a folder
    there is an error (before any download, so a typo fetches nothing)."""
    folder = root / FOLDERS.get(name, name)
    if name not in KNOWN_NAMES and not folder.is_dir():
        raise DataError(f'unknown dataset {name!r} (no folder {folder}): known names are '
                        f'{", ".join(KNOWN_NAMES)}, or the name of a folder under the data root '
                        f'(--data-dir or $PROEX_DATA)')
    return folder


def fetch_missing(name, root, folder, splits, download_ok):
    """Download book/yelp/steam or build ml100k-grouplens when their splits are missing, or
    raise; a data root this call created is removed again when it fails."""
    fetched = False
    with removed_on_error(root):
        if name in DOWNLOADED and download_ok:
            print(f'{folder} has no trn_mat.pkl: fetching the RLMRec archive into {root}')
            fetch_rlmrec(root, url=os.environ.get('PROEX_RLMREC_URL') or RLMREC_URL)  # read now
            fetched = True
        if name == ML100K_NAME and download_ok:
            fetch_ml100k(root)                  # builds the folder whole, or raises
        if not splits[0].exists():
            why = (f' (the archive {RLMREC_URL} has no complete {folder.name}/ with '
                   f'{", ".join(f.name for f in splits)})' if fetched else '')
            raise DataError(f'{splits[0]} not found{why}; pass --data-dir (or set '
                            f'PROEX_DATA) to the folder that holds {folder.name}/, or use '
                            f'--dataset synthetic for an offline run')


def check_splits_together(folder, splits):
    """trn/val/tst come together: a folder with some but not all of them is an error that
    names the missing files (it would otherwise look loadable and block the download)."""
    have = [f.exists() for f in splits]
    if any(have) and not all(have):
        missing = ', '.join(str(f) for f, h in zip(splits, have) if not h)
        raise DataError(f'{folder} holds only part of a dataset, missing: {missing}; add them, '
                        f'or remove the split files left there (book/yelp/steam are then '
                        f'downloaded again)')


def load_matrix(path):
    m = safe_load(path)
    if not sp.issparse(m) or m.ndim != 2:
        raise DataError(f'{path}: expected a 2-D scipy.sparse matrix, got {type(m).__name__}; '
                        f'the file must be a pickled scipy.sparse (users x items) matrix')
    m = sp.csr_matrix(m)
    if not np.isfinite(m.data).all():
        raise DataError(f'{path}: contains NaN or infinite values; regenerate the split')
    m = sp.csr_matrix(m != 0, dtype=np.float32)  # binarise: a non-zero is an interaction
    m.sort_indices()
    return m


def emb_files(folder, side, K=None):
    """Official names: usr_emb_np.pkl (OP), usr_emb_np_1.pkl, ... (NPs); likewise itm_."""
    names = [f'{side}_emb_np.pkl'] + [f'{side}_emb_np_{k}.pkl' for k in range(1, (K or 99))]
    if K is None:  # as many views as exist, consecutively from the OP
        n = 0
        while n < len(names) and (Path(folder) / names[n]).exists():
            n += 1
        names = names[:max(n, 1)]
    return [Path(folder) / n for n in names]


def profile_files(folder, side, views=None):
    """The embedding files of one side: views = list of view indices (0 = OP, k = NP #k),
    None = all present."""
    if views is None:
        return emb_files(folder, side)
    files = emb_files(folder, side, K=max(views) + 1)
    return [files[v] for v in views]


def check_profile_files(files, name='<dataset>'):
    """A DataError listing every missing file (pass both sides' files at once)."""
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DataError(
            'ProEx needs the profile embeddings, missing: ' + ', '.join(missing) + '.\n'
            f'Get them (1) from the ProEx release (folders linked from the ProRec README, '
            f'{PROREC_README}) into that folder, or (2) write them with '
            f'`python profiles.py --dataset {name} --dry-run` (the cost), then without '
            f'--dry-run, against a chat-completions endpoint.')


# K profiles per entity: the OP and K - 1 new ones (paper Sec. 2.3.1; K = 4 on its datasets)
PAPER_K = {'book': 4, 'yelp': 4, 'steam': 4}
PROREC_README = 'https://github.com/BlueGhostYi/ProRec'  # links the OP and new-profile folders


def views_present(folder):
    """K: the views both sides have, consecutively from the OP (usr_emb_np.pkl, _1, ...)."""
    return min(sum(f.exists() for f in emb_files(folder, side)) for side in ('usr', 'itm'))


def check_enough_views(folder, name):
    """ProEx over all views needs K >= 2 (one view makes every environment the same profile,
    so Var_e and L_reg are 0: not ProEx), and the paper's K = 4 on book, yelp and steam.
    One error lists, per side, the files expected and which are present, and how to get
    the rest. A subset chosen with --profiles (Fig. 4(b)) does not come here."""
    need, K = PAPER_K.get(name, 2), views_present(folder)
    if K >= need:
        return
    lines = []
    for side in ('usr', 'itm'):
        expected = emb_files(folder, side, K=max(need, 4))
        lines.append(f'  {side}: ' + ', '.join(f'{f.name} ({"present" if f.exists() else "missing"})'
                                             for f in expected))
    why = ("the paper's K = 4" if name in PAPER_K else
           'with one view every environment is the same profile')
    raise DataError(
        f'--proex on {name} found K = {K} profile view(s) in {folder}, needs at least {need} '
        f'({why}):\n' + '\n'.join(lines) + '\n'
        f'Get the new profiles (NPs) from the ProEx release (the folders linked from the ProRec '
        f'README, {PROREC_README}) into {folder}, or write them from the OP texts '
        f'(on book, yelp and steam RLMRec\'s usr_prf.pkl and itm_prf.pkl, from the same archive '
        f'as the OP embeddings) with an OpenAI-compatible endpoint, the cost estimate first:\n'
        f'  python profiles.py --dataset {name} --data-dir {folder.parent} --dry-run\n'
        f'  python profiles.py --dataset {name} --data-dir {folder.parent}\n'
        f'Or run ProEx on chosen views deliberately with --profiles (e.g. --profiles 0,1).')


def load_profiles(folder, side, n_rows, views=None):
    """K profile-embedding views of one side, each [n_rows, d_s] float32.
    views: list of view indices to keep (0 = OP, k = NP #k), None = all present."""
    files = profile_files(folder, side, views)
    check_profile_files(files)
    out = []
    for f in files:
        a = safe_load(f)
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            raise DataError(f'{f}: expected a 2-D numpy array [n, d_s], got '
                            f'{type(a).__name__} {getattr(a, "shape", "")}')
        if a.shape[0] != n_rows:
            raise DataError(f'{f}: has {a.shape[0]} rows but the interaction matrices have '
                            f'{n_rows} {side == "usr" and "users" or "items"}; the embeddings '
                            f'belong to another split or dataset: regenerate them for this one')
        if not np.isfinite(a).all():
            raise DataError(f'{f}: contains NaN or infinite values; regenerate those rows')
        with np.errstate(over='ignore'):
            a32 = a.astype(np.float32)
        if not np.isfinite(a32).all():  # e.g. 1e300 in float64 is inf in float32
            raise DataError(f'{f}: values beyond the float32 range (largest magnitude '
                            f'{np.abs(a).max():.3g}); the models train in float32: rescale or '
                            f'regenerate the embeddings')
        out.append(a32)
    if len({a.shape[1] for a in out}) > 1:
        raise DataError(f'{folder}: {side} views have different widths '
                        f'{[a.shape[1] for a in out]}; embed every view with one model')
    return out


def views_out_of_range(name, views, K):
    """The error for --profiles indices beyond the K views a dataset has."""
    valid = 'the valid index is 0' if K == 1 else f'valid indices are 0-{K - 1}'
    return DataError(f'--profiles {",".join(map(str, views))}: dataset {name} has K = {K} '
                     f'profile views, {valid}')


def check_view_range(folder, name, views):
    """--profiles indices whose files exist on neither side, in a folder that has K >= 1
    views on both sides, are an error naming the valid range (not a list of missing files)."""
    if views is None:
        return
    K = views_present(folder)
    absent = [v for v in views
              if not any(f.exists() for side in ('usr', 'itm') for f in profile_files(folder, side, [v]))]
    if K and absent:
        raise views_out_of_range(name, views, K)


def select_views(data, views):
    """Keep profile views `views` (list of indices, 0 = OP) of an already loaded dataset."""
    if views is None:
        return data
    K = len(data.usr_prf)
    if max(views) >= K:
        raise views_out_of_range(data.name, views, K)
    return Dataset(data.name, data.train, data.val, data.test,
                   [data.usr_prf[v] for v in views], [data.itm_prf[v] for v in views])


def parse_views(spec):
    """--profiles: 'all' -> None (every view present), '0,3' -> [0, 3] (0 = OP, k = NP #k)."""
    if spec is None or spec == 'all':
        return None
    try:
        views = [int(v) for v in spec.split(',')]
    except ValueError:
        raise SystemExit(f"error: argument --profiles: expected 'all' or indices like '0,3', got {spec!r}")
    if min(views) < 0 or len(set(views)) != len(views):
        raise SystemExit(f'error: argument --profiles: need distinct indices >= 0, got {spec!r}')
    return views


# ---------------------------------------------------------------------------
# 2. BPR training batches
# ---------------------------------------------------------------------------
def sample_negatives(train, users, rng):
    """One item per row of `users`, uniform over all items, rejected only against the
    user's train items (vectorised: redraw just the rejected entries)."""
    n_items = train.shape[1]
    full = np.flatnonzero(np.diff(train.indptr) >= n_items)  # no item left to draw
    if np.isin(users, full).any():
        raise DataError(f'users {full[:10].tolist()} have every item in train, so no negative '
                        f'exists for them; drop them from the dataset')
    neg = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    while len(todo):
        bad = _in_train(train, users[todo], neg[todo])
        todo = todo[bad]
        neg[todo] = rng.integers(0, n_items, size=len(todo))
    return neg


def _in_train(train, users, items):
    """Boolean [n]: is (users[n], items[n]) a train interaction?"""
    if not train.has_sorted_indices:  # the binary search below needs sorted rows
        train = train.sorted_indices()
    keys = users.astype(np.int64) * train.shape[1] + items
    coo_keys = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr)) \
        * train.shape[1] + train.indices
    pos = np.searchsorted(coo_keys, keys)
    return coo_keys[np.minimum(pos, len(coo_keys) - 1)] == keys


def bpr_batches(train, batch_size, rng):
    """One epoch of (users, pos, neg) LongTensor batches over all train interactions in
    random order; negatives are drawn anew on every call (i.e. every epoch)."""
    users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    pos = train.indices.astype(np.int64)
    order = rng.permutation(len(users))
    users, pos = users[order], pos[order]
    neg = sample_negatives(train, users, rng)
    for s in range(0, len(users), batch_size):
        yield (torch.from_numpy(users[s:s + batch_size]), torch.from_numpy(pos[s:s + batch_size]),
               torch.from_numpy(neg[s:s + batch_size]))


def user_batches(n_users, batch_size, rng):
    """Shuffled user-id batches for the generative models (batches of users)."""
    order = torch.from_numpy(rng.permutation(n_users))
    return [order[s:s + batch_size] for s in range(0, n_users, batch_size)]


def dense_rows(mat, users, device='cpu'):
    """Rows `users` of a scipy CSR matrix as a dense float tensor [B, n_items]."""
    return torch.from_numpy(mat[users.numpy()].toarray()).to(device)


# ---------------------------------------------------------------------------
# 3. the normalised bipartite adjacency and a sparse product with a fast backward
# ---------------------------------------------------------------------------
def norm_adj(train, self_loops=False, device='cpu'):
    """A = [[0, R], [R^T, 0]] of size (U+I)^2.
    self_loops=False: A_hat = D^-1/2 A D^-1/2 (LightGCN, SimGCL); zero-degree rows -> 0.
    self_loops=True:  (D+I)^-1/2 (A+I) (D+I)^-1/2 (GCCF).
    Returns a torch sparse CSR tensor (symmetric, so it is its own transpose)."""
    U, I = train.shape
    R = sp.csr_matrix(train, dtype=np.float32)
    A = sp.bmat([[None, R], [R.T, None]], format='csr', dtype=np.float32)
    if self_loops:
        A = A + sp.identity(U + I, dtype=np.float32, format='csr')
    deg = np.asarray(A.sum(1)).ravel()
    d = np.zeros_like(deg)
    d[deg > 0] = deg[deg > 0] ** -0.5
    A_hat = sp.diags(d) @ A @ sp.diags(d)
    return to_torch_csr(sp.csr_matrix(A_hat, dtype=np.float32), device)


def to_torch_csr(m, device='cpu'):
    m = sp.csr_matrix(m)
    m.sort_indices()
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).long(), torch.from_numpy(m.indices).long(),
                                   torch.from_numpy(m.data), size=m.shape,
                                   check_invariants=False).to(device)


def transpose_perm(A):
    """For a CSR tensor A with a symmetric pattern: the permutation p of its values such
    that A^T = CSR(same crow/col, values[p]). Lets a masked copy of A (edge dropout)
    be transposed by indexing, without building a new matrix."""
    crow, col = A.crow_indices().cpu().numpy(), A.col_indices().cpu().numpy()
    row = np.repeat(np.arange(len(crow) - 1), np.diff(crow))
    key_t = col.astype(np.int64) * A.shape[0] + row          # (col,row) of each entry
    key = row.astype(np.int64) * A.shape[0] + col            # sorted: CSR order
    return torch.from_numpy(np.searchsorted(key, key_t)).to(A.device)


def with_values(A, values):
    """A CSR tensor with A's pattern and new values."""
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, size=A.shape,
                                   check_invariants=False)


class SpMM(torch.autograd.Function):
    """y = A @ X with backward dX = A^T @ dy computed from a given A^T. torch's own
    backward of a sparse product is the slow part of a CPU epoch;
    for the symmetric A_hat, A^T is A itself."""

    @staticmethod
    def forward(ctx, A, A_t, X):
        ctx.A_t = A_t
        return A @ X

    @staticmethod
    def backward(ctx, dy):
        return None, None, ctx.A_t @ dy


def spmm(A, X, A_t=None):
    """A @ X, differentiable in X; pass A_t when A is not symmetric."""
    return SpMM.apply(A, A if A_t is None else A_t, X)


# ---------------------------------------------------------------------------
# 4. synthetic: planted structure, K = 4 views of different quality
# ---------------------------------------------------------------------------
def make_synthetic(seed=2023, n_users=3000, n_items=2000, r=16, per_user=20, d_s=64):
    """Users and items carry latent factors [*, r]; each user interacts with `per_user`
    items drawn by softmax(user . item) plus popularity, split 3:1:1 per user.
    Profile views: three informative ones (a fixed random projection of the latent
    factors plus noise of std 0.5, 1.0, 2.0) and one misleading view (the projection
    of a random other entity's factors). Generated in well under 2 s."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_users, r)).astype(np.float32)                 # user factors
    Q = rng.normal(size=(n_items, r)).astype(np.float32)                 # item factors
    pop = rng.normal(scale=1.0, size=n_items).astype(np.float32)         # item popularity
    logits = P @ Q.T / np.sqrt(r) * 3.0 + pop                            # [U, I]
    gumbel = -np.log(-np.log(rng.uniform(size=logits.shape).astype(np.float32) + 1e-12) + 1e-12)
    items = np.argpartition(-(logits + gumbel), per_user, axis=1)[:, :per_user]  # sample w/o repl.
    perm = rng.permuted(np.tile(np.arange(per_user), (n_users, 1)), axis=1)
    part = np.where(perm < per_user * 3 // 5, 0, np.where(perm < per_user * 4 // 5, 1, 2))
    rows = np.repeat(np.arange(n_users), per_user)
    mats = [sp.csr_matrix((np.ones(int((part == s).sum()), np.float32),
                           (rows[part.ravel() == s], items.ravel()[part.ravel() == s])),
                          shape=(n_users, n_items)) for s in range(3)]
    W = (rng.normal(size=(r, d_s)) / np.sqrt(r)).astype(np.float32)     # "text encoder"

    def views(F):
        out = [F @ W + rng.normal(scale=s, size=(len(F), d_s)).astype(np.float32)
               for s in (0.5, 1.0, 2.0)]
        out.append(F[rng.permutation(len(F))] @ W)                        # misleading view
        return out
    return Dataset('synthetic', *mats, usr_prf=views(P), itm_prf=views(Q))


# ---------------------------------------------------------------------------
# 5. data root and download
# ---------------------------------------------------------------------------
def data_root(data_dir=None):
    """--data-dir, else the environment variable PROEX_DATA, else ./data."""
    return Path(data_dir or os.environ.get('PROEX_DATA') or 'data')


@contextlib.contextmanager
def removed_on_error(folder):
    """If the block raises, remove again the folders (`folder` and its parents) that did not
    exist when it began, deepest first and only when empty: never a folder that was there."""
    folder = Path(folder).absolute()
    new = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for p in new:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def short_cause(e):
    """An exception in a few words: 'no network (cannot resolve archive.org)', 'HTTP 404',
    'timed out', or its own message, shortened."""
    text = ' '.join(str(e).split())
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    if status:
        return f'HTTP {status}'
    if 'Timeout' in type(e).__name__ or 'timed out' in text:
        return 'timed out'
    if 'NameResolution' in text or 'Name or service not known' in text or 'getaddrinfo' in text:
        host = urllib.parse.urlparse(getattr(getattr(e, 'request', None), 'url', '') or '').hostname
        return f'no network (cannot resolve {host or "the host"})'
    if 'Connection' in type(e).__name__:
        return 'no connection to the server'
    return text if len(text) <= 80 else text[:77] + '...'


def one_line(e):
    """'Type: message' of an exception, its whitespace (line breaks too) collapsed."""
    return f'{type(e).__name__}: {" ".join(str(e).split())}'


def download(url, dest, chunk=1 << 20, timeout=30, log=print):
    """Stream `url` (http(s)://, file:// or a local path) into `dest` through a temporary file
    renamed only when complete, so an interrupted transfer (an error, Ctrl-C or SIGTERM)
    never leaves a file behind, nor a folder it created."""
    dest = Path(dest)
    with removed_on_error(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _download(url, dest, chunk, timeout, log)


def _download(url, dest, chunk, timeout, log):
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + '.', suffix='.part')
    progress = False  # a progress line without its newline is on the screen
    with _sigterm_raises():
        try:
            with os.fdopen(fd, 'wb') as f, _open_source(url, chunk, timeout) as (total, blocks):
                done, t0 = 0, time.time()
                for block in blocks:
                    f.write(block)
                    done += len(block)
                    rate = done / max(time.time() - t0, 1e-9)
                    log(f'\rdownloading {url}: {done / 2**20:.1f}'
                        f'{f"/{total / 2**20:.1f}" if total else ""} MiB at {rate / 2**20:.1f} MiB/s',
                        end='', flush=True)
                    progress = True
                if progress:
                    log('')
                    progress = False
                if total and done != total:  # the server closed the connection early
                    raise IOError(f'transfer cut off after {done} of {total} bytes')
            os.replace(tmp, dest)
        except BaseException:
            if progress:  # end the progress line so that the error starts on its own line
                log('')
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


@contextlib.contextmanager
def _open_source(url, chunk, timeout):
    """(size in bytes, 0 if unknown; iterator of blocks) of an http(s):// URL, a file:// URL
    or a local path: a local copy goes through the same checks as a download."""
    path = local_path(url)
    if path is not None:
        with open(path, 'rb') as f:
            yield os.fstat(f.fileno()).st_size, iter(lambda: f.read(chunk), b'')
        return
    import requests
    with requests.get(url, stream=True, timeout=timeout) as r:
        r.raise_for_status()
        yield int(r.headers.get('Content-Length') or 0), r.iter_content(chunk)


def local_path(url):
    """'file:///a/b.zip' -> '/a/b.zip'; a path without a scheme -> itself; 'https://...' -> None."""
    if url.startswith('file://'):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    return None if '://' in url else url


@contextlib.contextmanager
def _sigterm_raises():
    """While active (main thread only), SIGTERM raises SystemExit instead of killing the
    process outright, so `except`/`finally` blocks can remove partial files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(f'error: stopped by signal {signum} during a download; its partial '
                         f'file was removed')
    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def fetch_rlmrec(root, url=RLMREC_URL, log=print):
    """Download and extract the RLMRec archive so that <root>/amazon/trn_mat.pkl etc. exist.
    Members are extracted into a temporary folder; only dataset folders with all three
    splits are moved into place, so a failure midway or a partial archive leaves no half
    dataset behind (and no `root` if this call created it). An existing folder without
    splits (e.g. one holding the profile embeddings) receives the archive's files; a folder
    that has any split is left alone."""
    root = Path(root)
    with removed_on_error(root):
        root.mkdir(parents=True, exist_ok=True)
        return _fetch_rlmrec(root, url, log)


def _fetch_rlmrec(root, url, log):
    zpath = root / 'rlmrec_data.zip'
    try:
        download(url, zpath, log=log)
    except Exception as e:
        raise DataError(f'could not download {url}: {short_cause(e)}; offline, point '
                        f'PROEX_RLMREC_URL at a copy of the archive (a local path), or unzip it so '
                        f'that {root}/amazon/trn_mat.pkl exists (likewise yelp/, steam/)') from e
    try:
        with zipfile.ZipFile(zpath) as z, tempfile.TemporaryDirectory(dir=root) as tmp:
            for m in z.namelist():  # refuse absolute paths and '..' in the archive
                if m.startswith('/') or '..' in Path(m).parts:
                    raise DataError(f'{zpath}: unsafe member name {m!r} in the archive')
            z.extractall(tmp)
            for pkl in sorted(Path(tmp).rglob('trn_mat.pkl')):  # each folder holding a split
                _move_complete_split(pkl.parent, root / pkl.parent.name)
    except zipfile.BadZipFile as e:
        raise DataError(f'the file downloaded from {url} is not a valid zip archive ({e}) and '
                        f'was removed; retry later, or download it by hand and unzip it so that '
                        f'{root}/amazon/trn_mat.pkl exists') from e
    finally:
        zpath.unlink(missing_ok=True)
    return root


def _move_complete_split(src, target):
    """Move an extracted dataset folder's files into `target` when it has all three splits
    and `target` has none; trn_mat.pkl goes last, so the folder looks loadable only once
    whole. Existing files in `target` are kept."""
    if not all((src / f'{s}_mat.pkl').exists() for s in SPLITS):
        return
    if any((target / f'{s}_mat.pkl').exists() for s in SPLITS):
        return
    target.mkdir(exist_ok=True)
    for f in sorted(src.iterdir(), key=lambda f: f.name == 'trn_mat.pkl'):
        if not (target / f.name).exists():
            os.replace(f, target / f.name)


# ---------------------------------------------------------------------------
# 6. ml100k-grouplens: MovieLens-100K from the GroupLens archive, splits and side information
# ---------------------------------------------------------------------------
def ml100k_url():
    """$PROEX_ML100K_URL (another URL, a file:// URL or a local path), else ML100K_URL."""
    return os.environ.get('PROEX_ML100K_URL') or ML100K_URL


def fetch_ml100k(root, url=None, log=print):
    """Build <root>/ml100k-grouplens/: trn/val/tst_mat.pkl and usr_side.jsonl, itm_side.jsonl.
    The archive goes to <root>/ml-100k.zip (atomically) and is kept; a copy already there
    (placed by hand) is used as it is. Everything is written into a temporary folder
    renamed into place at the end, so a failure leaves no half dataset behind (and no `root`
    if this call created it)."""
    root, url = Path(root), url or ml100k_url()
    with removed_on_error(root):   # a data root this call created goes again on failure
        return _fetch_ml100k(root, url, log)


def _fetch_ml100k(root, url, log):
    zpath = root / 'ml-100k.zip'
    by_hand = (f'offline, place the archive at {zpath} or point PROEX_ML100K_URL at a local '
               f'copy (shared/datasets/ml100k_raw/ holds one)')
    if not zpath.exists():
        log(f'{root / ML100K_NAME} has no trn_mat.pkl: fetching {url} into {root}')
        try:
            download(url, zpath, log=log)
        except Exception as e:
            raise DataError(f'could not download {url}: {short_cause(e)}; {by_hand}') from e
    try:
        with zipfile.ZipFile(zpath) as z:
            users, items, base, test = read_ml100k(z)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, zlib.error) as e:
        zpath.unlink()
        raise DataError(f'{zpath} (from {url}) is not a complete ML-100K archive '
                        f'({one_line(e)}) and was removed; {by_hand}') from e
    splits = split_ml100k(base, test, len(users), len(items))
    with _sigterm_raises(), tempfile.TemporaryDirectory(dir=root, prefix='.ml100k-') as tmp:
        new = Path(tmp) / ML100K_NAME
        write_ml100k(new, splits, users, items)
        target = root / ML100K_NAME
        if target.exists():   # e.g. a folder holding profiles already: add the files, trn last
            _move_complete_split(new, target)
        else:
            os.replace(new, target)
    log(f'built {target}: {len(users)} users, {len(items)} items, train/val/test '
        f'{splits[0].nnz}/{splits[1].nnz}/{splits[2].nnz}')
    return target


def read_ml100k(z):
    """The GroupLens files -> (users, items, u1.base positives, u1.test positives). Field
    layouts as in the archive's README ("DETAILED DESCRIPTIONS OF DATA FILES"); ids are
    the files' ids minus 1; u.item is Latin-1."""
    def rows(name, sep='|'):
        return [line.split(sep) for line in z.read(f'ml-100k/{name}').decode('latin-1').splitlines()
                if line.strip()]
    genres = [g for g, _ in rows('u.genre')]                    # 19 names, in column order
    users = []
    for uid, age, gender, occupation, _zip in rows('u.user'):   # user id | age | gender | ...
        check_id(uid, len(users))
        users.append({'age': int(age), 'gender': {'M': 'male', 'F': 'female'}[gender],
                      'occupation': occupation})
    items = []
    for f in rows('u.item'):    # id | title | release date | video date | URL | 19 genre flags
        check_id(f[0], len(items))
        items.append({'title': f[1], 'year': int(f[2][-4:]) if f[2] else None,
                      'genres': [g for g, flag in zip(genres, f[5:]) if flag == '1']})
    return users, items, positives(rows('u1.base', '\t')), positives(rows('u1.test', '\t'))


def check_id(token, expected):
    """The README: users and items are numbered consecutively from 1, one line each."""
    if int(token) != expected + 1:
        raise ValueError(f'id {token} where {expected + 1} was expected')


def positives(rows):
    """(user, item) pairs, ids minus 1, of the ratings >= 4 (user | item | rating | time)."""
    return [(int(u) - 1, int(i) - 1) for u, i, r, _ in rows if int(r) >= 4]


def split_ml100k(base, test, n_users, n_items, seed=ML100K_SEED):
    """-> train, val, test as [n_users, n_items] coo_matrix (1.0 per positive), by this
    project's rule (that of its prepared ml100k folder). Train = u1.base's positives (the
    GroupLens README: u1.base/u1.test are an 80%/20% split of u.data, the first of five
    disjoint folds). u1.test's positives, grouped per user in file order, users ascending,
    are split with one numpy generator: each group draws perm = rng.permutation(n); a group
    of one goes to validation when rng.random() < 0.5, else to test; a larger one sends
    perm[:n // 2] to validation, the rest to test."""
    groups = {}
    for u, i in test:
        groups.setdefault(u, []).append(i)
    rng, val, tst = np.random.default_rng(seed), [], []
    for u in sorted(groups):
        g = groups[u]
        perm = rng.permutation(len(g))
        if len(g) == 1:
            (val if rng.random() < 0.5 else tst).append((u, g[0]))
            continue
        val += [(u, g[p]) for p in perm[:len(g) // 2]]
        tst += [(u, g[p]) for p in perm[len(g) // 2:]]
    return [pairs_matrix(pairs, (n_users, n_items)) for pairs in (base, val, tst)]


def pairs_matrix(pairs, shape):
    rows, cols = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    return sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)  # float64, as RLMRec


def write_ml100k(folder, splits, users, items):
    """The three split pickles and the side information profiles.py's F1 reads: one JSON
    object per line with "id". A user's movies are their TRAINING positives only (never a
    validation or test item): "Title (year) [genre, ...]" in item order."""
    folder.mkdir()
    for s, m in zip(SPLITS, splits):
        with open(folder / f'{s}_mat.pkl', 'wb') as f:
            pickle.dump(m, f)
    train = splits[0].tocsr()
    train.sort_indices()
    liked = [[f'{items[i]["title"]} [{", ".join(items[i]["genres"])}]'
              for i in train.indices[train.indptr[u]:train.indptr[u + 1]]]   # row u's items
             for u in range(len(users))]
    write_jsonl(folder / 'usr_side.jsonl', [dict(u, liked_movies=m) for u, m in zip(users, liked)])
    write_jsonl(folder / 'itm_side.jsonl', items)


def write_jsonl(path, rows):
    with open(path, 'w', encoding='utf-8') as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({'id': i, **row}, ensure_ascii=False) + '\n')


# ---------------------------------------------------------------------------
# 7. a pickle loader that only builds sparse matrices, arrays and containers
# ---------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """pickle runs code on load; allow only what the official files contain."""
    ALLOWED = {
        ('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', '_reconstruct'),
        ('numpy._core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
        ('numpy._core.multiarray', 'scalar'), ('numpy.core.numeric', '_frombuffer'),
        ('numpy._core.numeric', '_frombuffer'),
        ('builtins', 'list'), ('builtins', 'dict'), ('builtins', 'tuple'), ('builtins', 'set'),
        ('builtins', 'frozenset'), ('builtins', 'int'), ('builtins', 'float'), ('builtins', 'str'),
        ('builtins', 'bytes'), ('builtins', 'bytearray'), ('collections', 'OrderedDict'),
        ('_codecs', 'encode'),
    } | {(f'scipy.sparse{m}', f'{fmt}_{kind}')  # the sparse classes, in every module scipy
         for fmt in ('coo', 'csr', 'csc')         # has pickled them from (.coo before 1.8)
         for kind in ('matrix', 'array') for m in ('', f'.{fmt}', f'._{fmt}')}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refused to load {module}.{name}')


def safe_load(path):
    """Unpickle `path` allowing only scipy.sparse matrices, numpy arrays and containers."""
    try:
        with open(path, 'rb') as f:
            return _SafeUnpickler(f).load()
    except FileNotFoundError:
        raise
    except Exception as e:
        raise DataError(f'{path}: not a valid data pickle ({type(e).__name__}: {e}); '
                        f're-download it or regenerate it') from e


if __name__ == '__main__':
    from eval import ArgumentParser  # one-line errors, as every entry point
    p = ArgumentParser(description='Load a dataset and print a summary.')
    p.add_argument('--dataset', default='synthetic', help='book, yelp, steam, ml100k, '
                   f'{ML100K_NAME} (built from {ML100K_URL}; $PROEX_ML100K_URL: another URL or a '
                   'local path), synthetic or any folder name under the data root '
                   '(default: synthetic)')
    p.add_argument('--data-dir', default=None, help='data root (default: $PROEX_DATA or ./data)')
    p.add_argument('--profiles', action='store_true', help='also load the profile embeddings')
    a = p.parse_args()
    try:
        t = time.time()
        d = load_dataset(a.dataset, a.data_dir, profiles=a.profiles)
        print(d.summary(), f'({time.time() - t:.2f} s)')
    except DataError as e:
        sys.exit(f'error: {e}')
