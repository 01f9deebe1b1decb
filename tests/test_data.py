"""Tests of data.py: BPR sampler, adjacency, sparse product, safe unpickler, dataset loading
and validation, `synthetic`, the real datasets when present, and the RLMRec download against
an HTTP server on 127.0.0.1 (a real transfer, nothing leaves the machine).
Run: python -m pytest -q tests/test_data.py
"""
import http.server
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import data as D

pytestmark = pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')
REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get('PROEX_DATA') or REPO.parent / 'shared' / 'datasets')


def quiet(*a, **k):
    pass


def dump(obj, path, protocol=4):
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=protocol)


def random_binary(rng, shape, density):
    return sp.csr_matrix(rng.random(shape) < density, dtype=np.float32)


def write_dataset(folder, n_users=12, n_items=9, K=0, d_s=5, seed=0):
    """An RLMRec-style folder: coo float64 splits (as released) and K views per side."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.random((n_users, n_items))
    mats = [sp.coo_matrix((x < 0.3).astype(np.float64)),
            sp.coo_matrix(((x >= 0.3) & (x < 0.4)).astype(np.float64)),
            sp.coo_matrix(((x >= 0.4) & (x < 0.5)).astype(np.float64))]
    for s, m in zip(D.SPLITS, mats):
        dump(m, folder / f'{s}_mat.pkl')
    for side, n in (('usr', n_users), ('itm', n_items)):
        for f in (D.emb_files(folder, side, K=K) if K else []):
            dump(rng.normal(size=(n, d_s)).astype(np.float32), f)
    return mats


# ---------------------------------------------------------------- BPR sampler

def dense_ish(seed=0, n_users=40, n_items=30, density=0.85):
    """Most items are train items: the uniform draw is rejected most of the time."""
    rng = np.random.default_rng(seed)
    m = (rng.random((n_users, n_items)) < density)
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = False   # >= 1 item left
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True    # >= 1 train item
    return sp.csr_matrix(m, dtype=np.float32)


def one_epoch(train, batch_size, rng):
    batches = list(D.bpr_batches(train, batch_size, rng))
    for b in batches:
        assert all(t.dtype == torch.int64 for t in b) and len(b[0]) <= batch_size
    return [torch.cat(t).numpy() for t in zip(*batches)]


def test_bpr_batches_cover_every_train_interaction_once():
    train = dense_ish()
    u, i, _ = one_epoch(train, 64, np.random.default_rng(0))
    got = np.sort(u.astype(np.int64) * train.shape[1] + i)
    r, c = train.nonzero()
    want = np.sort(r.astype(np.int64) * train.shape[1] + c)
    assert np.array_equal(got, want)                   # every pair, each exactly once


def test_negatives_never_in_train():
    train = dense_ish()
    assert train.nnz / np.prod(train.shape) > 0.8
    dense = train.toarray() > 0
    rng = np.random.default_rng(1)
    for _ in range(5):
        u, _, j = one_epoch(train, 100, rng)
        assert ((0 <= j) & (j < train.shape[1])).all()
        assert not dense[u, j].any()


def test_user_with_every_item_is_an_error_not_a_hang():
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=np.float32))
    with pytest.raises(D.DataError, match=r'users \[1\] have every item'):
        one_epoch(train, 2, np.random.default_rng(0))


def test_negatives_never_in_train_with_unsorted_csr_indices():
    """A CSR matrix whose column indices are not sorted within rows (valid scipy input)."""
    train = dense_ish(seed=3)
    shuffled = train.copy()
    rng = np.random.default_rng(0)
    for u in range(train.shape[0]):                    # shuffle each row's indices in place
        a, b = shuffled.indptr[u], shuffled.indptr[u + 1]
        shuffled.indices[a:b] = rng.permutation(shuffled.indices[a:b])
    shuffled.has_sorted_indices = False
    dense = train.toarray() > 0
    for _ in range(5):
        u, _, j = one_epoch(shuffled, 100, rng)
        assert not dense[u, j].any()


def test_negatives_uniform_over_non_train_items():
    train = sp.csr_matrix(np.r_[np.ones(20), np.zeros(10)][None], dtype=np.float32)  # 1 user
    rng = np.random.default_rng(0)
    j = np.concatenate([one_epoch(train, 32, rng)[2] for _ in range(600)])          # 12000
    counts = np.bincount(j, minlength=30)
    assert counts[:20].sum() == 0
    assert counts[20:].min() > 0.85 * len(j) / 10 and counts[20:].max() < 1.15 * len(j) / 10


def test_negatives_redrawn_every_epoch():
    train = sp.csr_matrix(np.random.default_rng(0).random((50, 400)) < 0.05, dtype=np.float32)
    rng = np.random.default_rng(0)
    epochs = []
    for _ in range(2):
        u, i, j = one_epoch(train, 128, rng)
        order = np.argsort(u.astype(np.int64) * train.shape[1] + i)  # align by (user, pos)
        epochs.append((u[order], i[order], j[order]))
    (u1, i1, j1), (u2, i2, j2) = epochs
    assert np.array_equal(u1, u2) and np.array_equal(i1, i2)
    assert (j1 != j2).mean() > 0.9                     # ~ 1 - 1/380 differ when re-drawn
    assert not np.array_equal(u1, one_epoch(train, 128, rng)[0])  # order reshuffled too


# ---------------------------------------------------------------- adjacency

def dense_norm_adj(R, self_loops):
    U, I = R.shape
    A = np.zeros((U + I, U + I))
    A[:U, U:], A[U:, :U] = R, R.T
    if self_loops:
        A += np.eye(U + I)
    deg = A.sum(1)
    d = np.where(deg > 0, np.maximum(deg, 1e-12) ** -0.5, 0.0)
    return d[:, None] * A * d[None, :]


@pytest.mark.parametrize('self_loops', [False, True])
def test_norm_adj_matches_dense_computation(self_loops):
    rng = np.random.default_rng(0)
    R = (rng.random((7, 6)) < 0.4).astype(np.float32)
    R[2] = 0                                          # a user with no train item
    R[:, 4] = 0                                       # an item nobody interacted with
    A = D.norm_adj(sp.csr_matrix(R), self_loops=self_loops)
    assert A.layout == torch.sparse_csr and A.shape == (13, 13)
    got = A.to_dense().numpy()
    np.testing.assert_allclose(got, dense_norm_adj(R, self_loops), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, got.T, rtol=1e-6, atol=0)               # symmetric
    for z in (2, 7 + 4):                              # zero-degree nodes
        if self_loops:
            assert got[z, z] == pytest.approx(1.0) and np.abs(got[z]).sum() == pytest.approx(1.0)
        else:
            assert not got[z].any() and not got[:, z].any()
    assert np.isfinite(got).all()


def test_norm_adj_hand_case():
    # one user, two items, both interacted: degrees 2, 1, 1 -> A_hat[0, 1] = 1 / sqrt(2)
    A = D.norm_adj(sp.csr_matrix(np.array([[1, 1]], np.float32))).to_dense()
    assert A[0, 1].item() == pytest.approx(2 ** -0.5) and A[1, 0].item() == pytest.approx(2 ** -0.5)
    assert A[0, 0].item() == 0 and A[1, 2].item() == 0
    B = D.norm_adj(sp.csr_matrix(np.array([[1, 1]], np.float32)), self_loops=True).to_dense()
    assert B[0, 0].item() == pytest.approx(1 / 3) and B[0, 1].item() == pytest.approx(1 / 6 ** 0.5)
    assert B[1, 1].item() == pytest.approx(1 / 2)


# ---------------------------------------------------------------- transpose_perm and spmm

def _adj(seed=0, U=9, I=7):
    rng = np.random.default_rng(seed)
    return D.norm_adj(random_binary(rng, (U, I), 0.35))


def _grad_pair(A_sparse, A_dense, X0, A_t=None):
    W = torch.randn(A_dense.shape[0], X0.shape[1], generator=torch.Generator().manual_seed(1))
    X1 = X0.clone().requires_grad_()
    y1 = D.spmm(A_sparse, X1, A_t)
    (y1 * W).sum().backward()
    X2 = X0.clone().requires_grad_()
    y2 = A_dense @ X2
    (y2 * W).sum().backward()
    return y1, y2, X1.grad, X2.grad


def test_spmm_forward_and_gradient_symmetric():
    A = _adj()
    X0 = torch.randn(A.shape[0], 4, generator=torch.Generator().manual_seed(0))
    y1, y2, g1, g2 = _grad_pair(A, A.to_dense(), X0)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(g1, g2)


def test_transpose_perm_and_spmm_gradient_masked():
    """Edge dropout makes the values non-symmetric; A^T = with_values(A, v[transpose_perm])."""
    A = _adj(seed=2)
    g = torch.Generator().manual_seed(0)
    v = A.values() * (torch.rand(A.values().shape, generator=g) < 0.7)   # masked, not symmetric
    v = v * torch.rand(v.shape, generator=g)                             # and unequal values
    Am = D.with_values(A, v)
    dense = Am.to_dense()
    assert not torch.equal(dense, dense.T)
    perm = D.transpose_perm(A)
    assert torch.equal(torch.sort(perm).values, torch.arange(len(perm)))  # a permutation
    Am_t = D.with_values(A, v[perm])
    torch.testing.assert_close(Am_t.to_dense(), dense.T)
    X0 = torch.randn(A.shape[0], 3, generator=g)
    y1, y2, g1, g2 = _grad_pair(Am, dense, X0, A_t=Am_t)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(g1, g2)
    # without A_t the backward would use A itself: wrong here, so the test can tell
    _, _, g3, _ = _grad_pair(Am, dense, X0)
    assert not torch.allclose(g3, g2)


# ---------------------------------------------------------------- safe unpickler

class Evil:
    """Runs a shell command when unpickled by plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_safe_load_refuses_malicious_pickle(tmp_path, protocol):
    marker, path = tmp_path / 'pwned', tmp_path / 'trn_mat.pkl'
    dump(Evil(marker), path, protocol)
    with pytest.raises(D.DataError) as e:
        D.safe_load(path)
    assert not marker.exists()
    assert str(path) in str(e.value) and 'refused' in str(e.value)


@pytest.mark.parametrize('payload', [
    b"cbuiltins\neval\n(S'1+1'\ntR.",                 # builtins.eval
    b"cos\nsystem\n(S'true'\ntR.",                    # os.system
    b"csubprocess\ncall\n((S'true'\nltR.",            # subprocess.call
    b"cnumpy\nload\n(S'x'\ntR.",                      # a numpy function that is not an array
    b"cscipy.sparse\nrandom_array\n((I100000\nI100000\nttR.",   # a huge allocation
    b"cscipy.sparse._construct\nrandom_array\n((I9\nI9\nttR.",
    b"cscipy.sparse._lil\nlil_matrix\n((I2\nI2\nttR.",        # a sparse class no file needs
])
def test_safe_load_refuses_globals_outside_the_allowlist(tmp_path, payload):
    path = tmp_path / 'usr_emb_np.pkl'
    path.write_bytes(payload)
    with pytest.raises(D.DataError, match='usr_emb_np.pkl'):
        D.safe_load(path)


def test_load_dataset_refuses_malicious_split(tmp_path):
    write_dataset(tmp_path / 'toy')
    marker = tmp_path / 'pwned'
    dump(Evil(marker), tmp_path / 'toy' / 'val_mat.pkl')
    with pytest.raises(D.DataError, match='val_mat.pkl'):
        D.load_dataset('toy', tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_safe_load_loads_sparse_matrices_and_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    objs = {'coo': sp.coo_matrix(rng.random((5, 4)) < 0.5, dtype=np.float64),
            'csr': sp.csr_matrix(rng.random((5, 4)) < 0.5, dtype=np.float32),
            'csr_array': sp.csr_array(rng.random((3, 4)) < 0.5, dtype=np.float64),
            'emb': rng.normal(size=(6, 3)).astype(np.float32),
            'big': rng.normal(size=(300, 40)),
            'container': {'a': [1, 2.5, 'x'], 'b': (np.arange(3), None)}}
    for name, obj in objs.items():
        dump(obj, tmp_path / f'{name}.pkl', protocol)
        got = D.safe_load(tmp_path / f'{name}.pkl')
        assert type(got) is type(obj)
        if sp.issparse(obj):
            assert got.shape == obj.shape and (got != obj).nnz == 0
        elif isinstance(obj, np.ndarray):
            assert got.dtype == obj.dtype and np.array_equal(got, obj)
        else:
            assert got['a'] == obj['a'] and np.array_equal(got['b'][0], obj['b'][0])


def test_safe_load_names_file_of_truncated_pickle(tmp_path):
    path = tmp_path / 'tst_mat.pkl'
    path.write_bytes(pickle.dumps(sp.coo_matrix(np.eye(3)))[:40])
    with pytest.raises(D.DataError, match='tst_mat.pkl'):
        D.safe_load(path)


# ---------------------------------------------------------------- load_dataset

def test_load_dataset_reads_and_binarises(tmp_path):
    mats = write_dataset(tmp_path / 'toy', K=4)
    d = D.load_dataset('toy', tmp_path, profiles=True)
    for got, want in zip((d.train, d.val, d.test), mats):
        assert sp.isspmatrix_csr(got) and got.dtype == np.float32
        assert (got != (want.tocsr() != 0)).nnz == 0
    assert len(d.usr_prf) == 4 and len(d.itm_prf) == 4
    assert d.usr_prf[3].shape == (12, 5) and d.itm_prf[0].shape == (9, 5)
    two = D.load_dataset('toy', tmp_path, profiles=True, views=[0, 2])
    assert np.array_equal(two.usr_prf[1], d.usr_prf[2]) and len(two.itm_prf) == 2


def test_data_root_precedence(monkeypatch):
    monkeypatch.setenv('PROEX_DATA', '/from/env')
    assert D.data_root('/from/flag') == Path('/from/flag')
    assert D.data_root() == Path('/from/env')
    monkeypatch.delenv('PROEX_DATA')
    assert D.data_root() == Path('data')


@pytest.mark.parametrize('split', ['val', 'tst'])
def test_split_shape_differs_from_train(tmp_path, split):
    write_dataset(tmp_path / 'toy')
    dump(sp.coo_matrix(np.ones((12, 10))), tmp_path / 'toy' / f'{split}_mat.pkl')
    with pytest.raises(D.DataError, match=f'{split}_mat.pkl') as e:
        D.load_dataset('toy', tmp_path)
    assert '(12, 10)' in str(e.value) and '(12, 9)' in str(e.value)


@pytest.mark.parametrize('side,rows', [('usr', 11), ('itm', 10)])
def test_profile_rows_differ_from_entity_count(tmp_path, side, rows):
    write_dataset(tmp_path / 'toy', K=4)
    bad = tmp_path / 'toy' / f'{side}_emb_np_2.pkl'
    dump(np.zeros((rows, 5), np.float32), bad)
    with pytest.raises(D.DataError, match=f'{side}_emb_np_2.pkl') as e:
        D.load_dataset('toy', tmp_path, profiles=True)
    assert f'{rows} rows' in str(e.value)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_embeddings(tmp_path, value):
    write_dataset(tmp_path / 'toy', K=4)
    a = np.ones((9, 5), np.float32)
    a[3, 1] = value
    dump(a, tmp_path / 'toy' / 'itm_emb_np_1.pkl')
    with pytest.raises(D.DataError, match='itm_emb_np_1.pkl') as e:
        D.load_dataset('toy', tmp_path, profiles=True)
    assert 'NaN or infinite' in str(e.value)


def test_non_finite_interactions(tmp_path):
    write_dataset(tmp_path / 'toy')
    m = sp.coo_matrix(np.eye(12, 9))
    m.data[0] = np.nan
    dump(m, tmp_path / 'toy' / 'trn_mat.pkl')
    with pytest.raises(D.DataError, match='trn_mat.pkl'):
        D.load_dataset('toy', tmp_path)


@pytest.mark.parametrize('obj', [np.ones((12, 9)), [[1, 0], [0, 1]], {'trn': 1}])
def test_interaction_file_not_a_sparse_matrix(tmp_path, obj):
    write_dataset(tmp_path / 'toy')
    dump(obj, tmp_path / 'toy' / 'trn_mat.pkl')
    with pytest.raises(D.DataError, match='trn_mat.pkl') as e:
        D.load_dataset('toy', tmp_path)
    assert '2-D scipy.sparse' in str(e.value)


def test_missing_profile_files_are_listed(tmp_path):
    write_dataset(tmp_path / 'toy')
    folder = tmp_path / 'toy'
    with pytest.raises(D.DataError) as e:
        D.load_dataset('toy', tmp_path, profiles=True, views=[0, 1, 2, 3])
    msg = str(e.value)
    for f in D.emb_files(folder, 'usr', K=4) + D.emb_files(folder, 'itm', K=4):
        assert str(f) in msg  # both sides named in one error
    assert 'profiles.py' in msg and 'ProEx release' in msg
    # user views present, item views missing: the item files are listed
    for f in D.emb_files(folder, 'usr', K=4):
        dump(np.zeros((12, 5), np.float32), f)
    with pytest.raises(D.DataError) as e:
        D.load_dataset('toy', tmp_path, profiles=True, views=[0, 1, 2, 3])
    assert all(str(f) in str(e.value) for f in D.emb_files(folder, 'itm', K=4))
    assert 'profiles.py' in str(e.value)
    # without profiles=True nothing is needed
    assert D.load_dataset('toy', tmp_path).usr_prf == []


def test_missing_dataset_names_path_and_fix(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load_dataset('ml100k', tmp_path)
    assert str(tmp_path / 'ml100k' / 'trn_mat.pkl') in str(e.value)
    assert '--data-dir' in str(e.value) and 'synthetic' in str(e.value)
    with pytest.raises(D.DataError) as e:               # neither a known name nor a folder
        D.load_dataset('nothere', tmp_path)
    assert str(tmp_path / 'nothere') in str(e.value) and 'known names are book' in str(e.value)


# ---------------------------------------------------------------- synthetic

def test_synthetic_fast_deterministic_and_shaped():
    t = time.perf_counter()
    a = D.make_synthetic(2023)
    seconds = time.perf_counter() - t
    print(f'synthetic generated in {seconds:.2f} s')
    assert seconds < 10                                # spec: < 2 s; loose on a busy machine
    b = D.load_dataset('synthetic', seed=2023)
    c = D.make_synthetic(7)
    U, I = a.n_users, a.n_items
    assert 1000 <= U <= 20000 and 1000 <= I <= 20000
    for m in (a.train, a.val, a.test):
        assert m.shape == (U, I) and m.dtype == np.float32 and m.has_sorted_indices
    assert (a.train.multiply(a.val)).nnz == 0 and (a.train.multiply(a.test)).nnz == 0
    assert (a.val.multiply(a.test)).nnz == 0
    assert (np.diff(a.train.indptr) > 0).all()        # every user has a train item
    assert len(a.usr_prf) == 4 and len(a.itm_prf) == 4
    d_s = a.usr_prf[0].shape[1]
    for k in range(4):
        assert a.usr_prf[k].shape == (U, d_s) and a.itm_prf[k].shape == (I, d_s)
        assert a.usr_prf[k].dtype == np.float32 and np.isfinite(a.usr_prf[k]).all()
        assert np.array_equal(a.usr_prf[k], b.usr_prf[k])
        assert np.array_equal(a.itm_prf[k], b.itm_prf[k])
        assert not np.array_equal(a.usr_prf[k], c.usr_prf[k])
    for m1, m2 in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert (m1 != m2).nnz == 0
    assert (a.train != c.train).nnz > 0
    # three views carry the planted signal with increasing noise, the last one misleads
    P = a.usr_prf
    corr = [np.corrcoef(P[0].ravel(), P[k].ravel())[0, 1] for k in range(1, 4)]
    assert corr[0] > corr[1] > corr[2] - 0.05 and corr[2] < 0.2


# ---------------------------------------------------------------- the real datasets

@pytest.mark.skipif(not (REAL_DATA / 'amazon' / 'trn_mat.pkl').exists(),
                    reason=f'{REAL_DATA}/amazon not present')
def test_real_book():
    d = D.load_dataset('book', REAL_DATA, download_ok=False)
    assert (d.n_users, d.n_items) == (11000, 9332)
    assert (d.train.nnz, d.val.nnz, d.test.nnz) == (120464, 40290, 40106)


@pytest.mark.skipif(not (REAL_DATA / 'ml100k' / 'usr_emb_np_3.pkl').exists(),
                    reason=f'{REAL_DATA}/ml100k not present')
def test_real_ml100k_profiles():
    d = D.load_dataset('ml100k', REAL_DATA, profiles=True)
    assert (d.n_users, d.n_items) == (943, 1682) and d.train.nnz == 44140
    assert len(d.usr_prf) == 4 and len(d.itm_prf) == 4
    assert all(a.shape == (943, 384) for a in d.usr_prf)
    assert all(a.shape == (1682, 384) for a in d.itm_prf)


# ---------------------------------------------------------------- download (loopback HTTP)

def rlmrec_zip(prefix='', seed=0, padding=3 << 20):
    """A zip in the RLMRec layout: <prefix>amazon/{trn,val,tst}_mat.pkl and yelp/ likewise,
    plus an incompressible member so the transfer spans several chunks."""
    rng = np.random.default_rng(seed)
    mats = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        for ds, shape in (('amazon', (8, 6)), ('yelp', (5, 7))):
            for s in D.SPLITS:
                m = sp.coo_matrix(rng.random(shape) < 0.3, dtype=np.float64)
                mats[ds, s] = m
                z.writestr(f'{prefix}{ds}/{s}_mat.pkl', pickle.dumps(m))
        z.writestr(f'{prefix}amazon/padding.bin', rng.bytes(padding))
    return buf.getvalue(), mats


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mode, body = self.server.mode, self.server.body
        self.server.requests += 1
        if mode == '500':
            self.send_error(500, 'Internal Server Error')
            return
        self.send_response(200)
        self.send_header('Content-Type', 'application/zip')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if mode == 'slow':                             # send half, then stall until released
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.server.release.wait(30)
            return
        if mode == 'cut':                              # promise all, send half, hang up
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    srv.mode, srv.body, srv.requests, srv.release = 'ok', b'', 0, threading.Event()
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}/rlmrec_data/data.zip'
    th = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    th.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    th.join(5)


def leftovers(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob('*'))


@pytest.mark.parametrize('prefix', ['', 'data/'])
def test_fetch_rlmrec_success(tmp_path, server, prefix):
    server.body, mats = rlmrec_zip(prefix)
    root = tmp_path / 'data'
    D.fetch_rlmrec(root, url=server.url, log=quiet)
    assert (root / 'amazon' / 'trn_mat.pkl').exists() and (root / 'yelp' / 'tst_mat.pkl').exists()
    assert not (root / 'rlmrec_data.zip').exists()
    assert not [p for p in leftovers(root) if p.endswith('.part') or p.endswith('.zip')]
    assert set(p.split('/')[0] for p in leftovers(root)) == {'amazon', 'yelp'}
    d = D.load_dataset('book', root, download_ok=False)
    for got, s in zip((d.train, d.val, d.test), D.SPLITS):
        assert (got != (mats['amazon', s].tocsr() != 0)).nnz == 0


def test_download_writes_whole_file(tmp_path, server):
    server.body = np.random.default_rng(0).bytes((2 << 20) + 123)
    lines = []
    dest = D.download(server.url, tmp_path / 'x' / 'f.zip',
                      log=lambda *a, **k: lines.append(' '.join(map(str, a))))
    assert dest.read_bytes() == server.body
    assert leftovers(tmp_path) == ['x', 'x/f.zip']
    assert any('MiB/s' in l for l in lines)           # a progress line with bytes and rate


def test_download_cut_off_leaves_nothing(tmp_path, server):
    server.body, server.mode = np.random.default_rng(0).bytes(3 << 20), 'cut'
    with pytest.raises(Exception):
        D.download(server.url, tmp_path / 'f.zip', log=quiet)
    assert leftovers(tmp_path) == []                   # neither f.zip nor a .part file


def assert_says_what_and_where(err, url, root):
    msg = str(err)
    assert url in msg and str(root / 'amazon' / 'trn_mat.pkl') in msg


def test_fetch_rlmrec_cut_off(tmp_path, server):
    server.body, _ = rlmrec_zip()
    server.mode = 'cut'
    root = tmp_path / 'data'
    with pytest.raises(D.DataError) as e:
        D.fetch_rlmrec(root, url=server.url, log=quiet)
    assert_says_what_and_where(e.value, server.url, root)
    assert leftovers(root) == []                       # no amazon/, no partial file
    with pytest.raises(D.DataError, match='not found'):
        D.load_dataset('book', root, download_ok=False)


def test_fetch_rlmrec_bad_archive(tmp_path, server):
    server.body = b'<html>this is not a zip archive</html>' * 1000
    root = tmp_path / 'data'
    with pytest.raises(D.DataError) as e:
        D.fetch_rlmrec(root, url=server.url, log=quiet)
    assert 'not a valid zip' in str(e.value) and server.url in str(e.value)
    assert leftovers(root) == []


def test_fetch_rlmrec_server_error(tmp_path, server):
    server.mode = '500'
    root = tmp_path / 'data'
    with pytest.raises(D.DataError) as e:
        D.fetch_rlmrec(root, url=server.url, log=quiet)
    assert '500' in str(e.value)
    assert_says_what_and_where(e.value, server.url, root)
    assert leftovers(root) == []


def test_fetch_rlmrec_refuses_unsafe_member_names(tmp_path, server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        z.writestr('../evil/trn_mat.pkl', b'x')
    server.body = buf.getvalue()
    root = tmp_path / 'data'
    with pytest.raises(D.DataError, match='unsafe'):
        D.fetch_rlmrec(root, url=server.url, log=quiet)
    assert not (tmp_path / 'evil').exists() and leftovers(root) == []


def test_load_dataset_downloads_missing_book(tmp_path, server, monkeypatch):
    server.body, mats = rlmrec_zip()
    monkeypatch.setattr(D, 'RLMREC_URL', server.url)
    root = tmp_path / 'data'
    d = D.load_dataset('book', root)
    assert server.requests == 1
    assert (d.n_users, d.n_items) == (8, 6) and d.train.nnz == mats['amazon', 'trn'].nnz
    assert not (root / 'rlmrec_data.zip').exists()
    D.load_dataset('yelp', root)                       # already there: no second download
    assert server.requests == 1


def test_load_dataset_book_cut_off(tmp_path, server, monkeypatch):
    server.body, _ = rlmrec_zip()
    server.mode = 'cut'
    monkeypatch.setattr(D, 'RLMREC_URL', server.url)
    root = tmp_path / 'data'
    with pytest.raises(D.DataError) as e:
        D.load_dataset('book', root)
    assert server.requests == 1
    assert_says_what_and_where(e.value, server.url, root)
    assert not (root / 'amazon').exists() and not [p for p in leftovers(root) if 'part' in p]


def test_synthetic_views_selected():
    """--profiles on synthetic keeps only the asked views (e.g. the misleading view 3)."""
    full = D.load_dataset('synthetic', seed=5)
    only3 = D.load_dataset('synthetic', views=[3], seed=5)
    assert len(only3.usr_prf) == 1 and len(only3.itm_prf) == 1
    np.testing.assert_array_equal(only3.usr_prf[0], full.usr_prf[3])
    with pytest.raises(D.DataError):
        D.load_dataset('synthetic', views=[4], seed=5)


# ---------------------------------------------------------------- partial data, overflow, views

def test_float64_embedding_beyond_float32_range(tmp_path):
    write_dataset(tmp_path / 'toy', K=2)
    a = np.ones((12, 5))
    a[2, 3] = 1e300                                     # finite in float64, inf in float32
    dump(a, tmp_path / 'toy' / 'usr_emb_np_1.pkl')
    with pytest.raises(D.DataError, match='usr_emb_np_1.pkl') as e:
        D.load_dataset('toy', tmp_path, profiles=True)
    assert 'float32' in str(e.value)


@pytest.mark.parametrize('side,other', [('itm', 'usr'), ('usr', 'itm')])
def test_views_differ_between_sides(tmp_path, side, other):
    write_dataset(tmp_path / 'toy', K=4)
    (tmp_path / 'toy' / f'{side}_emb_np_3.pkl').unlink()
    with pytest.raises(D.DataError) as e:
        D.load_dataset('toy', tmp_path, profiles=True)
    msg = str(e.value)
    assert f'{side}_emb_np_3.pkl' in msg and '--profiles 0,1,2' in msg
    three = D.load_dataset('toy', tmp_path, profiles=True, views=[0, 1, 2])   # the fix works
    assert len(three.usr_prf) == len(three.itm_prf) == 3


def test_empty_train_matrix(tmp_path):
    write_dataset(tmp_path / 'toy')
    dump(sp.coo_matrix((12, 9)), tmp_path / 'toy' / 'trn_mat.pkl')
    with pytest.raises(D.DataError, match='trn_mat.pkl') as e:
        D.load_dataset('toy', tmp_path)
    assert 'no interactions' in str(e.value)


@pytest.mark.parametrize('name,folder,keep', [
    ('toy', 'toy', ['trn']),                  # the reported case: val and tst missing
    ('toy', 'toy', ['trn', 'tst']),
    ('book', 'amazon', ['trn']),              # downloadable: no download, an error instead
    ('book', 'amazon', ['val', 'tst']),
])
def test_folder_with_part_of_the_splits(tmp_path, server, monkeypatch, name, folder, keep):
    monkeypatch.setattr(D, 'RLMREC_URL', server.url)
    server.body, _ = rlmrec_zip()
    write_dataset(tmp_path / folder)
    for s in D.SPLITS:
        if s not in keep:
            (tmp_path / folder / f'{s}_mat.pkl').unlink()
    for _ in range(2):                                  # and again on the next run
        with pytest.raises(D.DataError) as e:
            D.load_dataset(name, tmp_path)
        msg = str(e.value)
        for s in D.SPLITS:
            assert (str(tmp_path / folder / f'{s}_mat.pkl') in msg) == (s not in keep)
        assert 'remove' in msg
    assert server.requests == 0


def test_partial_archive_leaves_nothing_loadable(tmp_path, server, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        z.writestr('amazon/trn_mat.pkl', pickle.dumps(sp.coo_matrix(np.eye(4))))  # no val, tst
    server.body = buf.getvalue()
    monkeypatch.setattr(D, 'RLMREC_URL', server.url)
    root = tmp_path / 'data'
    with pytest.raises(D.DataError) as e:
        D.load_dataset('book', root)
    assert 'no complete amazon/' in str(e.value) and server.url in str(e.value)
    assert not (root / 'amazon' / 'trn_mat.pkl').exists() and leftovers(root) == []


def test_existing_folder_without_splits_is_filled_once(tmp_path, server, monkeypatch):
    """<root>/amazon/ holding only profile embeddings: one download fills in the splits and
    keeps the embeddings; the next load does not download again."""
    server.body, mats = rlmrec_zip()
    monkeypatch.setattr(D, 'RLMREC_URL', server.url)
    root = tmp_path / 'data'
    (root / 'amazon').mkdir(parents=True)
    emb = np.ones((8, 3), np.float32)
    dump(emb, root / 'amazon' / 'usr_emb_np.pkl')
    d = D.load_dataset('book', root)
    assert d.train.nnz == mats['amazon', 'trn'].nnz and server.requests == 1
    assert np.array_equal(D.safe_load(root / 'amazon' / 'usr_emb_np.pkl'), emb)
    D.load_dataset('book', root)
    assert server.requests == 1


def test_bad_archive_message_says_it_was_removed(tmp_path, server):
    server.body = b'not a zip' * 100
    with pytest.raises(D.DataError) as e:
        D.fetch_rlmrec(tmp_path, url=server.url, log=quiet)
    assert 'was removed' in str(e.value) and 'delete it' not in str(e.value)
    assert not (tmp_path / 'rlmrec_data.zip').exists()


def test_progress_line_ended_before_the_error(tmp_path, server):
    server.body, server.mode = np.random.default_rng(0).bytes(3 << 20), 'cut'
    screen = io.StringIO()
    with pytest.raises(D.DataError) as e:
        D.fetch_rlmrec(tmp_path, url=server.url,
                       log=lambda *a, end='\n', flush=False: screen.write(' '.join(a) + end))
    assert 'MiB/s' in screen.getvalue() and screen.getvalue().endswith('\n')
    assert 'could not download' in str(e.value)        # printed after that newline


def test_sigterm_during_download_leaves_no_part_file(tmp_path, server):
    server.body, server.mode = np.random.default_rng(0).bytes(4 << 20), 'slow'
    dest = tmp_path / 'f.zip'
    code = f'import data; data.download({server.url!r}, {str(dest)!r}, log=lambda *a, **k: None)'
    env = dict(os.environ, NO_PROXY='127.0.0.1,localhost', PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not list(tmp_path.glob('*.part')) or server.requests == 0:
        assert time.time() - t0 < 60 and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(0.3)                                     # inside the transfer
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0 and 'Traceback' not in out
    assert [l for l in out.splitlines() if 'error:' in l] == [out.strip()]
    assert leftovers(tmp_path) == []
