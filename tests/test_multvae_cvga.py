"""Tests of multvae.py and cvga.py: shapes, CVGA's encoder, decoder and dropout by hand,
dropout only in train mode, the normalised matrix of CVGA, short runs on `synthetic` (base
and --proex) that improve validation Recall@20, the CLI and CVGA's KL weight (--kl-weight,
--kl-over-batch). The shared losses (multinomial NLL, KL, sample) are tested in
test_proex_core.py.
Run: python -m pytest -q tests/test_multvae_cvga.py
"""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cvga
import data as D
import multvae
import proex_core as P


# ---------------------------------------------------------------- shapes

def test_multvae_shapes():
    m = multvae.MultVAE(n_items=50, hidden=16, d=8, dropout=0.3)
    assert [l.weight.shape for l in m.q if isinstance(l, torch.nn.Linear)] == [(16, 50), (16, 16)]
    mu, logvar = m.encode(torch.zeros(4, 50))
    assert mu.shape == logvar.shape == (4, 8)
    assert m.decode(mu).shape == (4, 50)


def test_multvae_default_sizes_are_paper_sizes():
    args = multvae.parse_args([])
    assert (args.hidden, args.dim, args.batch, args.lr) == (600, 200, 1024, 1e-3)
    assert multvae.parse_args(['--dataset', 'book']).dropout == 0.3
    assert multvae.parse_args(['--dataset', 'steam']).dropout == 0.2


def test_cvga_shapes():
    m = cvga.CVGA(n_items=50, d=8, dropout=0.3)
    assert m.q.weight.shape == (16, 50) and m.p.weight.shape == (50, 8)   # one layer each
    mu, logvar = m.encode(torch.zeros(4, 50))
    assert mu.shape == logvar.shape == (4, 8)
    assert m.decode(mu).shape == (4, 50)
    assert cvga.parse_args([]).dim == 32


# ---------------------------------------------------------------- CVGA's encoder and decoder

def test_cvga_encoder_is_one_linear_layer_split_into_mu_and_logvar():
    """[mu, logvar] = R_hat_u W_q + b_q (first d columns mu, last d logvar); logits = z W_p + b_p."""
    torch.manual_seed(3)
    m = cvga.CVGA(n_items=7, d=3, dropout=0.4).eval()
    r_hat = torch.rand(5, 7)
    h = r_hat @ m.q.weight.T + m.q.bias                          # [5, 6]
    mu, logvar = m.encode(r_hat)
    assert mu.shape == logvar.shape == (5, 3)
    assert torch.allclose(mu, h[:, :3], atol=1e-6) and torch.allclose(logvar, h[:, 3:], atol=1e-6)
    z = torch.randn(5, 3)
    assert torch.allclose(m.decode(z), z @ m.p.weight.T + m.p.bias, atol=1e-6)


def test_cvga_dropout_is_on_the_encoder_output():
    """CVGA drops entries of [mu, logvar] (not of the input row, as Mult-VAE does): in train
    mode a dropped entry is exactly 0 and a kept one is h / (1 - p)."""
    torch.manual_seed(4)
    m = cvga.CVGA(n_items=40, d=50, dropout=0.25)
    r_hat = torch.rand(64, 40)
    m.eval()
    h = torch.cat(m.encode(r_hat), dim=1)                        # no dropout, [64, 100]
    m.train()
    out = torch.cat(m.encode(r_hat), dim=1)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.02      # 6400 entries: std 0.005
    assert torch.allclose(out[~dropped], h[~dropped] / 0.75, atol=1e-5)


# ---------------------------------------------------------------- dropout and R_hat

@pytest.mark.parametrize('make', [lambda: multvae.MultVAE(30, 16, 4, dropout=0.5),
                                  lambda: cvga.CVGA(30, 4, dropout=0.5)])
def test_dropout_only_in_train_mode(make):
    torch.manual_seed(0)
    m, x = make(), torch.rand(8, 30)
    m.eval()
    a, b = m.encode(x)[0], m.encode(x)[0]
    assert torch.equal(a, b)                                    # deterministic at inference
    m.drop.p = 0.0
    assert torch.allclose(a, m.encode(x)[0])                    # eval == no dropout at all
    m.drop.p = 0.5
    m.train()
    assert not torch.allclose(m.encode(x)[0], m.encode(x)[0])  # a new mask per call


def test_normalized_R_by_hand():
    R = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32))
    # user degrees (2, 1, 0), item degrees (1, 2, 0)
    expected = np.array([[1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 2), 0],
                         [0, 1 / math.sqrt(1 * 2), 0], [0, 0, 0]])
    R_hat = cvga.normalized_R(R)
    assert sp.isspmatrix_csr(R_hat) and R_hat.dtype == np.float32
    np.testing.assert_allclose(R_hat.toarray(), expected, rtol=1e-6)


def test_normalized_R_is_the_user_item_block_of_lightgcn_A_hat():
    """R_hat = D_u^-1/2 R D_i^-1/2 is the upper-right block of D^-1/2 A D^-1/2 for the
    bipartite A = [[0, R], [R^T, 0]] (a user's degree there is its row sum, an item's its
    column sum), computed independently by data.norm_adj; zero degrees give zeros, not NaN."""
    rng = np.random.default_rng(5)
    dense = (rng.random((9, 12)) < 0.3).astype(np.float32)
    dense[4] = 0                                                 # a user without items
    dense[:, 7] = 0                                              # an item nobody has
    R_hat = cvga.normalized_R(sp.csr_matrix(dense)).toarray()
    A_hat = D.norm_adj(sp.csr_matrix(dense)).to_dense().numpy()
    np.testing.assert_allclose(R_hat, A_hat[:9, 9:], rtol=1e-6, atol=1e-7)
    assert np.isfinite(R_hat).all() and not R_hat[4].any() and not R_hat[:, 7].any()


# ---------------------------------------------------------------- short runs on synthetic

# small Mult-VAE (hidden 64, d 32) to keep the suite fast; CVGA at its defaults
@pytest.mark.parametrize('mod,flags', [
    (multvae, ['--epochs', '5', '--hidden', '64', '--dim', '32', '--eval-every', '1']),
    (cvga, ['--epochs', '10', '--eval-every', '1'])])
@pytest.mark.parametrize('proex', [False, True])
def test_short_run_improves_validation_recall(mod, flags, proex):
    argv = flags + ['--threads', '1'] + (['--proex'] if proex else [])
    result = mod.main(mod.parse_args(argv))
    first = result['history'][0]['val_recall20']
    assert result['best_val_recall20'] > first
    test = result['test']
    # synthetic: 2000 items, 4 test items per user; a random ranking has Recall@20 about 0.01
    assert test['recall@20'] > 0.02 and test['recall@10'] < test['recall@20'], test
    assert test['recall@20'] > 0.7 * result['best_val_recall20'], test  # val, test: same size


# ---------------------------------------------------------------- CLI

@pytest.mark.parametrize('mod', [multvae, cvga])
def test_flag_prefix_is_not_taken_for_the_flag(mod, capsys):
    """allow_abbrev is off: --epoch is refused, not read as --epochs."""
    with pytest.raises(SystemExit, match='unrecognized arguments: --epoch'):
        mod.parse_args(['--epoch', '1'])


@pytest.mark.parametrize('mod', [multvae, cvga])
def test_proex_flags_parse(mod):
    args = mod.parse_args(['--proex', '--beta', '1', '--no-mixing'])
    assert args.envs == 1                            # w/o mixing: one environment
    assert args.lambda1 == 1.0                       # generative default: Eq. 11 holds the KL
    args = mod.parse_args(['--proex', '--no-align'])  # w/o alignment keeps the KL to the prior
    assert (args.lambda1, args.beta) == (1.0, 1.0)


@pytest.mark.parametrize('flags,batch,per_batch', [
    ([], 1000, 1.0), (['--kl-weight', '0.5'], 1000, 0.5),
    (['--kl-over-batch'], 1000, 1 / 1000),
    (['--kl-over-batch', '--kl-weight', '0.5'], 1000, 0.5 / 1000),
    (['--kl-over-batch'], 2000, (1 / 2000 + 1 / 1000) / 2)])   # batches of 2000 and 1000 users
def test_cvga_kl_weight_in_the_training_loss(monkeypatch, flags, batch, per_batch):
    """The base CVGA loss is NLL + w * KL with w = --kl-weight, divided by the size B of each
    batch (the last one may be smaller) with --kl-over-batch (the official ID-GRec code).
    With NLL = 0 and KL = 1 the training loss of each batch is its w; the epoch's loss is
    their mean."""
    monkeypatch.setattr(P, 'multinomial_nll', lambda logits, x: 0.0 * logits.sum(-1))
    monkeypatch.setattr(P, 'kl_to_prior', lambda mu, logvar: 0.0 * mu.sum() + 1.0)
    args = cvga.parse_args(['--epochs', '1', '--batch', str(batch), '--threads', '1'] + flags)
    loss = cvga.main(args)['history'][0]['loss']            # synthetic: 3000 users
    assert loss == pytest.approx(per_batch, rel=1e-6)


@pytest.mark.parametrize('mod', [multvae, cvga])
def test_kl_weight_is_the_base_knob_only(mod):
    assert mod.parse_args(['--kl-weight', '0.2']).kl_weight == 0.2
    with pytest.raises(SystemExit):  # with --proex the prior weight is lambda1 * beta
        mod.parse_args(['--proex', '--kl-weight', '0.2'])


def test_kl_over_batch_is_the_default_on_the_rlmrec_datasets_only():
    """book/yelp/steam: the official code's KL weight 1/B (the paper's rows); elsewhere the ELBO."""
    assert [cvga.parse_args(['--dataset', d]).kl_over_batch for d in ('book', 'yelp', 'steam')] \
        == [True, True, True]
    assert not cvga.parse_args(['--dataset', 'ml100k']).kl_over_batch
    assert not cvga.parse_args(['--dataset', 'synthetic']).kl_over_batch
    assert not cvga.parse_args(['--dataset', 'book', '--no-kl-over-batch']).kl_over_batch
    assert not cvga.parse_args(['--dataset', 'book', '--proex']).kl_over_batch
    with pytest.raises(SystemExit, match='kl-over-batch'):
        cvga.parse_args(['--proex', '--no-kl-over-batch'])


def test_kl_over_batch_is_refused_with_proex():
    assert cvga.parse_args(['--kl-over-batch']).kl_over_batch
    with pytest.raises(SystemExit, match='kl-over-batch'):  # Eq. 11 replaces the base's KL
        cvga.parse_args(['--proex', '--kl-over-batch'])
