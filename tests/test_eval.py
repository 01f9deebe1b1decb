"""Tests of eval.py: Recall@K / NDCG@K against a brute-force reference that implements
the RLMRec metric definitions literally (plain Python, one user at a time), hand-computed cases for
each protocol rule, batching, CUDA, and EarlyStopping.
Run: python -m pytest -q tests/test_eval.py
"""
import argparse
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import eval as E


# ---------------------------------------------------------------- the reference

def reference_metrics(scores, train, heldout, ks):
    """The RLMRec metrics, literally: rank all items by score, train items removed;
    Recall@K = hits / |G_u|; NDCG@K = DCG / IDCG with IDCG over min(K, |G_u|);
    users with no held-out item are skipped. scores: numpy [U, I]."""
    sums = {f'{m}@{k}': 0.0 for k in ks for m in ('recall', 'ndcg')}
    n_users = 0
    for u in range(scores.shape[0]):
        G = set(heldout[u].indices.tolist())
        if not G:
            continue                                      # skipped, not counted as zero
        n_users += 1
        seen = set(train[u].indices.tolist())
        candidates = [i for i in range(scores.shape[1]) if i not in seen]
        ranked = sorted(candidates, key=lambda i: -scores[u, i])
        for k in ks:
            top = ranked[:k]
            hits = [1.0 if i in G else 0.0 for i in top]
            sums[f'recall@{k}'] += sum(hits) / len(G)
            dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
            idcg = sum(1.0 / math.log2(j + 2) for j in range(min(k, len(G))))
            sums[f'ndcg@{k}'] += dcg / idcg
    return {name: v / n_users for name, v in sums.items()}


def random_case(seed, n_users=60, n_items=45):
    """Random scores (no ties) and disjoint random train / held-out matrices, with users
    without held-out items, users with more held-out items than K = 20, and users whose
    unmasked items are fewer than K."""
    rng = np.random.default_rng(seed)
    train = np.zeros((n_users, n_items), bool)
    held = np.zeros((n_users, n_items), bool)
    for u in range(n_users):
        perm = rng.permutation(n_items)
        kind = u % 4
        if kind == 0:      # no held-out items
            n_tr, n_ho = rng.integers(1, 10), 0
        elif kind == 1:    # more held-out items than K = 20
            n_tr, n_ho = rng.integers(1, 5), rng.integers(21, 35)
        elif kind == 2:    # many train items: fewer than 20 candidates left
            n_tr, n_ho = rng.integers(28, 35), rng.integers(1, 8)
        else:
            n_tr, n_ho = rng.integers(1, 10), rng.integers(1, 10)
        train[u, perm[:n_tr]] = True
        held[u, perm[n_tr:n_tr + n_ho]] = True
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32)
    return scores, sp.csr_matrix(train, dtype=np.float32), sp.csr_matrix(held, dtype=np.float32)


def score_fn_of(scores, device='cpu'):
    S = torch.from_numpy(scores).to(device)
    return lambda users: S[users]                                     # [B, I]


def close(a, b, tol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=tol, abs=tol), k


# ---------------------------------------------------------------- random cases

@pytest.mark.parametrize('seed', range(5))
def test_evaluate_matches_bruteforce_reference(seed):
    scores, train, held = random_case(seed)
    assert (np.diff(held.indptr) == 0).any() and (np.diff(held.indptr) > 20).any()
    ks = (1, 5, 10, 20)
    close(E.evaluate(score_fn_of(scores), train, held, ks=ks, batch_users=16),
          reference_metrics(scores, train, held, ks))


def test_recall_ndcg_matches_reference_per_user():
    scores, train, held = random_case(7)
    users = np.flatnonzero(np.diff(held.indptr))
    S = torch.from_numpy(scores).clone()
    S[torch.from_numpy(train.toarray() > 0)] = -float('inf')              # mask train
    topk = S[users].topk(20, dim=1).indices
    g = torch.from_numpy(held.toarray()[users] > 0)
    out = E.recall_ndcg(topk, g, g.sum(1).float(), ks=(10, 20))
    for n, u in enumerate(users):  # per-user values, one user at a time through the reference
        one = reference_metrics(scores[u:u + 1], train[u], held[u], (10, 20))
        for name, v in one.items():
            assert out[name][n].item() == pytest.approx(v, rel=1e-6), (u, name)


@pytest.mark.parametrize('seed', range(3))
def test_batching_gives_identical_results(seed):
    scores, train, held = random_case(seed, n_users=50)
    res = [E.evaluate(score_fn_of(scores), train, held, batch_users=b) for b in (1, 7, 1024)]
    close(res[0], res[1], tol=1e-6)
    close(res[0], res[2], tol=1e-6)


def test_score_fn_sees_bounded_batches():
    scores, train, held = random_case(3)
    sizes = []

    def fn(users):
        sizes.append(len(users))
        return torch.from_numpy(scores)[users]
    E.evaluate(fn, train, held, batch_users=7)
    assert max(sizes) <= 7 and sum(sizes) == (np.diff(held.indptr) > 0).sum()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA not available')
def test_evaluate_on_cuda_matches_cpu_and_reference():
    scores, train, held = random_case(11)
    cpu = E.evaluate(score_fn_of(scores), train, held, batch_users=8)
    gpu = E.evaluate(score_fn_of(scores, 'cuda'), train, held, batch_users=8, device='cuda')
    close(cpu, gpu, tol=1e-5)
    close(gpu, reference_metrics(scores, train, held, (10, 20)), tol=1e-5)


# ---------------------------------------------------------------- hand-computed cases

def csr(rows, n_items):
    """csr([[items of user 0], [items of user 1], ...], n_items)"""
    m = np.zeros((len(rows), n_items), np.float32)
    for u, items in enumerate(rows):
        m[u, items] = 1
    return sp.csr_matrix(m)


def test_recall_ndcg_hand_case():
    # G_u = {0, 3}; ranking [3, 1, 0]: hits at ranks 0 and 2
    m = E.recall_ndcg(torch.tensor([[3, 1, 0]]), torch.tensor([[True, False, False, True]]),
                      torch.tensor([2.0]), ks=(1, 3))
    assert m['recall@1'].item() == pytest.approx(1 / 2)
    assert m['ndcg@1'].item() == pytest.approx(1.0)                       # IDCG over min(1, 2)
    assert m['recall@3'].item() == pytest.approx(1.0)
    assert m['ndcg@3'].item() == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_train_item_with_top_score_is_masked():
    # item 0 is a train item with the top score, item 1 the held-out item with the second
    n = 25
    scores = np.linspace(1, 0, n, dtype=np.float32)[None]                 # item 0 best
    train, held = csr([[0]], n), csr([[1]], n)
    r = E.evaluate(score_fn_of(scores), train, held, ks=(1, 20))
    assert r['recall@1'] == pytest.approx(1.0) and r['ndcg@1'] == pytest.approx(1.0)
    # a held-out item that is also a train item is masked too: never a hit
    r = E.evaluate(score_fn_of(scores), csr([[0]], n), csr([[0]], n), ks=(1, 20))
    assert r['recall@20'] == 0.0 and r['ndcg@20'] == 0.0


def test_only_train_items_are_masked():
    # item 0: a validation item with the top score; evaluating on test it is NOT masked and
    # takes the first slot, so the test item (second best) is not in the top 1
    n = 25
    scores = np.linspace(1, 0, n, dtype=np.float32)[None]
    train, test = csr([[5]], n), csr([[1]], n)
    r = E.evaluate(score_fn_of(scores), train, test, ks=(1, 2))
    assert r['recall@1'] == 0.0 and r['recall@2'] == 1.0
    assert r['ndcg@2'] == pytest.approx(1 / math.log2(3))


def test_recall_denominator_is_heldout_size():
    # 30 held-out items, all of the top 20 are hits: Recall@20 = 20/30, NDCG@20 = 1
    n = 60
    scores = np.linspace(1, 0, n, dtype=np.float32)[None]                 # rank = item id
    train, held = csr([[50]], n), csr([list(range(30))], n)
    r = E.evaluate(score_fn_of(scores), train, held, ks=(10, 20))
    assert r['recall@20'] == pytest.approx(20 / 30)
    assert r['recall@10'] == pytest.approx(10 / 30)
    assert r['ndcg@20'] == pytest.approx(1.0) and r['ndcg@10'] == pytest.approx(1.0)


def test_idcg_over_min_k_and_heldout_size():
    # |G_u| = 2, hits at ranks 0 and 2: IDCG = 1 + 1/log2(3) (2 terms, not K = 10)
    n = 30
    scores = np.linspace(1, 0, n, dtype=np.float32)[None]
    r = E.evaluate(score_fn_of(scores), csr([[29]], n), csr([[0, 2]], n), ks=(10, 20))
    want = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert r['ndcg@10'] == pytest.approx(want) and r['ndcg@20'] == pytest.approx(want)
    # |G_u| = 12 > K = 10, hits at ranks 0..9: NDCG@10 = 1 (IDCG over 10 terms)
    r = E.evaluate(score_fn_of(scores), csr([[29]], n), csr([list(range(12))], n), ks=(10,))
    assert r['ndcg@10'] == pytest.approx(1.0) and r['recall@10'] == pytest.approx(10 / 12)


def test_users_without_heldout_items_are_skipped():
    # user 0 ranks its only held-out item first; user 1 has no held-out item: mean = 1, not 1/2
    n = 25
    scores = np.tile(np.linspace(1, 0, n, dtype=np.float32), (2, 1))
    train, held = csr([[5], [6]], n), csr([[0], []], n)
    r = E.evaluate(score_fn_of(scores), train, held, ks=(10, 20))
    assert r == pytest.approx({'recall@10': 1.0, 'ndcg@10': 1.0, 'recall@20': 1.0, 'ndcg@20': 1.0})
    # and a user with held-out items but no hit counts as zero
    held = csr([[0], [24]], n)
    assert E.evaluate(score_fn_of(scores), train, held, ks=(20,))['recall@20'] == pytest.approx(0.5)


# ---------------------------------------------------------------- early stopping

def test_early_stopping_strict_improvement_and_patience_in_validations():
    model = torch.nn.Linear(2, 1)
    stop = E.EarlyStopping(patience=2)
    # evaluated every 3 epochs: best at epoch 3; equal values do not count as improvement
    assert stop.step(3, 0.5, model) is False
    assert stop.step(6, 0.5, model) is False and stop.best_epoch == 3     # 1 validation since best
    assert stop.step(9, 0.4, model) is True                               # 2 validations since best
    assert stop.best == 0.5 and stop.best_epoch == 3


def test_early_stopping_counts_validations_not_epochs():
    """patience 2 with validation every 10 epochs: 20 epochs after the best, not 2."""
    model = torch.nn.Linear(2, 1)
    stop = E.EarlyStopping(patience=2)
    assert [stop.step(e, m, model) for e, m in [(10, .1), (20, .2), (30, .2), (40, .3), (50, .3)]] \
        == [False, False, False, False, False]
    assert stop.best_epoch == 40 and stop.step(60, 0.29, model) is True


def test_early_stopping_keeps_best_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    stop = E.EarlyStopping(patience=5)
    stop.step(1, 0.1, model)
    with torch.no_grad():
        model.weight.add_(1.0)
    best_weight = model.weight.detach().clone()
    stop.step(2, 0.3, model)                                              # the best epoch
    with torch.no_grad():                                                 # later epochs move on
        model.weight.mul_(-2.0)
        model.bias.add_(5.0)
    stop.step(3, 0.2, model)
    stop.step(4, 0.3, model)                                              # equal: not stored
    assert not torch.equal(model.weight, best_weight)
    assert torch.equal(stop.best_state['weight'], best_weight)            # a copy, not a view
    model.load_state_dict(stop.best_state)
    assert torch.equal(model.weight, best_weight)


class _Args:
    patience, epochs, eval_every = 3, 12, 1


def run_loop(modules, train_epoch, make_score_fn, data, args):
    """The epoch loop of the model files, around eval.TrainLog."""
    log = E.TrainLog(args, data, 'cpu')
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(epoch)
        if log.epoch(epoch, loss, 0.01, modules, make_score_fn):
            break
    return log.test(modules, make_score_fn)


def test_trainlog_tests_once_with_best_parameters(monkeypatch):
    """TrainLog: validation peaks at epoch 2, training stops `patience` epochs later, and the
    test split is scored once, with the parameters of epoch 2."""
    scores, train, held = random_case(1, n_users=20, n_items=40)
    data = type('Toy', (), {'train': train, 'val': held, 'test': held,
                            'summary': lambda self: 'toy'})()
    model = torch.nn.Linear(1, 1, bias=False)        # its one weight w mixes good and bad scores
    good = torch.from_numpy(scores)
    quality = {1: 0.3, 2: 1.0}                       # epoch -> w; every later epoch: w = 0

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(quality.get(epoch, 0.0))
        return 1.0

    def make_score_fn():
        w = model.weight.item()
        return lambda users: w * good[users] - (1 - w) * good[users]   # [B, I]
    calls, real_evaluate = [], E.evaluate
    monkeypatch.setattr(E, 'evaluate', lambda *a, **k: calls.append(k['ks']) or real_evaluate(*a, **k))
    res = run_loop(model, train_epoch, make_score_fn, data, _Args())
    assert res['best_epoch'] == 2 and len(res['history']) == 5             # stopped at 2 + 3
    assert calls == [(20,)] * 5 + [(10, 20)]                               # test once, at the end
    assert model.weight.item() == 1.0                                      # best params restored
    close(res['test'], reference_metrics(scores, train, held, (10, 20)))


def test_evaluate_without_heldout_users_is_a_clear_error():
    train = sp.csr_matrix(np.eye(3, dtype=np.float32))
    empty = sp.csr_matrix((3, 3), dtype=np.float32)
    with pytest.raises(Exception, match='no user has a held-out item'):
        E.evaluate(lambda u: torch.zeros(len(u), 3), train, empty)


# ---------------------------------------------------------------- why training stopped, what it records

def toy_fit(tmp_path, losses, epochs=12, patience=3, eval_every=1):
    """The loop on a random case with a fixed model; losses: epoch -> loss (default 1.0)."""
    scores, train, held = random_case(2, n_users=20, n_items=40)
    data = type('Toy', (), {'train': train, 'val': held, 'test': held,
                            'summary': lambda self: 'toy'})()
    args = type('Args', (), {'patience': patience, 'epochs': epochs, 'eval_every': eval_every,
                             'out': str(tmp_path / 'r.json')})()
    model = torch.nn.Linear(1, 1)
    S = torch.from_numpy(scores)
    return run_loop(model, lambda epoch: losses.get(epoch, 1.0), lambda: (lambda u: S[u]),
                    data, args), tmp_path / 'r.json'


def test_trainlog_validates_every_n_epochs_and_counts_patience_in_validations(tmp_path, capsys):
    """--eval-every 3, patience 2, constant scores: validations at epochs 3, 6, 9; the best is
    the first (epoch 3, no later one is strictly better), so the run stops at epoch 9."""
    res, _ = toy_fit(tmp_path, {}, epochs=30, patience=2, eval_every=3)
    assert (res['stop_reason'], res['stop_epoch'], res['best_epoch']) == ('patience', 9, 3)
    validated = [h['epoch'] for h in res['history'] if 'val_recall20' in h]
    assert validated == [3, 6, 9] and len(res['history']) == 9
    assert 'in 2 validations (every 3 epochs) after epoch 3' in capsys.readouterr().out


def test_trainlog_records_why_it_stopped_and_the_run(tmp_path, capsys, monkeypatch):
    state = {'commit': 'c0ffee' * 6 + 'c0ff', 'dirty': True}
    monkeypatch.setattr(E, 'git_state', lambda: state)       # the code state read at the start
    res, path = toy_fit(tmp_path, {}, patience=3)            # constant scores: best epoch 1
    assert (res['stop_reason'], res['stop_epoch'], res['best_epoch']) == ('patience', 4, 1)
    assert 'stopped at epoch 4 (patience)' in capsys.readouterr().out
    res, path = toy_fit(tmp_path, {}, epochs=2, patience=5)
    assert (res['stop_reason'], res['stop_epoch']) == ('max epochs', 2)
    saved = json.loads(path.read_text())
    assert saved['stop_reason'] == 'max epochs' and saved['argv'] == sys.argv
    assert set(saved['versions']) == {'python', 'torch', 'numpy', 'scipy'}
    assert saved['versions']['torch'] == torch.__version__
    assert saved['wall_s'] >= saved['test_eval_s'] > 0
    assert saved['git'] == state


def git(folder, *argv):
    subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'commit.gpgsign=false',
                    *argv], cwd=folder, check=True, capture_output=True, timeout=20)


@pytest.mark.skipif(shutil.which('git') is None, reason='git not installed')
def test_git_state_reads_head_and_tracked_changes_only(tmp_path):
    git(tmp_path, 'init', '-q')
    (tmp_path / 'a.py').write_text('x = 1\n')
    (tmp_path / 'bench' / 'results').mkdir(parents=True)
    (tmp_path / 'bench' / 'results' / 'r.json').write_text('{}')
    git(tmp_path, 'add', 'a.py', 'bench')
    git(tmp_path, 'commit', '-q', '-m', 'one')
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert E.git_state(tmp_path) == {'commit': head, 'dirty': False}
    (tmp_path / 'new.py').write_text('y = 2\n')                # untracked: not 'dirty'
    assert E.git_state(tmp_path) == {'commit': head, 'dirty': False}
    (tmp_path / 'bench' / 'results' / 'r.json').write_text('{"a": 1}')  # a result file: not code
    assert E.git_state(tmp_path) == {'commit': head, 'dirty': False}
    (tmp_path / 'a.py').write_text('x = 2\n')                  # a tracked file modified
    assert E.git_state(tmp_path) == {'commit': head, 'dirty': True}


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_trainlog_non_finite_loss_raises_after_writing_why(tmp_path, bad):
    with pytest.raises(E.Diverged, match='at epoch 3') as e:
        toy_fit(tmp_path, {3: bad})
    assert str(tmp_path / 'r.json') in str(e.value)
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert (saved['stop_reason'], saved['stop_epoch'], saved['best_epoch']) == \
        ('non-finite loss', 3, 1)
    assert saved['test'] is not None and len(saved['history']) == 2   # best epoch's test
    with pytest.raises(E.Diverged):                                   # before any validation
        toy_fit(tmp_path, {1: bad})
    assert json.loads((tmp_path / 'r.json').read_text())['test'] is None


def test_git_state_outside_git_is_none(tmp_path):
    assert E.git_state(tmp_path) is None


def test_fewer_items_than_k_is_a_clear_error():
    train = sp.csr_matrix(np.eye(3, 10, dtype=np.float32))
    held = sp.csr_matrix(np.eye(3, 10, k=1, dtype=np.float32))
    with pytest.raises(Exception, match='10 items, fewer than K = 20'):
        E.evaluate(lambda u: torch.zeros(len(u), 10), train, held)


# ---------------------------------------------------------------- argparse types

@pytest.mark.parametrize('typ,good,bad', [
    (E.int_range(1), {'1': 1, '40': 40}, ['0', '-1', '1.5', 'x']),
    (E.int_range(0, 3), {'0': 0, '3': 3}, ['4', '-1']),
    (E.float_range(0, lo_open=True), {'1e-9': 1e-9, '2': 2.0}, ['0', '-1', 'nan', 'inf', 'x']),
    (E.float_range(0, 1, lo_open=True), {'1': 1.0, '0.5': 0.5}, ['0', '1.01']),
    (E.float_range(0, 1, hi_open=True), {'0': 0.0, '0.99': 0.99}, ['1', '-0.1']),
    (E.device_name, {s: s for s in ('cpu', 'cuda', 'cuda:1', 'auto', 'mps')},
     ['tpu', 'cuda:x', 'gpu']),
])
def test_argparse_types(typ, good, bad):
    for s, value in good.items():
        got = typ(s)
        assert got == value and type(got) is type(value), (s, got)  # the parsed value, typed
    for s in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            typ(s)


def test_out_file(tmp_path):
    assert E.out_file(str(tmp_path / 'r.json')) == str(tmp_path / 'r.json')
    for bad, why in ((tmp_path / 'no' / 'r.json', 'does not exist'), (tmp_path, 'is a folder')):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            E.out_file(str(bad))
