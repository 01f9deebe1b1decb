"""Mult-VAE (Liang et al., WWW'18), base and with ProEx (KDD'26, Alg. 1-2), in one file.

    python multvae.py                                   # offline first run on `synthetic`
    python multvae.py --dataset book --data-dir DIR
    python multvae.py --proex --dataset ml100k --data-dir DIR --out r.json

Model: a user's binary train row x_u [I] is encoded to q(z_u | x_u) = N(mu, diag(sigma^2)) by
an MLP I-600-(2x200) with tanh, and decoded by an MLP 200-600-I with tanh to logits over all
items, pi(z_u) = softmax(logits). Loss = multinomial NLL -sum_i x_ui log pi_i(z_u) plus
KL(q || N(0, I)), both means over the batch, KL weight --kl-weight, default 1 as the authors' DMRec code (no annealing).
Dropout on the raw binary row (no L2 normalisation of the input). Prediction: logits of mu.
With --proex, the K profiles of the user and its items are mapped to Gaussians (Eq. 6),
mixed into environments (Eq. 9), fused with the posterior (Eq. 12), and the KL term becomes
the distribution alignment of Eq. 11 inside the objective of Eq. 14 (see proex_core.py);
prediction adds the mean of the K profile means to mu (Alg. 2).
"""
import argparse

import torch
import torch.nn as nn

import data as D
import eval as E
import proex_core as P
from eval import TrainLog, add_train_args, interruptible, on_interrupt, start_run, timed

# official per-dataset defaults (RLMRec / DMRec configs); other datasets: book's
DATASET_DEFAULTS = {
    'book':  dict(dropout=0.3),
    'yelp':  dict(dropout=0.3),
    'steam': dict(dropout=0.2),
}


class MultVAE(nn.Module):
    def __init__(self, n_items, hidden=600, d=200, dropout=0.3):
        super().__init__()
        self.d = d
        self.drop = nn.Dropout(dropout)                                    # on the raw row
        self.q = nn.Sequential(nn.Linear(n_items, hidden), nn.Tanh(),
                               nn.Linear(hidden, 2 * d))                   # I-600-(2x200)
        self.p = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(),
                               nn.Linear(hidden, n_items))                 # 200-600-I, logits
        for layer in (*self.q, *self.p):
            if isinstance(layer, nn.Linear):                               # vae_cf init: Xavier
                nn.init.xavier_uniform_(layer.weight)                      # weights, N(0, 0.001^2)
                nn.init.normal_(layer.bias, std=0.001)                     # biases

    def encode(self, x, drop=True):
        """q(z | x): x [B, I] binary rows -> mu, logvar [B, d] (drop=False: x is already
        dropped out, the caller keeps the row for Eq. 6's 'dropped-sum' input)."""
        h = self.q(self.drop(x) if drop else x)                            # [B, 2d]
        return h[:, :self.d], h[:, self.d:]

    def decode(self, z):
        """z [B, d] -> logits [B, I] of pi(z) = softmax(logits)."""
        return self.p(z)


def parse_args(argv=None):
    from eval import float_range, int_range  # argparse types: a bad value is one error line
    p = E.ArgumentParser(description=__doc__,  # one-line errors; --epoch is not --epochs
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, batch=1024)
    p.add_argument('--dim', type=int_range(1), default=200, help='latent size d (default 200)')
    p.add_argument('--hidden', type=int_range(1), default=600,
                   help='hidden layer size of encoder and '
                   'decoder (default 600)')
    p.add_argument('--dropout', type=float_range(0, 1, hi_open=True), default=None,
                   help='dropout probability on the input '
                   'row (default: steam 0.2; book, yelp and every other dataset (ml100k, '
                   'ml100k-grouplens, synthetic, any other folder) 0.3, book\'s value)')
    p.add_argument('--kl-weight', type=float_range(0), default=1.0, help="base model: weight of "
                   "KL(q || N(0, I)) (default 1 as DMRec, the ProEx authors' generative code; "
                   "the paper tunes this 'decay coefficient' in [0.1, 0.9]; vae_cf, Liang et "
                   "al.'s Mult-VAE code, anneals it to 0.2). With --proex the KL to the prior is "
                   "the beta part of Eq. 11, weight lambda1 * beta, and this flag is unused")
    E.add_proex_args(p, generative=True, lambda1=1.0, dmrec=True)  # Eq. 11 carries the KL: weight 1
    args = E.resolve_proex_args(p, argv, generative=True)
    if args.proex and args.kl_weight != 1.0:  # the flag would silently do nothing
        E.fail(p, 'argument --kl-weight: weights the base model\'s KL; with --proex '
                         'the KL to the prior weighs lambda1 * beta (Eq. 11): set --lambda1 and '
                         '--beta instead')
    for k, v in DATASET_DEFAULTS.get(args.dataset, DATASET_DEFAULTS['book']).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(args):
    device, rng = start_run(args)                                        # device, threads, seeds
    data = D.load_dataset(args.dataset, args.data_dir, profiles=args.proex,
                          views=D.parse_views(args.profiles), seed=args.seed)
    model = MultVAE(data.n_items, args.hidden, args.dim, args.dropout).to(device)
    agg = P.ProfileAggregator(data.usr_prf, data.itm_prf, data.train, args.dim, hidden=600,
                              profile_dim=args.profile_dim, input_rule=args.profile_input
                              ).to(device) if args.proex else None
    modules = nn.ModuleList([model] + ([agg] if agg else []))
    opt = torch.optim.Adam(modules.parameters(), lr=args.lr)

    def train_epoch(epoch):
        modules.train()
        total, n = 0.0, 0
        for u in D.user_batches(data.n_users, args.batch, rng):
            x = D.dense_rows(data.train, u, device)                        # [B, I]
            x_in = model.drop(x)              # input dropout, [B, I]; kept for DMRec's dropped-sum input
            mu, logvar = model.encode(x_in, drop=False)                    # [B, d] each
            if agg is None:
                z = P.reparameterize(mu, logvar)                           # [B, d]
                loss = (P.multinomial_nll(model.decode(z), x).mean()
                        + args.kl_weight * P.kl_to_prior(mu, logvar))
            else:  # Alg. 1; the KL becomes lambda1 * Eq. 11 (prior weight lambda1 * beta)
                mu_k, logvar_k = agg(u.to(device), x_in)                      # Eq. 6, [K, B, d] each
                loss, _ = P.generative_objective(                          # Eq. 9, 11, 12, 14
                    lambda z: P.multinomial_nll(model.decode(z), x), mu, logvar, mu_k, logvar_k,
                    envs=args.envs, alpha=args.alpha, beta=args.beta, tau=args.tau,
                    lambda1=args.lambda1, lambda2=args.lambda2, lambda3=args.lambda3,
                    **E.switches(args, generative=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.detach(), n + 1                    # no device sync per batch
        return float(total) / n

    def make_score_fn():
        modules.eval()
        def score(users):                                                  # no dropout: eval()
            x = D.dense_rows(data.train, users.cpu(), device)              # [B, I]
            z, _ = model.encode(x)                                         # z = mu, [B, d]
            if agg is not None:                                            # Alg. 2: + the mean
                z = P.add_mean_profile(z, agg(users, x)[0])                # of the K profile means
            return model.decode(z)                                         # [B, I]
        return score

    log = TrainLog(args, data, device)  # validation R@20 every --eval-every epochs, patience, --out
    with interruptible(log):            # Ctrl-C: the epochs so far go to --out, then one line
        for epoch in range(1, args.epochs + 1):
            loss, seconds = timed(train_epoch, epoch)
            if log.epoch(epoch, loss, seconds, modules, make_score_fn):  # patience spent, or loss not finite
                break
    return log.test(modules, make_score_fn)                          # best parameters, test split once


# How --proex reads the paper here, against the authors' DMRec code (the closest released
# generative code, BlueGhostYi/ProRec, encoder/models/general_cf/mult_vae_mddm.py):
#  * Eq. 6's input: the MEAN of the profile vectors of the user's train items plus the user's
#    own (proex_core.aggregate_profiles); DMRec SUMS over the items left after input dropout,
#    which --profile-input dropped-sum (and --dmrec) does; validation keeps the mean
#    (bench/RESULTS.md);
#  * Eq. 12's fusion, as DMRec's cal_loss: the environment's Gaussian and the posterior are
#    fused (means added, log-variances added) and sampled once (proex_core.fuse_gaussians);
#    --sum-of-samples adds a sample of each to the other instead (for study);
#  * Eq. 11 aligns the posterior q of Eq. 2, as Sec. 2.4 says: beta towards N(0, I), 1 - beta
#    towards the environment's Gaussian; DMRec's KLD and KLD_llm align the fused Gaussian,
#    from which the environment's mean cancels (--align-fused);
#  * inference (Alg. 2): z = mu + the mean of the K profile means; DMRec's full_predict adds
#    its one mu_llm to mu, the same rule with K = 1 (the variances play no part at inference).

if __name__ == '__main__':
    args = parse_args()
    try:
        main(args)
    except D.DataError as e:
        raise SystemExit(f'error: {e}')
    except KeyboardInterrupt as e:      # Ctrl-C: one line, exit status 130
        raise SystemExit(on_interrupt(e))
