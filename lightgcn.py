"""LightGCN (He et al., SIGIR'20), base and with ProEx (KDD'26, Alg. 1-2), in one file.

    python lightgcn.py                                  # offline first run on `synthetic`, ~42 s
    python lightgcn.py --dataset book --data-dir DIR
    python lightgcn.py --proex --dataset ml100k --data-dir DIR --out r.json

Model: E^{l+1} = A_hat E^l with A_hat = D^-1/2 A D^-1/2 of the user-item graph; the final
vectors z = sum_{l=0..L} E^l; score(u, i) = z_u . z_i. Trained with BPR (mean softplus)
plus L2 on all parameters, edge dropout on A_hat during training (RLMRec behaviour).
With --proex, the K mapped profiles of users and items are mixed into environments and
added to z (Eq. 8, 12), and the loss is Eq. 14 (see proex_core.py).
"""
import argparse

import torch
import torch.nn as nn

import data as D
import eval as E
import proex_core as P
from eval import TrainLog, add_train_args, interruptible, on_interrupt, start_run, timed

# official per-dataset defaults (RLMRec lightgcn.yml); other datasets: book's. Steam's 2 layers
# are RLMRec's, where the paper's A.3.4 says 3 for every dataset
DATASET_DEFAULTS = {
    'book':  dict(layers=3, reg=1e-6, keep_rate=0.8),
    'yelp':  dict(layers=3, reg=1e-6, keep_rate=0.8),
    'steam': dict(layers=2, reg=1e-6, keep_rate=0.8),
}

# ProEx on ml100k, synthetic and other datasets: the configuration ml100k validation picks
# (bench/reproduce.py); book, yelp, steam: eval.PAPER_DATASETS
PROEX_TUNED = dict(lambda1=0.01, lambda2=0.0, envs=3, alpha=0.1, infonce_reg=False)


class LightGCN(nn.Module):
    def __init__(self, n_users, n_items, d, layers, skip_layer0=False):
        super().__init__()
        self.n_users, self.layers, self.skip_layer0 = n_users, layers, skip_layer0
        self.E0 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users + n_items, d)))  # [U+I, d]

    def propagate(self, A, A_t=None):
        """z = sum_{l=0..L} A^l E0 (skip_layer0: l = 1..L, released ProEx-LightGCN)."""
        E, layers = self.E0, [] if self.skip_layer0 else [self.E0]
        for _ in range(self.layers):
            E = D.spmm(A, E, A_t)                                   # E^{l+1} = A_hat E^l
            layers.append(E)
        z = torch.stack(layers).sum(0)  # [U+I, d]; summed as RLMRec (A.3.2 says average pooling:
        #                                 the same ranking, a scale (L+1) on the BPR logits)
        return z[:self.n_users], z[self.n_users:]                   # z_u [U, d], z_i [I, d]


def drop_edges(A, perm, keep_rate, generator=None):
    """Edge dropout: keep each entry of A_hat with prob keep_rate, no rescaling (RLMRec).
    Returns the dropped matrix and its transpose (the mask breaks the symmetry)."""
    if keep_rate >= 1.0:
        return A, A
    vals = A.values() * (torch.rand(A.values().shape, generator=generator,
                                    device=A.device) < keep_rate)
    return D.with_values(A, vals), D.with_values(A, vals[perm])


def parse_args(argv=None):
    from eval import float_range, int_range  # argparse types: a bad value is one error line
    p = E.ArgumentParser(description=__doc__,  # one-line errors; --epoch is not --epochs
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.add_argument('--dim', type=int_range(1), default=32, help='embedding size d (default 32)')
    p.add_argument('--layers', type=int_range(0), default=None,
                   help='propagation layers L (default: steam 2; book, yelp and every other '
                   'dataset (ml100k, ml100k-grouplens, synthetic, any other folder) 3, book\'s '
                   'value)')
    p.add_argument('--reg', type=float_range(0), default=None,
                   help='L2 weight on all parameters (default 1e-6 on every dataset)')
    p.add_argument('--keep-rate', type=float_range(0, 1, lo_open=True), default=None,
                   help='edge-dropout keep probability '
                   'during training (default 0.8 on every dataset; 1 = no dropout; '
                   '--proex --released sets 1)')
    p.add_argument('--skip-layer0', action='store_true', help='final = sum of layers 1..L '
                   '(as the released ProEx-LightGCN; set by --proex --released)')
    E.add_proex_args(p, tuned=PROEX_TUNED,
                     chosen='picked by validation R@20 on ml100k, mean of two tuning seeds: '
                     'bench/results/protocol_ml100k_lightgcn.json',
                     released_also='; in this file also --skip-layer0 and keep_rate 1.0 '
                     '(no edge dropout), as the released ProEx-LightGCN')
    args = E.resolve_proex_args(p, argv, tuned=PROEX_TUNED)
    if args.proex and args.released and args.keep_rate not in (None, 1.0):
        E.fail(p, f'argument --keep-rate: --released sets keep_rate 1.0 (no edge dropout, as the '
                f'released code), so --keep-rate {args.keep_rate:g} would be ignored; drop '
                f'--keep-rate or --released')
    for k, v in DATASET_DEFAULTS.get(args.dataset, DATASET_DEFAULTS['book']).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.proex and args.released:  # released ProEx-LightGCN: layers 1..L, no edge dropout
        args.skip_layer0, args.keep_rate = True, 1.0
    if args.skip_layer0 and args.layers == 0:
        E.fail(p, 'argument --layers: layers 1..L with L = 0 is no layer at all; '
                'use --layers >= 1 with --skip-layer0 / --released')
    return args


def main(args):
    device, rng = start_run(args)                                        # device, threads, seeds
    data = D.load_dataset(args.dataset, args.data_dir, profiles=args.proex or args.rlmrec_con,
                          views=D.parse_views(args.profiles), seed=args.seed)
    A = D.norm_adj(data.train, device=device)                            # A_hat, symmetric
    perm = D.transpose_perm(A)
    model = LightGCN(data.n_users, data.n_items, args.dim, args.layers, args.skip_layer0).to(device)
    prof = P.ProfileEncoder(data.usr_prf, data.itm_prf, args.dim,                 # Eq. 5-6
                            args.profile_dim).to(device) if args.proex or args.rlmrec_con else None
    modules = nn.ModuleList([model] + ([prof] if prof else []))
    opt = torch.optim.Adam(modules.parameters(), lr=args.lr)

    def train_epoch(epoch):
        modules.train()
        total, n = 0.0, 0
        for u, i, j in D.bpr_batches(data.train, args.batch, rng):
            u, i, j = u.to(device), i.to(device), j.to(device)
            z_u, z_i = model.propagate(*drop_edges(A, perm, args.keep_rate))
            if prof is None:
                loss = P.bpr_loss(z_u[u], z_i[i], z_i[j]) + args.reg * P.l2_reg(model)
            elif args.rlmrec_con:                                        # Table 2's RLMRec-C
                kd = P.rlmrec_con_loss(z_u[u], z_i[i], z_i[j], *prof(u, i, j), prof.all_users(),
                                       u, i, j, args.kd_temp)            # one view, not fused
                loss = (P.bpr_loss(z_u[u], z_i[i], z_i[j]) + args.kd_weight * kd
                        + args.reg * (P.l2_reg(model) + P.l2_reg(prof)))
            else:                                                        # Alg. 1
                c_u, c_i, c_j = prof(u, i, j)                      # Eq. 6, [K, B, d] each
                loss, _ = P.discriminative_objective(                    # Eq. 8-14
                    z_u[u], z_i[i], z_i[j], c_u, c_i, c_j, users=u, pos_items=i, neg_items=j,
                    envs=args.envs, alpha=args.alpha, tau=args.tau, lambda1=args.lambda1,
                    lambda2=args.lambda2, lambda3=args.lambda3, **E.switches(args))
                loss = loss + args.reg * (P.l2_reg(model) + P.l2_reg(prof))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.detach(), n + 1                    # no device sync per batch
        return float(total) / n

    def make_score_fn():
        modules.eval()
        with torch.no_grad():
            z_u, z_i = model.propagate(A)                                # no dropout at inference
            if args.proex:                                               # Alg. 2: + mean profile
                z_u, z_i = z_u + prof.mean_users(), z_i + prof.mean_items()
        return lambda users: z_u[users] @ z_i.T                          # [B, I]

    log = TrainLog(args, data, device)  # validation R@20 every --eval-every epochs, patience, --out
    with interruptible(log):            # Ctrl-C: the epochs so far go to --out, then one line
        for epoch in range(1, args.epochs + 1):
            loss, seconds = timed(train_epoch, epoch)
            if log.epoch(epoch, loss, seconds, modules, make_score_fn):  # patience spent, or loss not finite
                break
    return log.test(modules, make_score_fn)                          # best parameters, test split once


if __name__ == '__main__':
    args = parse_args()
    try:
        main(args)
    except D.DataError as e:
        raise SystemExit(f'error: {e}')
    except KeyboardInterrupt as e:      # Ctrl-C: one line, exit status 130
        raise SystemExit(on_interrupt(e))
