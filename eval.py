"""Full-ranking evaluation and the training protocol shared by the six models
(ProEx, KDD'26; metrics as in RLMRec, which produced the paper's numbers).

  recall_ndcg   Recall@K and NDCG@K of one batch of ranked lists (pure function)
  evaluate      all users of a split, batched so memory stays bounded, CPU or CUDA
  EarlyStopping validation Recall@20, strict improvement, keeps the best parameters
  TrainLog      around each model file's epoch loop: progress line, validation, early
                stopping, why it stopped, the test split once, the result file
  add_train_args / start_run / write_result   the CLI, device/seed and output pieces they share
  interruptible / on_interrupt   Ctrl-C in the epoch loop: the epochs so far to --out, one line
  int_range / float_range / out_file / device_name   argparse types that refuse bad values
                with one `error:` line naming the flag (used by every model's parse_args)

Protocol (RLMRec's metrics, which the ProEx paper's numbers use):
  * ranking is over all items; only the user's TRAIN items are masked (also at test time);
  * Recall@K = hits in top-K / |G_u|        (denominator |G_u|, not min(K, |G_u|));
  * NDCG@K   = DCG@K / IDCG, DCG = sum_{j<K} rel_j / log2(j + 2),
               IDCG = sum_{j < min(K, |G_u|)} 1 / log2(j + 2);
  * users with no held-out item in the split are skipped (not counted as zeros).
"""
import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
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
def evaluate(score_fn, train, heldout, ks=(10, 20), batch_users=1024, device='cpu',
             per_user=False):
    """Mean Recall@K and NDCG@K over users with >= 1 held-out item.
    score_fn(users LongTensor [B]) -> scores [B, n_items] on `device`.
    train, heldout: scipy CSR [n_users, n_items].
    per_user=True: returns (means, users [n], {metric: [n] numpy values}) instead."""
    users = np.flatnonzero(np.diff(heldout.indptr))        # skip users without held-out items
    if len(users) == 0:
        raise D.DataError('evaluate: no user has a held-out item in this split (empty val/test '
                         'matrix?); check the split files')
    check_item_count(heldout.shape[1], ks)
    sums = {f'{m}@{k}': 0.0 for k in ks for m in ('recall', 'ndcg')}
    values = {name: [] for name in sums}                                       # per_user
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
            if per_user:
                values[name].append(v.cpu().numpy())
    means = {name: v / len(users) for name, v in sums.items()}
    if per_user:
        return means, users, {name: np.concatenate(v) for name, v in values.items()}
    return means


def by_activity(train, users, values, n_groups=4):
    """Recall@20 and NDCG@20 per user group, the groups being the quartiles (n_groups
    quantiles) of the users' numbers of train interactions (the ProEx paper's Fig. 12 view).
    users [n] and values {metric: [n]} as evaluate(..., per_user=True) returns them.
    Returns a list of {'train_items': [lo, hi], 'users': n, 'recall@20', 'ndcg@20'}."""
    n_train = np.diff(train.indptr)[users]                                     # [n]
    edges = np.quantile(n_train, np.linspace(0, 1, n_groups + 1))
    group = np.clip(np.searchsorted(edges, n_train, side='right') - 1, 0, n_groups - 1)
    out = []
    for q in range(n_groups):
        m = group == q
        out.append({'train_items': [int(n_train[m].min()), int(n_train[m].max())] if m.any() else None,
                    'users': int(m.sum()), **{k: float(values[k][m].mean()) if m.any() else None
                                              for k in ('recall@20', 'ndcg@20')}})
    return out


def check_item_count(n_items, ks):
    """Top-K needs at least K items to rank."""
    if n_items < max(ks):
        raise D.DataError(f'the dataset has {n_items} items, fewer than K = {max(ks)} of '
                          f'Recall/NDCG@{max(ks)}; the protocol needs at least {max(ks)} items: '
                          f'use a larger dataset')


class EarlyStopping:
    """Stop after `patience` VALIDATIONS (not epochs) without a strict improvement of the
    validation metric, as the official RLMRec/DMRec trainers count it; keeps a copy of the
    best parameters (state_dict on CPU). With validation every 3 epochs and patience 20, a
    run gets 60 epochs to leave a plateau."""

    def __init__(self, patience=20):
        self.patience, self.best, self.best_epoch, self.best_state = patience, -1.0, 0, None
        self.since = 0  # validations since the best one

    def step(self, epoch, metric, model):
        """Record one validation result; returns True when training should stop."""
        if metric > self.best:
            self.best, self.best_epoch, self.since = metric, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.since += 1
        return self.since >= self.patience


class Diverged(D.DataError):
    """Training produced a non-finite loss; the result file says so and the run fails."""


# ---------------------------------------------------------------- argparse types
# argparse reports an ArgumentTypeError as one line, "prog: error: argument --flag: msg".

def int_range(lo, hi=None):
    """argparse type: an integer in [lo, hi] (no upper bound when hi is None)."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {s!r}')
        if v < lo or (hi is not None and v > hi):
            want = f'>= {lo}' if hi is None else f'in [{lo}, {hi}]'
            raise argparse.ArgumentTypeError(f'must be an integer {want}, got {v}')
        return v
    return parse


def float_range(lo=None, hi=None, lo_open=False, hi_open=False):
    """argparse type: a finite float in the interval from lo to hi (open ends as asked)."""
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {s!r}')
        ok = math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo)) \
            and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            if hi is None:
                want = f'> {lo}' if lo_open else f'>= {lo}'
            else:
                want = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f'must be a finite number {want}, got {s}')
        return v
    return parse


def out_file(s):
    """argparse type for --out: a file name in a folder that exists and is writable, so a
    run never trains to the end and then fails to save its result."""
    path = Path(s)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f'{s} is a folder; give a file name such as '
                                         f'{path / "result.json"}')
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f'folder {folder} does not exist; create it first '
                                         f'(mkdir -p {folder}) or write elsewhere')
    if path.exists() and not path.is_file():  # e.g. /dev/null: the result replaces the file
        raise argparse.ArgumentTypeError(f'{s} exists and is not a regular file; give the '
                                         f'name of a new or a regular file')
    try:  # a real file, as write_result will make: os.access says yes to root on /proc
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f'.{path.name}.', suffix='.tmp'):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f'cannot create a file in folder {folder} '
                                         f'({e.strerror or e}), so the result could not be '
                                         f'saved; write elsewhere')
    return s


def device_name(s):
    """argparse type for --device: auto, cpu, cuda, cuda:N or mps (availability is checked
    by pick_device)."""
    if not re.fullmatch(r'auto|cpu|mps|cuda(:\d+)?', s):
        raise argparse.ArgumentTypeError(f'expected cpu, cuda, cuda:N, mps or auto, got {s!r}')
    return s


# small datasets whose default is one torch thread (--threads); measured on 2 cores beside two
# other jobs: `python lightgcn.py` (synthetic) 30 s with 1 thread, 440 s with torch's 2
ONE_THREAD = ('synthetic', 'ml100k', 'ml100k-grouplens')


def add_train_args(p, epochs=1000, lr=1e-3, batch=4096, eval_every=3, optimizer='Adam'):
    """Flags every model file shares: data, device, seed, protocol and output."""
    p.add_argument('--dataset', default='synthetic', help='book (Amazon-Book), yelp, steam: the '
                   'data of RLMRec (Ren et al., WWW\'24, the code behind the paper\'s numbers), '
                   'downloaded into the data root when missing; ml100k: a prepared MovieLens-100K '
                   'folder; ml100k-grouplens: built from the GroupLens ML-100K archive when '
                   'missing; synthetic: generated in memory, no files, 3000 users x 2000 items; '
                   'or any folder under the data root that holds trn/val/tst_mat.pkl '
                   '(default: synthetic)')
    p.add_argument('--data-dir', default=None, help='data root holding <dataset>/trn_mat.pkl '
                   '(default: $PROEX_DATA, else ./data; not used by synthetic); the result file '
                   'stores it as typed')
    p.add_argument('--seed', type=int_range(0, 2**32 - 1), default=2023,
                   help='random seed (default 2023)')
    p.add_argument('--device', type=device_name, default='auto',
                   help='cpu, cuda, cuda:N, mps or auto (default: auto)')
    p.add_argument('--epochs', type=int_range(1), default=epochs,
                   help=f'maximum epochs (default {epochs})')
    p.add_argument('--patience', type=int_range(1), default=20, help='stop after this many '
                   'validations (not epochs) without a strict improvement of validation Recall@20, '
                   'as RLMRec\'s trainer counts it (default 20)')
    p.add_argument('--eval-every', type=int_range(1), default=eval_every,
                   help=f'validate every N epochs (default {eval_every})')
    p.add_argument('--lr', type=float_range(0, lo_open=True), default=lr,
                   help=f'learning rate of {optimizer} (default {lr:g})')
    p.add_argument('--batch', type=int_range(1), default=batch, help=f'batch size (default {batch})')
    p.add_argument('--threads', type=int_range(0), default=None,
                   help='torch CPU threads, 0 = torch default, one per core (default: 1 on '
                        f'{", ".join(ONE_THREAD)}, whose small matrices gain nothing from more '
                        'threads and, beside other jobs, run many times slower with them; 0 on '
                        'book, yelp, steam and other folders). Seeded runs are bit-identical '
                        'only with 1')
    p.add_argument('--out', type=out_file, default=None,
                   help='write a JSON result (config, history, test) here; the folder must exist '
                        '(default: none, no file). A run stopped by Ctrl-C writes what it '
                        'measured so far')
    return p


def start_run(args):
    """The first steps of every model's main(): the device, the CPU threads and the seeds.
    Returns (device, a numpy Generator for the samplers)."""
    device = pick_device(args.device)
    if args.threads is None:  # the per-dataset default, stored in the result's config
        args.threads = 1 if args.dataset in ONE_THREAD else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    return device, seed_all(args.seed)


def pick_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f'error: --device {name} but CUDA is not available; use --device cpu')
    if name.startswith('cuda:') and int(name[5:]) >= torch.cuda.device_count():
        raise SystemExit(f'error: --device {name} but this machine has '
                         f'{torch.cuda.device_count()} CUDA device(s); use cuda:0 .. '
                         f'cuda:{torch.cuda.device_count() - 1}')
    if name == 'mps' and not torch.backends.mps.is_available():
        raise SystemExit('error: --device mps but MPS is not available; use --device cpu')
    return torch.device(name)


def timed(fn, *args):
    """(fn(*args), seconds it took)."""
    t0 = time.time()
    return fn(*args), time.time() - t0


class TrainLog:
    """The bookkeeping of the protocol around a model file's epoch loop (paper appendix A.3;
    RLMRec's trainer), the loop itself stays in the model file:

        log = TrainLog(args, data, device)
        with interruptible(log):                  # Ctrl-C: save the epochs so far, stop
            for epoch in range(1, args.epochs + 1):
                loss, seconds = timed(train_epoch, epoch)
                if log.epoch(epoch, loss, seconds, modules, make_score_fn):
                    break
        result = log.test(modules, make_score_fn)

    epoch(): one history record and one progress line; validation Recall@20 with
    make_score_fn() every `eval_every` epochs (make_score_fn=None: none); early stopping after
    `patience` validations without a strict improvement,
    keeping the best parameters; True when training should stop (patience spent, or a
    non-finite loss). test(): the best parameters, the test split once (also per
    activity quartile, Fig. 12), the result dict written to --out and returned; a non-finite
    loss raises Diverged after the result is written. interrupted(): Ctrl-C, see
    interruptible below."""

    def __init__(self, args, data, device):
        check_item_count(data.train.shape[1], (10, 20))  # before training, not at the first eval
        self.args, self.data, self.device = args, data, device
        self.t_start, self.code = time.time(), git_state()
        self.stop, self.history, self.last = EarlyStopping(args.patience), [], 0
        self.reason, self.detail = 'max epochs', f'reached --epochs {args.epochs}'
        print(data.summary())
        print('config:', ' '.join(f'{k}={v}' for k, v in vars(args).items()))

    def epoch(self, epoch, loss, train_s, modules, make_score_fn=None):
        self.last = epoch
        if epoch % self.args.eval_every != 0:
            make_score_fn = None                               # no validation this epoch
        if not np.isfinite(loss):
            self.reason, self.detail = 'non-finite loss', (
                f'the loss was {loss} at epoch {epoch}; lower --lr (or the loss weights) or '
                f'check the inputs')
            return True
        rec, stop, done = {'epoch': epoch, 'loss': loss, 'train_s': train_s}, self.stop, False
        if make_score_fn is not None:                          # validation Recall@20
            t1 = time.time()
            modules.eval()
            val = evaluate(make_score_fn(), self.data.train, self.data.val, ks=(20,),
                           device=self.device)
            rec.update(val_recall20=val['recall@20'], eval_s=time.time() - t1)
            done = stop.step(epoch, val['recall@20'], modules)
        val_txt = f"{rec['val_recall20']:.4f}" if 'eval_s' in rec else '  -   '  # not evaluated
        eval_txt = f" {rec['eval_s']:.2f}s eval" if 'eval_s' in rec else ''
        best_txt = f'{stop.best:.4f} @ {stop.best_epoch}' if stop.best_epoch else '-'
        self.history.append(rec)                               # before the line that shows it
        print(f"epoch {epoch:4d} | loss {loss:.4f} | val R@20 {val_txt} | best {best_txt} | "
              f"{train_s:.2f}s train{eval_txt}", flush=True)
        if done:
            self.reason, self.detail = 'patience', (
                f'no strict improvement of validation R@20 in {self.args.patience} validations '
                f'(every {self.args.eval_every} epochs) after epoch {stop.best_epoch}')
        return done

    def interrupted(self):
        """Ctrl-C: write the result so far to --out (history, best epoch, no test metrics,
        stop_reason 'interrupted'); returns the line that says so."""
        self.last = self.history[-1]['epoch'] if self.history else 0  # the last epoch recorded
        self.reason, self.detail = 'interrupted', f'Ctrl-C after epoch {self.last}'
        out = getattr(self.args, 'out', None)
        write_result(self.result(), out)
        best = (f' (best val R@20 {self.stop.best:.4f} at epoch {self.stop.best_epoch})'
                if self.stop.best_epoch else '')
        saved = f'the epochs so far are in {out}, without test metrics' if out else 'no --out'
        return f'stopped by Ctrl-C after epoch {self.last}{best}; {saved}'

    def test(self, modules, make_score_fn):
        args, data, stop = self.args, self.data, self.stop
        print(f'stopped at epoch {self.last} ({self.reason}): {self.detail}')
        if stop.best_state is not None:
            modules.load_state_dict(stop.best_state)
        modules.eval()
        test = test_s = by_group = None
        if self.reason != 'non-finite loss' or stop.best_state is not None:  # never a diverged model
            t1 = time.time()
            test, users, values = evaluate(make_score_fn(), data.train, data.test, ks=(10, 20),
                                           device=self.device, per_user=True)
            by_group = by_activity(data.train, users, values)                 # Fig. 12 view
            test_s = time.time() - t1
        chosen = (f'best epoch {stop.best_epoch} (val R@20 {stop.best:.4f})' if stop.best_epoch else
                  'no validation ran (--epochs below --eval-every): the last parameters')
        if test is not None:
            print(f"{chosen} | test "
                  + ' '.join(f'{k} {v:.4f}' for k, v in test.items()) + f' | {test_s:.2f}s')
        result = self.result(test, by_group, test_s)
        write_result(result, getattr(args, 'out', None))
        if self.reason == 'non-finite loss':
            saved = f' (result written to {args.out})' if getattr(args, 'out', None) else ''
            raise Diverged(f'training diverged: {self.detail}{saved}')
        return result

    def result(self, test=None, by_group=None, test_s=None):
        """The result dict of the run so far (what --out holds)."""
        stop, history = self.stop, self.history
        return {'config': vars(self.args), 'dataset': self.data.summary(),
                'device': str(self.device), 'torch_threads': torch.get_num_threads(),
                'history': history, 'best_epoch': stop.best_epoch, 'best_val_recall20': stop.best,
                'test': test,
                'sec_per_epoch': statistics.median([h['train_s'] for h in history]) if history else None,
                'sec_per_eval': statistics.median([h['eval_s'] for h in history if 'eval_s' in h] or [0]),
                'stop_reason': self.reason, 'stop_epoch': self.last, 'stop_detail': self.detail,
                'test_by_activity': by_group, 'test_eval_s': test_s,
                'wall_s': time.time() - self.t_start,  # train + validate + test
                'versions': versions(), 'git': self.code, 'argv': list(sys.argv)}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; TrainLog has written the epochs so far to --out."""


@contextlib.contextmanager
def interruptible(log):
    """Around a model file's epoch loop: a Ctrl-C (KeyboardInterrupt) inside it has the
    TrainLog write the epochs so far (log.interrupted()) and ends in Interrupted, whose
    message is the one line the model file prints (on_interrupt)."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(log.interrupted()) from None


def on_interrupt(error):
    """A model file's answer to Ctrl-C: its one line on stderr, and the exit status a shell
    gives a process stopped by Ctrl-C (128 + SIGINT = 130)."""
    print(f'interrupted: {error}' if isinstance(error, Interrupted) else
          'interrupted by Ctrl-C; no result written', file=sys.stderr)
    return 130


def versions():
    """The library versions a result depends on."""
    return {'python': platform.python_version(), 'torch': torch.__version__,
            'numpy': np.__version__, 'scipy': scipy.__version__}


def git_state(folder=Path(__file__).resolve().parent):
    """{'commit': HEAD of the code's repository, 'dirty': tracked files modified}, or None
    outside git (or without git installed)."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return None
        status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                                cwd=folder, capture_output=True, text=True, timeout=20)
        return {'commit': head.stdout.strip(), 'dirty': bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def write_result(result, path):
    """Write the result as JSON, atomically: a temporary file in the same folder, renamed
    over `path` only when complete, so an interrupted write never leaves half a file."""
    if path:
        tmp = f'{path}.{os.getpid()}.tmp'  # in the same folder, so os.replace is atomic
        try:
            with open(tmp, 'w') as f:
                json.dump(result, f, indent=1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):  # the write failed or was interrupted
                os.unlink(tmp)
        print(f'wrote {path}')


def seed_all(seed):
    """Seed torch (CPU and CUDA) and return a numpy Generator for the samplers."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


if __name__ == '__main__':  # a tiny self-check on a hand-worked case
    argparse.ArgumentParser(description='Hand-worked check of Recall/NDCG.', allow_abbrev=False).parse_args()
    topk = torch.tensor([[3, 1, 0]])
    g = torch.tensor([[True, False, False, True]])           # G_u = {0, 3}
    m = recall_ndcg(topk, g, torch.tensor([2.0]), ks=(3,))
    # hits at ranks 0 and 2: recall 2/2; DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    print(m, 'expected ndcg', 1.5 / (1 + 1 / np.log2(3)))
