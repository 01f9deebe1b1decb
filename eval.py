"""Full-ranking evaluation and the training protocol shared by the six models
(ProEx, KDD'26; metrics as in RLMRec, which produced the paper's numbers).

  recall_ndcg   Recall@K and NDCG@K of one batch of ranked lists (pure function)
  evaluate      all users of a split, batched so memory stays bounded, CPU or CUDA
  EarlyStopping validation Recall@20, strict improvement, keeps the best parameters
  fit           the loop every model file runs: train an epoch, validate, stop, test once
  add_train_args / pick_device / write_result   the CLI and output pieces they share

Protocol (REFERENCE section 2):
  * ranking is over all items; only the user's TRAIN items are masked (also at test time);
  * Recall@K = hits in top-K / |G_u|        (denominator |G_u|, not min(K, |G_u|));
  * NDCG@K   = DCG@K / IDCG, DCG = sum_{j<K} rel_j / log2(j + 2),
               IDCG = sum_{j < min(K, |G_u|)} 1 / log2(j + 2);
  * users with no held-out item in the split are skipped (not counted as zeros).
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch

import data as D


def recall_ndcg(topk, heldout, n_heldout, ks=(10, 20)):
    """topk: [B, max(ks)] ranked item ids; heldout: [B, n_items] bool; n_heldout: [B] (> 0).
    Returns {f'recall@{k}': [B], f'ndcg@{k}': [B]} per-user values."""
    hits = heldout.gather(1, topk).float()                                      # [B, Kmax]
    discount = 1.0 / torch.log2(torch.arange(2, topk.shape[1] + 2, device=topk.device))  # [Kmax]
    idcg_cum = discount.cumsum(0)                                               # IDCG for 1..Kmax
    out = {}
    for k in ks:
        out[f'recall@{k}'] = hits[:, :k].sum(1) / n_heldout                     # / |G_u|
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        idcg = idcg_cum[torch.clamp(n_heldout, max=k).long() - 1]               # min(K, |G_u|)
        out[f'ndcg@{k}'] = dcg / idcg
    return out


@torch.no_grad()
def evaluate(score_fn, train, heldout, ks=(10, 20), batch_users=1024, device='cpu'):
    """Mean Recall@K and NDCG@K over users with >= 1 held-out item.
    score_fn(users LongTensor [B]) -> scores [B, n_items] on `device`.
    train, heldout: scipy CSR [n_users, n_items]."""
    users = np.flatnonzero(np.diff(heldout.indptr))        # skip users without held-out items
    if len(users) == 0:
        raise D.DataError('evaluate: no user has a held-out item in this split (empty val/test '
                         'matrix?); check the split files')
    sums = {f'{m}@{k}': 0.0 for k in ks for m in ('recall', 'ndcg')}
    for s in range(0, len(users), batch_users):
        u = users[s:s + batch_users]
        scores = score_fn(torch.from_numpy(u).to(device)).float()             # [B, I]
        tr = train[u]
        rows = torch.from_numpy(np.repeat(np.arange(len(u)), np.diff(tr.indptr))).to(device)
        scores[rows, torch.from_numpy(tr.indices).long().to(device)] = -float('inf')  # mask train
        topk = scores.topk(max(ks), dim=1).indices                             # [B, Kmax]
        ho = heldout[u]
        g = torch.zeros(scores.shape, dtype=torch.bool, device=device)         # [B, I] G_u
        g[torch.from_numpy(np.repeat(np.arange(len(u)), np.diff(ho.indptr))).to(device),
          torch.from_numpy(ho.indices).long().to(device)] = True
        n_g = torch.from_numpy(np.diff(ho.indptr)).float().to(device)          # |G_u|
        for name, v in recall_ndcg(topk, g, n_g, ks).items():
            sums[name] += v.sum().item()
    return {name: v / len(users) for name, v in sums.items()}


class EarlyStopping:
    """Stop after `patience` epochs without a strict improvement of the validation metric;
    keeps a copy of the best parameters (state_dict on CPU)."""

    def __init__(self, patience=20):
        self.patience, self.best, self.best_epoch, self.best_state = patience, -1.0, 0, None

    def step(self, epoch, metric, model):
        """Record one validation result; returns True when training should stop."""
        if metric > self.best:
            self.best, self.best_epoch = metric, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return epoch - self.best_epoch >= self.patience


def add_train_args(p, epochs=1000, lr=1e-3, batch=4096, eval_every=1):
    """Flags every model file shares: data, device, seed, protocol and output."""
    p.add_argument('--dataset', default='synthetic', help='book (Amazon-Book), yelp, steam, ml100k, '
                   'synthetic (offline, no files), or any folder under the data root '
                   '(default: synthetic)')
    p.add_argument('--data-dir', default=None, help='data root holding <dataset>/trn_mat.pkl '
                   '(default: $PROEX_DATA, else ./data)')
    p.add_argument('--seed', type=int, default=2023, help='random seed (default 2023)')
    p.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto (default: auto)')
    p.add_argument('--epochs', type=int, default=epochs, help=f'maximum epochs (default {epochs})')
    p.add_argument('--patience', type=int, default=20, help='stop after this many epochs '
                   'without a strict improvement of validation Recall@20 (default 20)')
    p.add_argument('--eval-every', type=int, default=eval_every,
                   help=f'validate every N epochs (default {eval_every})')
    p.add_argument('--lr', type=float, default=lr, help=f'Adam learning rate (default {lr})')
    p.add_argument('--batch', type=int, default=batch, help=f'batch size (default {batch})')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default 0: torch default)')
    p.add_argument('--out', default=None, help='write a JSON result (config, history, test) here')
    return p


def start_run(args):
    """The first steps of every model's main(): device, CPU threads, seeds, the dataset
    (with its profile views when --proex), and one echo of the resolved configuration.
    Returns (device, numpy Generator for the samplers, data.Dataset)."""
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = seed_all(args.seed)
    data = D.load_dataset(args.dataset, args.data_dir, profiles=args.proex,
                          views=D.parse_views(args.profiles), seed=args.seed)
    print(data.summary())
    print('config:', ' '.join(f'{k}={v}' for k, v in vars(args).items()))
    return device, rng, data


def pick_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f'error: --device {name} but CUDA is not available; use --device cpu')
    return torch.device(name)


def fit(model, train_epoch, make_score_fn, data, args, device):
    """The protocol every model runs (REFERENCE section 2-3):
      1. train one epoch: train_epoch(epoch) -> mean loss (a float);
      2. every `eval_every` epochs, validation Recall@20 with make_score_fn() -> score_fn;
      3. stop after `patience` epochs without strict improvement; keep the best parameters;
      4. evaluate the test split once, with the best parameters.
    Prints one line per epoch, writes the result dict to --out (if given) and returns it."""
    stop, history = EarlyStopping(args.patience), []
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        model.train()
        loss = train_epoch(epoch)
        if not np.isfinite(loss):
            print(f'epoch {epoch}: loss is {loss}; stopping, keeping the best epoch so far '
                  f'({stop.best_epoch}). Lower --lr or check the inputs.')
            break
        rec = {'epoch': epoch, 'loss': loss, 'train_s': time.time() - t0}
        if epoch % args.eval_every == 0:
            t1 = time.time()
            model.eval()
            val = evaluate(make_score_fn(), data.train, data.val, ks=(20,), device=device)
            rec.update(val_recall20=val['recall@20'], eval_s=time.time() - t1)
            done = stop.step(epoch, val['recall@20'], model)
        val_txt = f"{rec['val_recall20']:.4f}" if 'eval_s' in rec else '  -   '  # not evaluated
        eval_txt = f" {rec['eval_s']:.2f}s eval" if 'eval_s' in rec else ''
        best_txt = f'{stop.best:.4f} @ {stop.best_epoch}' if stop.best_epoch else '-'
        print(f"epoch {epoch:4d} | loss {loss:.4f} | val R@20 {val_txt} | best {best_txt} | "
              f"{rec['train_s']:.2f}s train{eval_txt}", flush=True)
        history.append(rec)
        if epoch % args.eval_every == 0 and done:
            break
    if stop.best_state is not None:
        model.load_state_dict(stop.best_state)
    model.eval()
    t1 = time.time()
    test = evaluate(make_score_fn(), data.train, data.test, ks=(10, 20), device=device)
    chosen = (f'best epoch {stop.best_epoch} (val R@20 {stop.best:.4f})' if stop.best_epoch else
              'no validation ran (--epochs below --eval-every): the last parameters')
    print(f"{chosen} | test "
          + ' '.join(f'{k} {v:.4f}' for k, v in test.items()) + f' | {time.time() - t1:.2f}s')
    result = {'config': vars(args), 'dataset': data.summary(), 'device': str(device),
            'torch_threads': torch.get_num_threads(), 'history': history,
            'best_epoch': stop.best_epoch, 'best_val_recall20': stop.best, 'test': test,
            'sec_per_epoch': statistics.median([h['train_s'] for h in history]) if history else None,
            'sec_per_eval': statistics.median([h['eval_s'] for h in history if 'eval_s' in h] or [0])}
    write_result(result, getattr(args, 'out', None))
    return result


def write_result(result, path):
    if path:
        with open(path, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'wrote {path}')


def seed_all(seed):
    """Seed torch (CPU and CUDA) and return a numpy Generator for the samplers."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


if __name__ == '__main__':  # a tiny self-check on a hand-worked case
    argparse.ArgumentParser(description='Hand-worked check of Recall/NDCG.').parse_args()
    topk = torch.tensor([[3, 1, 0]])
    g = torch.tensor([[True, False, False, True]])           # G_u = {0, 3}
    m = recall_ndcg(topk, g, torch.tensor([2.0]), ks=(3,))
    # hits at ranks 0 and 2: recall 2/2; DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    print(m, 'expected ndcg', 1.5 / (1 + 1 / np.log2(3)))
