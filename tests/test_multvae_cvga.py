"""Tests of multvae.py and cvga.py: shapes, the losses against hand computations, dropout
only in train mode, the normalised matrix of CVGA, short runs on `synthetic` (base and
--proex) that improve validation Recall@20, and the CLI.
Run: python -m pytest -q tests/test_multvae_cvga.py
"""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cvga
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


# ---------------------------------------------------------------- the VAE losses (proex_core) by hand

def test_multinomial_nll_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # row 1: softmax = (1/4, 3/4) -> -(log 1/4 + log 3/4); row 2: softmax = (2/3, 1/3) -> -log 1/3
    expected = [-(math.log(0.25) + math.log(0.75)), -math.log(1 / 3)]
    assert P.multinomial_nll(logits, x).tolist() == pytest.approx(expected, rel=1e-6)


def test_kl_to_prior_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # row 1: 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)] = 0.5 * (2 - log 2); row 2: 0
    expected = 0.5 * (2 - math.log(2.0)) / 2
    assert P.kl_to_prior(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert P.kl_to_prior(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


def test_reparameterize_has_the_posterior_moments():
    torch.manual_seed(0)
    mu, logvar = torch.full((20000, 2), 1.5), torch.full((20000, 2), math.log(0.25))
    z = P.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.02)
    assert z.var().item() == pytest.approx(0.25, rel=0.05)


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
    np.testing.assert_allclose(cvga.normalized_R(R).toarray(), expected, rtol=1e-6)


# ---------------------------------------------------------------- short runs on synthetic

# small Mult-VAE (hidden 64, d 32) to keep the suite fast; CVGA at its defaults
@pytest.mark.parametrize('mod,flags', [(multvae, ['--epochs', '5', '--hidden', '64', '--dim', '32']),
                                       (cvga, ['--epochs', '10'])])
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
    with pytest.raises(SystemExit):
        mod.parse_args(['--epoch', '1'])
    assert 'unrecognized arguments: --epoch' in capsys.readouterr().err


@pytest.mark.parametrize('mod', [multvae, cvga])
def test_proex_flags_parse(mod):
    args = mod.parse_args(['--proex', '--beta', '1', '--no-mixing'])
    assert args.proex and args.beta == 1.0 and args.envs == 1
    assert args.lambda1 == 1.0                       # generative default: Eq. 11 holds the KL
    args = mod.parse_args(['--proex', '--no-align'])  # w/o alignment keeps the KL to the prior
    assert (args.lambda1, args.beta) == (1.0, 1.0)


def test_eq11_with_beta_1_is_the_base_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    m_env, v_env = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    eq11 = P.distribution_alignment(mu, logvar.exp(), m_env, v_env, beta=1.0)
    assert eq11.mean().item() == pytest.approx(P.kl_to_prior(mu, logvar).item(), rel=1e-5)


@pytest.mark.parametrize('flags,per_batch', [([], 1.0), (['--kl-weight', '0.5'], 0.5),
                                              (['--kl-over-batch'], 1 / 1000),
                                              (['--kl-over-batch', '--kl-weight', '0.5'], 0.5 / 1000)])
def test_cvga_kl_weight_in_the_training_loss(monkeypatch, flags, per_batch):
    """The base CVGA loss is NLL + w * KL with w = --kl-weight, divided by the batch size B
    with --kl-over-batch (the official ID-GRec code). With NLL = 0 and KL = 1 the training
    loss of each batch is w itself."""
    monkeypatch.setattr(P, 'multinomial_nll', lambda logits, x: 0.0 * logits.sum(-1))
    monkeypatch.setattr(P, 'kl_to_prior', lambda mu, logvar: 0.0 * mu.sum() + 1.0)
    args = cvga.parse_args(['--epochs', '1', '--batch', '1000', '--threads', '1'] + flags)
    loss = cvga.main(args)['history'][0]['loss']            # synthetic: 3000 users, 3 batches
    assert loss == pytest.approx(per_batch, rel=1e-6)


@pytest.mark.parametrize('mod', [multvae, cvga])
def test_kl_weight_is_the_base_knob_only(mod):
    assert mod.parse_args(['--kl-weight', '0.2']).kl_weight == 0.2
    with pytest.raises(SystemExit):  # with --proex the prior weight is lambda1 * beta
        mod.parse_args(['--proex', '--kl-weight', '0.2'])
