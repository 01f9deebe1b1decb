"""SimGCL (Yu et al., SIGIR'22), base and with ProEx (KDD'26, Alg. 1-2), in one file.

    python simgcl.py                                    # offline first run on `synthetic`
    python simgcl.py --dataset book --data-dir DIR
    python simgcl.py --proex --dataset ml100k --data-dir DIR --out r.json

Model: LightGCN without edge dropout, E^{l+1} = A_hat E^l, A_hat = D^-1/2 A D^-1/2; the
final vectors z = sum_{l=0..L} E^l; score(u, i) = z_u . z_i. Training adds two noisy views:
at every layer l >= 1, E^l += eps * sign(E^l) * normalize(U(0, 1)) (row-wise L2 norm, so each
row moves by exactly eps and stays in its orthant), and the noisy E^l feeds the next layer.
Loss = BPR on the clean view + cl * InfoNCE between the two noisy views (batch users and
positive items against ALL users / ALL items of view 2, L2-normalised, temperature --cl-tau)
+ L2 on all parameters (RLMRec behaviour). With --proex, ProEx (Eq. 8, 12, 14; proex_core.py)
replaces the BPR term on the clean vectors and the cl term is kept.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import data as D
import eval as E
import proex_core as P
from eval import TrainLog, add_train_args, interruptible, on_interrupt, start_run, timed

# official per-dataset defaults (RLMRec simgcl.yml); other datasets: book's
DATASET_DEFAULTS = {
    'book':  dict(layers=3, reg=1e-5, cl=0.1, cl_tau=0.2, eps=0.9),
    'yelp':  dict(layers=3, reg=1e-5, cl=0.1, cl_tau=0.2, eps=0.9),
    'steam': dict(layers=3, reg=1e-5, cl=0.1, cl_tau=0.5, eps=0.2),
}


def perturb(E, eps):
    """SimGCL's noise: E + eps * sign(E) * normalize(U(0, 1)), the uniform noise L2-normalised
    per row, so every row of the noise has norm eps (where E has no zero entry)."""
    noise = F.normalize(torch.rand(E.shape, dtype=E.dtype, device=E.device), dim=1)  # [N, d]
    return E + eps * torch.sign(E) * noise

# ProEx on ml100k, synthetic and other datasets: the configuration ml100k validation picks
# (bench/reproduce.py); book, yelp, steam: eval.PAPER_DATASETS
PROEX_TUNED = dict(lambda1=0.0, lambda2=0.01, envs=3, alpha=0.1, infonce_reg=False)


class SimGCL(nn.Module):
    def __init__(self, n_users, n_items, d, layers):
        super().__init__()
        self.n_users, self.layers = n_users, layers
        self.E0 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users + n_items, d)))  # [U+I, d]

    def propagate(self, A, eps=0.0):
        """z = sum_{l=0..L} E^l; eps > 0: a noisy view (noise added to E^l for l >= 1).
        Layer 0 is in the sum, as in RLMRec's SimGCL (it reuses its LightGCN); the original
        SimGCL code averages layers 1..L instead."""
        E, layers = self.E0, [self.E0]
        for _ in range(self.layers):
            E = D.spmm(A, E)                                        # E^{l+1} = A_hat E^l
            if eps > 0:
                E = perturb(E, eps)                                 # noisy view, [U+I, d]
            layers.append(E)
        z = torch.stack(layers).sum(0)  # [U+I, d]; summed as RLMRec (A.3.2 says average pooling)
        return z[:self.n_users], z[self.n_users:]                   # z_u [U, d], z_i [I, d]


def view_info_nce(z1, z2, ids, tau, chunk=128):
    """SimGCL's contrastive term for the batch entities `ids` [B] (users, or positive items),
    mean over the B rows: -log( exp(z1_b . z2_b / tau) / sum_n exp(z1_b . z2_n / tau) ), the
    sum over ALL N entities of view 2, all vectors L2-normalised. z1, z2: [N, d] views 1, 2.
    A repeated id gives the same term: computed once and weighted by its count (exact)."""
    uniq, count = torch.unique(ids, return_counts=True)             # [n], [n]
    q = F.normalize(z1[uniq], dim=1) / tau                          # [n, d]
    keys = F.normalize(z2, dim=1)                                   # [N, d]
    weight = count.to(q.dtype) / ids.numel()                        # [n], sums to 1
    return ChunkedCrossEntropy.apply(q, keys, uniq, weight, chunk)


class ChunkedCrossEntropy(torch.autograd.Function):
    """sum_r weight_r * -log softmax(q_r . keys^T)[target_r], q [n, d], keys [N, d].
    The same value and gradients as F.cross_entropy(q @ keys.T, target, reduction='none')
    weighted, but computed `chunk` rows at a time, with the gradients formed in the forward
    pass (d loss / d logits = weight * (softmax - onehot)): the [n, N] logits never exist
    whole. On a CPU at Amazon-Book's size (n ~ 3,000 batch entities, N ~ 10,000) the whole
    [n, N] matrix and its softmax, 130 MB each, made SimGCL's epoch ~30x LightGCN's."""

    @staticmethod
    def forward(ctx, q, keys, target, weight, chunk):
        loss, grad_q, grad_keys = q.new_zeros(()), torch.empty_like(q), torch.zeros_like(keys)
        for s in range(0, q.shape[0], chunk):
            rows = torch.arange(s, min(s + chunk, q.shape[0]), device=q.device)  # [c]
            logits = q[rows] @ keys.T                               # [c, N]
            at = torch.arange(len(rows), device=q.device)
            positive = logits[at, target[rows]]                     # [c]
            top = logits.amax(dim=1, keepdim=True)                  # [c, 1], for stability
            p = logits.sub_(top).exp_()                             # in place, [c, N]
            norm = p.sum(dim=1, keepdim=True)                       # [c, 1]
            lse = top[:, 0] + norm[:, 0].log()                      # logsumexp, [c]
            loss = loss + (weight[rows] * (lse - positive)).sum()
            p.div_(norm)                                            # softmax
            p[at, target[rows]] -= 1.0                              # softmax - onehot
            p.mul_(weight[rows, None])                              # d loss / d logits
            grad_q[rows] = p @ keys                                 # [c, d]
            grad_keys.addmm_(p.T, q[rows])                          # [N, d]
        ctx.save_for_backward(grad_q, grad_keys)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_keys = ctx.saved_tensors
        return grad_out * grad_q, grad_out * grad_keys, None, None, None


def cl_loss(model, A, eps, tau, u, i):
    """Contrastive term: two noisy views, InfoNCE for batch users u and positive items i."""
    z_u1, z_i1 = model.propagate(A, eps)                            # view 1, [U, d], [I, d]
    z_u2, z_i2 = model.propagate(A, eps)                            # view 2
    return view_info_nce(z_u1, z_u2, u, tau) + view_info_nce(z_i1, z_i2, i, tau)


def parse_args(argv=None):
    from eval import float_range, int_range  # argparse types: a bad value is one error line
    p = E.ArgumentParser(description=__doc__,  # one-line errors; --epoch is not --epochs
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.add_argument('--dim', type=int_range(1), default=32, help='embedding size d (default 32)')
    p.add_argument('--layers', type=int_range(0), default=None,
                   help='propagation layers L (default 3 on every dataset)')
    p.add_argument('--reg', type=float_range(0), default=None,
                   help='L2 weight on all parameters (default 1e-5 on every dataset)')
    p.add_argument('--cl', type=float_range(0), default=None,
                   help='weight of the contrastive InfoNCE term '
                   '(default 0.1 on every dataset)')
    p.add_argument('--cl-tau', type=float_range(0, lo_open=True), default=None,
                   help='temperature of the contrastive '
                   'InfoNCE (default: steam 0.5; book, yelp and every other dataset (ml100k, '
                   'ml100k-grouplens, synthetic, any other folder) 0.2, book\'s value); --tau is ProEx\'s')
    p.add_argument('--eps', type=float_range(0), default=None,
                   help='norm of the noise added per row and '
                   'layer in the noisy views (default: steam 0.2; book, yelp and every other '
                   'dataset 0.9)')
    E.add_proex_args(p, tuned=PROEX_TUNED,
                     chosen='picked by validation R@20 on ml100k, mean of two tuning seeds: '
                     'bench/results/protocol_ml100k_simgcl.json',
                     form_why='the form the ml100k grid ran; the other forms are compared in '
                     'bench/RESULTS.md')
    args = E.resolve_proex_args(p, argv, tuned=PROEX_TUNED)
    for k, v in DATASET_DEFAULTS.get(args.dataset, DATASET_DEFAULTS['book']).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(args):
    device, rng = start_run(args)                                        # device, threads, seeds
    data = D.load_dataset(args.dataset, args.data_dir, profiles=args.proex or args.rlmrec_con,
                          views=D.parse_views(args.profiles), seed=args.seed)
    A = D.norm_adj(data.train, device=device)                            # A_hat, symmetric
    model = SimGCL(data.n_users, data.n_items, args.dim, args.layers).to(device)
    prof = P.ProfileEncoder(data.usr_prf, data.itm_prf, args.dim,                 # Eq. 5-6
                            args.profile_dim).to(device) if args.proex or args.rlmrec_con else None
    modules = nn.ModuleList([model] + ([prof] if prof else []))
    opt = torch.optim.Adam(modules.parameters(), lr=args.lr)

    def train_epoch(epoch):
        modules.train()
        total, n = 0.0, 0
        for u, i, j in D.bpr_batches(data.train, args.batch, rng):
            u, i, j = u.to(device), i.to(device), j.to(device)
            z_u, z_i = model.propagate(A)                                # clean view
            loss = args.cl * cl_loss(model, A, args.eps, args.cl_tau, u, i)
            if prof is None:
                loss = loss + P.bpr_loss(z_u[u], z_i[i], z_i[j]) + args.reg * P.l2_reg(model)
            elif args.rlmrec_con:                                        # Table 2's RLMRec-C
                kd = P.rlmrec_con_loss(z_u[u], z_i[i], z_i[j], *prof(u, i, j), prof.all_users(),
                                       u, i, j, args.kd_temp)            # one view, not fused
                loss = (loss + P.bpr_loss(z_u[u], z_i[i], z_i[j]) + args.kd_weight * kd
                        + args.reg * (P.l2_reg(model) + P.l2_reg(prof)))
            else:                                                        # Alg. 1 on the clean view
                c_u, c_i, c_j = prof(u, i, j)                      # Eq. 6, [K, B, d] each
                proex, _ = P.discriminative_objective(                   # Eq. 8-14
                    z_u[u], z_i[i], z_i[j], c_u, c_i, c_j, users=u, pos_items=i, neg_items=j,
                    envs=args.envs, alpha=args.alpha, tau=args.tau, lambda1=args.lambda1,
                    lambda2=args.lambda2, lambda3=args.lambda3, **E.switches(args))
                loss = loss + proex + args.reg * (P.l2_reg(model) + P.l2_reg(prof))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.detach(), n + 1                    # no device sync per batch
        return float(total) / n

    def make_score_fn():
        modules.eval()
        with torch.no_grad():
            z_u, z_i = model.propagate(A)                                # clean view, no noise
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
