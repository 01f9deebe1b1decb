"""Full-ranking evaluation, the training protocol and the flags shared by the six models
(ProEx, KDD'26; metrics as in RLMRec, which produced the paper's numbers). Three parts:

1. metrics            recall_ndcg (one batch of ranked lists, a pure function), evaluate (all
                      users of a split, batched, CPU or CUDA), by_activity (Fig. 12's groups)
2. training protocol  EarlyStopping (validation Recall@20, strict improvement, the best
                      parameters kept); TrainLog around each model file's epoch loop (progress
                      line, validation, why it stopped, the test split once, the result file);
                      start_run, interruptible / on_interrupt (Ctrl-C: the epochs so far to
                      --out, one line), git_state, write_result
3. shared flags       ArgumentParser / fail (every bad value is one `error:` line naming the
                      flag and --help), int_range / float_range / out_file / device_name,
                      add_train_args; ProEx's flags: add_proex_args / resolve_proex_args
                      (per-dataset defaults PAPER_DATASETS, --released, the Fig. 6 ablations,
                      the single-profile baselines --rlmrec-con and --dmrec) and switches,
                      which maps them onto proex_core's named variants
A hand-worked self-check runs under `python eval.py`.

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


# ================================================================ 1. metrics

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


# ================================================================ 2. the training protocol

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


# small datasets whose default is one torch thread (--threads): their small matrices gain
# nothing from more threads, and beside other jobs they run many times slower with them
ONE_THREAD = ('synthetic', 'ml100k', 'ml100k-grouplens')


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
    """{'commit': HEAD of the code's repository, 'dirty': tracked files modified, result files
    under bench/results/ aside}, or None outside git (or without git installed)."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return None
        status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.',
                                 ':(exclude)bench/results'],
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


# ================================================================ 3. the shared flags

# ---------------------------------------------------------------- argparse types
# Every entry point builds its parser with ArgumentParser below, so a bad value is one line,
# "error: argument --flag: msg (see: python prog --help)", and no usage block.

class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 1) and no abbreviated flags (--epoch is
    not --epochs); an unknown flag names the closest known one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('allow_abbrev', False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        unknown = re.match(r'unrecognized arguments: (\S+)', message)
        if unknown:
            import difflib
            known = [o.lstrip('-') for a in self._actions for o in a.option_strings]
            near = difflib.get_close_matches(unknown[1].split('=')[0].lstrip('-'), known, n=1)
            message += f'; did you mean --{near[0]}?' if near else ''
        fail(self, message)


def fail(parser, message):
    """One `error:` line on stderr naming --help, exit status 1 (SystemExit with a message),
    for argparse's own errors and for the checks made after parsing."""
    raise SystemExit(f'error: {message} (see: python {parser.prog} --help)')


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


def add_train_args(p, epochs=1000, lr=1e-3, batch=4096, eval_every=3, optimizer='Adam'):
    """Flags every model file shares: data, device, seed, protocol and output."""
    p.add_argument('--dataset', default='synthetic', type=D.known_name,  # 'Book' -> 'book'
                   help='book (Amazon-Book), yelp, steam: the '
                   'data of RLMRec (Ren et al., WWW\'24, the code behind the paper\'s numbers), '
                   'downloaded into the data root when missing; ml100k: a prepared MovieLens-100K '
                   'folder; ml100k-grouplens: built from the GroupLens ML-100K archive when '
                   'missing; synthetic: generated in memory, no files, 3000 users x 2000 items; '
                   'or any folder under the data root that holds trn/val/tst_mat.pkl; the known '
                   'names match in any case, a folder name exactly (default: synthetic)')
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


# ----------------------------------------------------------------------------
# ProEx's command-line flags, shared by the six model files (the method is proex_core.py)

# ProEx's values on the paper's datasets for the discriminative models: the paper states
# K = 4, lambda3 = 1, tau = 0.2 and Eq. 7 as printed; E, alpha, lambda2 and lambda1 are the
# released configuration's (BlueGhostYi/ProRec, lightgcn_proex.py and its amazon/yelp/steam
# configs: inv_weight aside, E 3/3/2, alpha 0.1, ex_weight 0.4/0.4/2.0, alignment off)
PAPER_DATASETS = {
    'book':  dict(envs=3, alpha=0.1, lambda2=0.4, lambda1=0.0, infonce_reg=False),
    'yelp':  dict(envs=3, alpha=0.1, lambda2=0.4, lambda1=0.0, infonce_reg=False),
    'steam': dict(envs=2, alpha=0.1, lambda2=2.0, lambda1=0.0, infonce_reg=False),
}


def proex_dataset_defaults(dataset, tuned):
    """The ProEx values a discriminative model file starts from on `dataset`: the paper's
    and released values on book, yelp and steam (PAPER_DATASETS), else `tuned`, the model
    file's own choice (validation on ml100k)."""
    return PAPER_DATASETS.get(dataset, tuned)


def add_proex_args(parser, generative=False, lambda1=0.0, lambda2=0.01, envs=3, alpha=0.1,
                   infonce_reg=False, form_why='', chosen='', released_also='', tuned=None,
                   dmrec=False):
    """Add the ProEx flags to an argparse parser (call resolve_proex_args after parsing).
    generative=True: Eq. 11 carries the base model's KL to the prior, so --lambda1 is that
    KL's weight (pass the base's, e.g. 1 for Mult-VAE) and must not default to 0; --beta and
    --sum-of-samples exist only then (a discriminative parser does not know them).
    lambda2, envs, alpha, infonce_reg (the form of Eq. 7, discriminative only): this model
    file's defaults; chosen, form_why: where they come from, in words.
    released_also: what --released sets in this model file besides the shared weights.
    The single-profile baselines of the paper's Tables 2-3 are flags of the same group:
    --rlmrec-con (discriminative) and, with dmrec=True (Mult-VAE), --dmrec.
    tuned (discriminative): a dict of envs, alpha, lambda1, lambda2, infonce_reg, the file's
    values for every dataset but book, yelp and steam (PAPER_DATASETS); those flags then
    default to None and resolve_proex_args(..., tuned=tuned) fills them for --dataset."""
    if tuned is not None:
        lambda1, lambda2, envs, alpha, infonce_reg = (tuned[k] for k in (
            'lambda1', 'lambda2', 'envs', 'alpha', 'infonce_reg'))
        book, steam = PAPER_DATASETS['book'], PAPER_DATASETS['steam']
        by_set = lambda k, fmt='{:g}': (  # noqa: E731  help text: where each value comes from
            f"book and yelp {fmt.format(book[k])}, steam {fmt.format(steam[k])} (the released "
            f"configuration); ml100k, synthetic and any other dataset {fmt.format(tuned[k])}")
    chosen = f'; {chosen}' if chosen else ''
    said = lambda k, value: (f'default: {by_set(k)}{chosen}' if tuned is not None  # noqa: E731
                             else f'default {value}{chosen or ", not tuned here"}')
    unset = lambda value: None if tuned is not None else value  # noqa: E731  filled per dataset
    g = parser.add_argument_group('ProEx', (  # the model files' help keeps line breaks as written
        '"released" below means the authors\' released ProEx code, BlueGhostYi/ProRec on\n'
        'GitHub (lightgcn_proex.py); where it differs from the paper, the paper is the\n'
        'default and a flag gives the released behaviour.'))
    g.add_argument('--proex', action='store_true',
                   help='train with ProEx (Alg. 1) and predict with Alg. 2; without it the base '
                        'model trains and the other flags of this group have no effect')
    g.add_argument('--envs', type=int, default=unset(envs),
                   help='E, number of environments, i.e. random mixtures of the K profiles '
                        f"(Eq. 8-10; paper 2..8; {said('envs', envs)})")
    g.add_argument('--alpha', type=float, default=unset(alpha),
                   help='Dirichlet concentration of the mixing weights (Eq. 10; paper 0.1, 0.2 '
                        f"or 0.3; {said('alpha', alpha)})")
    g.add_argument('--lambda1', type=float, default=unset(lambda1),
                   help="alignment weight of Eq. 13 (paper range [0, 1]; " + (
                       f'default {lambda1:g}) -- Eq. 11 holds the KL to the prior too, so with '
                       "--beta 1 this is the base model's KL weight" if generative else
                       f"{said('lambda1', lambda1) if tuned is not None else f'default {lambda1:g}'}"
                       ") -- InfoNCE between each distinct user's (positive's, "
                       "negative's) vector and its mixed profile, over the batch's distinct ones; "
                       "RLMRec's contrastive alignment weighs 1e-2 (steam 1e-3), and 0.1 is too "
                       "large a weight for this term (it outweighs BPR), not a wrong form "
                       "(bench/RESULTS.md)"))
    g.add_argument('--lambda2', type=float, default=unset(lambda2),
                   help='weight of L_reg, the term that keeps the K profiles of an entity apart '
                        '(Eq. 7, 14; paper range [0, 2]; ' + (
                            said('lambda2', lambda2)) +
                        '; --released: 0.4)')
    g.add_argument('--lambda3', type=float, default=1.0,
                   help='weight of Var_e, the variance of the loss across environments (Eq. 14; '
                        "default %(default)s as the paper; the released code's inv_weight is 10)")
    if generative:
        g.add_argument('--beta', type=float, default=0.5,
                       help='prior weight of Eq. 11: beta pulls the latent Gaussian towards '
                            "N(0, I), 1 - beta towards the environment's Gaussian "
                            '(default %(default)s)')
    g.add_argument('--tau', type=float, default=0.2,
                   help='temperature of Eq. 7 and of the InfoNCE alignment (default %(default)s)')
    if generative:
        g.add_argument('--profile-input', choices=['mean', 'dropped-sum'], default='mean',
                       help="input of Eq. 6's mapping: 'mean' of the profile vectors of the user's "
                            "train items plus the user's own (the default, the one validation "
                            "picks); 'dropped-sum': their sum "
                            "over the items left after input dropout, as DMRec, the authors' "
                            "generative code in BlueGhostYi/ProRec")
    g.add_argument('--profile-dim', type=int, default=None,
                   help='CPU option, not in the paper: project the users\' and the items\' profile '
                        'vectors onto the top N principal directions of both together (one basis, '
                        'so that one mapping reads both sides alike) at load (default: full width)')
    g.add_argument('--profiles', type=str, default='all',
                   help="profile views used: 'all' or indices like '0,3', where 0 is the "
                        "original profile (OP) and k >= 1 the k-th extrapolated one (NP#k) "
                        '(default %(default)s)')
    if generative:
        g.add_argument('--align-fused', action=argparse.BooleanOptionalAction, default=False,
                       help="DMRec's code: Eq. 11 aligns the fused Gaussian of Eq. 12 with the "
                            "environment's; the environment's mean then cancels from it, so it "
                            'only shrinks the posterior mean and never moves the profile means '
                            '(default --no-align-fused: the posterior of Eq. 2, as Sec. 2.4)')
        g.add_argument('--sum-of-samples', action='store_true',
                       help='for study, not the default: Eq. 12 as a sample of the posterior '
                            "plus a sample of the environment's Gaussian (default: the two "
                            "Gaussians fused, means and log-variances added, as DMRec's code)")
    # ablations of the paper's Fig. 6
    g.add_argument('--no-var', action='store_true',
                   help='ablation: no variance term, first environment only')
    g.add_argument('--no-reg', action='store_true', help='ablation: no L_reg (lambda2 = 0)')
    g.add_argument('--no-align', action='store_true', help='ablation: no alignment (' + (
        'beta = 1: only the KL to the prior is left)' if generative else 'lambda1 = 0)'))
    g.add_argument('--no-mixing', action='store_true',
                   help='ablation: mean pooling of the K profiles instead of environments')
    if not generative:
        form = 'InfoNCE' if infonce_reg else 'as printed'
        where = (f'book, yelp and steam as printed (the paper); ml100k, synthetic and any other '
                 f'dataset {form}' if tuned is not None else form)
        g.add_argument('--infonce-reg', action=argparse.BooleanOptionalAction,
                       default=unset(infonce_reg),
                       help="Eq. 7 with exp(-1/tau) where the paper prints exp(+1/tau): the "
                            'InfoNCE form, whose positive is a profile with itself; '
                            '--no-infonce-reg: as printed; acts only with --lambda2 > 0 '
                            f"(default: {where}{'; ' + form_why if form_why else ''})")
    # released-code behaviours (BlueGhostYi/ProRec lightgcn_proex.py)
    g.add_argument('--uniformity-reg', action='store_true',
                   help='released: uniformity InfoNCE per profile instead of Eq. 7 (needs '
                        '--lambda2 > 0 or --released)')
    g.add_argument('--shared-mixing', action='store_true',
                   help='released: one Dirichlet draw per environment for the whole batch')
    g.add_argument('--unbiased-var', action='store_true',
                   help='released: unbiased Var_e (divide by E - 1)')
    g.add_argument('--var-of-means', action='store_true',
                   help='released: Var_e of the batch-mean environment losses instead of the '
                        'per-row variance averaged over the batch (Alg. 1)')
    if not generative:  # Table 2's RLMRec-C: one profile aligned, not fused
        g.add_argument('--rlmrec-con', action='store_true',
                       help="instead of ProEx, RLMRec-C (Ren et al., WWW'24; the paper's Table 2): "
                            'BPR plus the InfoNCE between the collaborative vectors and ONE mapped '
                            'profile (the OP, or the view --profiles k), for users, positive and '
                            'negative items (HKUDS/RLMRec lightgcn_plus.py); the profile is not '
                            'added to the vectors and not used at inference')
        g.add_argument('--kd-weight', type=float, default=None,
                       help="RLMRec-C's weight of the InfoNCE (default: steam 1e-3; book, yelp "
                            "and every other dataset 1e-2, RLMRec's values)")
        g.add_argument('--kd-temp', type=float, default=None,
                       help="RLMRec-C's temperature (default: steam 0.1; book, yelp and every "
                            "other dataset 0.2, RLMRec's values)")
    if dmrec:  # Table 3's DMRec-M: one profile, one environment, Eq. 11 on the fused Gaussian
        g.add_argument('--dmrec', action='store_true',
                       help="DMRec-M (the ProEx authors' earlier generative method, the paper's "
                            'Table 3; BlueGhostYi/ProRec mult_vae_mddm.py) as a flag combination: '
                            '--proex with one profile (the OP, or the view --profiles k), one '
                            'environment and no Var_e (envs 1, lambda3 0), no L_reg (lambda2 0), '
                            'the KL terms at weight 1 (lambda1 1) on the fused Gaussian '
                            '(--align-fused) and the dropped-sum input (--profile-input '
                            'dropped-sum); --beta is its beta. Giving one of the values it sets '
                            'another value is an error')
    owned = 'lambda2 0.4, lambda3 10, envs 3' + (
        '; lambda1 is kept, as it weights the KL to the prior here' if generative
        else ', lambda1 0')
    g.add_argument('--released', action='store_true',
                   help='with --proex, all released behaviours: --uniformity-reg --shared-mixing '
                        f'--unbiased-var --var-of-means, {owned}{released_also}. Giving one of '
                        'the values it sets another value is an error')
    return parser


# what --released sets (resolve_proex_args); lambda1 only for the discriminative models
RELEASED = dict(lambda2=0.4, lambda3=10.0, envs=3)


def resolve_proex_args(parser, argv=None, generative=False, tuned=None):
    """Parse argv with the model file's parser (add_proex_args called on it), then apply
    --released and the ablation switches; returns the Namespace.
    generative=True: 'w/o alignment' drops the profile part of Eq. 11 (beta = 1) but keeps
    lambda1, the weight of the KL to the prior (lambda1 = 0 would drop the VAE's KL too).
    tuned: the dict given to add_proex_args; fills the flags left unset for --dataset.
    Without --proex the ProEx flags are only reported as having no effect, not checked."""
    a = parser.parse_args(argv)
    if getattr(a, 'dmrec', False):
        resolve_dmrec(parser, a)
    proex_flags = vars(add_proex_args(argparse.ArgumentParser(), generative).parse_args([]))
    defaults = argparse.Namespace(**{k: parser.get_default(k) for k in proex_flags})  # this file's
    for k, v in proex_dataset_defaults(a.dataset, tuned).items() if tuned is not None else ():
        setattr(defaults, k, v)  # this file's value on this dataset
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not generative:
        resolve_rlmrec(parser, a)
    if not a.proex:  # the ProEx flags only act with --proex: one note, then their defaults
        used = (('rlmrec_con', 'profiles', 'profile_dim', 'kd_weight', 'kd_temp')
                if getattr(a, 'rlmrec_con', False) else ())  # the baseline and what it reads
        given = [k for k, v in vars(defaults).items() if k not in ('proex', 'lambda1') + used
                 and getattr(a, k) != v]
        if given:
            print(f"note: {', '.join('--' + k.replace('_', '-') for k in given)} "
                  f"{'has' if len(given) == 1 else 'have'} no effect without --proex")
        for k in given:
            setattr(a, k, getattr(defaults, k))
    rules = [('envs', a.envs >= 1, 'an integer >= 1 (the number E of environments)'),
             ('alpha', a.alpha > 0, '> 0 (the Dirichlet concentration of Eq. 10)'),
             ('lambda1', a.lambda1 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('lambda2', a.lambda2 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('lambda3', a.lambda3 >= 0, '>= 0 (a loss weight of Eq. 14)'),
             ('tau', a.tau > 0, '> 0 (a temperature, Eq. 7)')]
    if generative:  # the discriminative parsers have no --beta
        rules.append(('beta', 0 <= a.beta <= 1, 'in [0, 1] (the prior weight of Eq. 11)'))
    for flag, ok, need in rules:  # one `error:` line naming the flag
        if not (ok and np.isfinite(getattr(a, flag))):
            fail(parser, f'argument --{flag}: must be {need}, got {getattr(a, flag)}')
    # a form of Eq. 7 given where it would change nothing is an error, not a silent no-op
    sign = [] if generative or a.infonce_reg == defaults.infonce_reg else \
        ['--infonce-reg' if a.infonce_reg else '--no-infonce-reg']  # given, not the default
    if a.proex and sign and (a.uniformity_reg or a.released):
        fail(parser, f'argument {sign[0]}: --uniformity-reg (or --released) '
                         'replaces Eq. 7, so its sign would be ignored; give one of them')
    form = sign + ['--uniformity-reg'] * a.uniformity_reg
    if a.proex and form and a.lambda2 == 0 and not a.released:  # L_reg off: the form is unused
        fail(parser, f'argument {form[0]}: L_reg is off (lambda2 = 0), so its '
                         'form would change nothing; set --lambda2')
    if a.profile_dim is not None and a.profile_dim < 1:
        fail(parser, f'argument --profile-dim: must be an integer >= 1, got {a.profile_dim}')
    owned = dict(RELEASED, **({} if generative else {'lambda1': 0.0}))
    for k, v in owned.items() if a.released and a.proex else ():  # a value --released overwrites
        if getattr(a, k) not in (getattr(defaults, k), v):
            fail(parser, f'argument --{k}: --released sets {k} {v:g} (the released '
                             f'code\'s value), so --{k} {getattr(a, k):g} would be ignored; drop '
                             f'--{k} or --released')
    if a.proex and generative and a.sum_of_samples and a.align_fused:
        fail(parser, 'argument --align-fused: --sum-of-samples samples the posterior '
                         'and the environment apart, so there is no fused Gaussian to align; '
                         'give one of them')
    if a.released:  # the released LightGCN also switches its InfoNCE alignment off (lambda1)
        a.uniformity_reg, a.shared_mixing, a.unbiased_var, a.var_of_means = True, True, True, True
        for k, v in owned.items():
            setattr(a, k, v)
    if a.no_var:
        a.lambda3, a.envs = 0.0, 1
    if a.no_reg:  # refused when it would change nothing, as --no-align below
        if a.lambda2 == 0:
            fail(parser, 'argument --no-reg: L_reg is already off (lambda2 = 0), so '
                             'this run would equal plain --proex; drop --no-reg, or set --lambda2')
        a.lambda2 = 0.0
    if a.no_align:  # an ablation that would change nothing is refused, not run as --proex
        weight, off = ('beta', 1.0) if generative else ('lambda1', 0.0)
        if getattr(a, weight) == off:
            fail(parser, f'argument --no-align: the alignment is already off '
                             f'({weight} = {off:g}{", as in --released" if a.released else ""}),'
                             f' so this run would equal plain --proex; drop --no-align, or set '
                             f'--{weight} to turn the alignment on')
        setattr(a, weight, off)
    if a.no_mixing:
        a.envs = 1
    tau_used = a.lambda2 > 0 or (not generative and a.lambda1 > 0)  # Eq. 7, Eq. 13's InfoNCE
    if a.proex and a.tau != defaults.tau and not tau_used:
        print('note: --tau has no effect here: it is the temperature of Eq. 7' +
              ('' if generative else " and of Eq. 13's InfoNCE") + ', and ' +
              ('lambda2 = 0' if generative else 'lambda1 = lambda2 = 0'))
    return a


# RLMRec's kd_weight and kd_temperature (HKUDS/RLMRec, lightgcn_plus.yml per dataset);
# every other dataset takes book's (amazon's) values
RLMREC = {'book': (1e-2, 0.2), 'yelp': (1e-2, 0.2), 'steam': (1e-3, 0.1)}


def one_view(parser, a, flag):
    """A single-profile baseline reads one view: --profiles k (default 0, the OP)."""
    a.profiles = '0' if a.profiles == 'all' else a.profiles
    if not re.fullmatch(r'\d+', a.profiles):
        fail(parser, f'argument --profiles: {flag} takes one profile view, an index k >= 0 '
                     f'(0 = the OP), got {a.profiles!r}')


def resolve_rlmrec(parser, a):
    """--rlmrec-con: one view, RLMRec's weight and temperature for --dataset unless given."""
    if not a.rlmrec_con:
        for k in ('kd_weight', 'kd_temp'):
            if getattr(a, k) is not None:
                print(f"note: --{k.replace('_', '-')} has no effect without --rlmrec-con")
        return
    if a.proex:
        fail(parser, 'argument --rlmrec-con: a baseline instead of ProEx; give one of --proex '
                     'and --rlmrec-con')
    one_view(parser, a, '--rlmrec-con')
    weight, temp = RLMREC.get(a.dataset, RLMREC['book'])
    a.kd_weight = weight if a.kd_weight is None else a.kd_weight
    a.kd_temp = temp if a.kd_temp is None else a.kd_temp
    if not (a.kd_weight >= 0 and a.kd_temp > 0):
        fail(parser, f'argument --kd-weight/--kd-temp: need a weight >= 0 and a temperature > 0, '
                     f'got {a.kd_weight} and {a.kd_temp}')


# what --dmrec sets (DMRec-M: loss = NLL + beta KL(fused || N(0, I)) + (1 - beta) KL(fused ||
# profile Gaussian), one profile, no environments)
DMREC = dict(envs=1, lambda1=1.0, lambda2=0.0, lambda3=0.0)


def resolve_dmrec(parser, a):
    """--dmrec as the flag combination its help names; a conflicting value is an error."""
    for k, v in DMREC.items():
        if getattr(a, k) not in (parser.get_default(k), v):
            fail(parser, f'argument --{k}: --dmrec sets {k} {v:g}, so --{k} {getattr(a, k):g} '
                         f'would be ignored; drop --{k} or --dmrec')
    for flag in ('released', 'no_var', 'no_reg', 'no_align', 'no_mixing', 'sum_of_samples'):
        if getattr(a, flag):
            fail(parser, f"argument --{flag.replace('_', '-')}: not with --dmrec, which fixes "
                         f'the environments and the alignment')
    one_view(parser, a, '--dmrec')
    a.proex, a.align_fused, a.profile_input = True, True, 'dropped-sum'
    for k, v in DMREC.items():
        setattr(a, k, v)


def switches(args, generative=False):
    """The flags onto proex_core's named variants (all the paper's by default), in one place.
    The weights and sizes are passed by name."""
    kw = dict(mixing='mean' if args.no_mixing else 'shared' if args.shared_mixing else 'per-entity',
              var_e={(False, False): 'paper', (True, False): 'unbiased', (False, True): 'of-means',
                     (True, True): 'released'}[(args.unbiased_var, args.var_of_means)])
    if generative:
        return dict(kw, reg='uniformity' if args.uniformity_reg else 'printed',
                    fusion='sum-of-samples' if args.sum_of_samples else 'gaussians',
                    align='fused' if args.align_fused else 'posterior')
    return dict(kw, reg='uniformity' if args.uniformity_reg else
                'infonce' if args.infonce_reg else 'printed')


# ================================================================ self-check

if __name__ == '__main__':  # a tiny self-check on a hand-worked case
    ArgumentParser(description='Hand-worked check of Recall/NDCG.').parse_args()
    topk = torch.tensor([[3, 1, 0]])
    g = torch.tensor([[True, False, False, True]])           # G_u = {0, 3}
    m = recall_ndcg(topk, g, torch.tensor([2.0]), ks=(3,))
    # hits at ranks 0 and 2: recall 2/2; DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    print(m, 'expected ndcg', 1.5 / (1 + 1 / np.log2(3)))
