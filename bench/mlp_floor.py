"""How much of a LightGCN + ProEx epoch the mapping MLP of Eq. 6 needs by itself.

    python bench/mlp_floor.py --data-dir ../shared/datasets       # run alone on the machine

For one epoch of BPR batches it times, with the model file's own pieces:
  base   the LightGCN epoch (propagation, BPR, L2, Adam);
  mlp    only f_psi (proex_core.DirectMapping) applied to the K views of each batch's distinct
         users and items, forward and backward, plus its Adam step: what ProEx cannot skip,
         since the MLP's weights change every step;
  proex  the whole ProEx epoch (lightgcn.py --proex).
mlp / base + 1 is a floor for the ProEx / base ratio of an epoch on this device, whatever the
rest of the step costs. Writes bench/results/mlp_floor.json (git commit and command line).
"""
import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data as D  # noqa: E402
import lightgcn  # noqa: E402
import proex_core as P  # noqa: E402
from eval import ArgumentParser, git_state  # noqa: E402


def mlp_epoch(prof, train, batch, rng):
    """One epoch of the Eq. 6 MLP alone over each batch's distinct users and items."""
    opt = torch.optim.Adam(prof.parameters(), lr=1e-3)
    t0 = time.time()
    for u, i, j in D.bpr_batches(train, batch, rng):
        c_u, c_i, c_j = prof(u, i, j)                                # [K, B, d] each
        loss = c_u.sum() + c_i.sum() + c_j.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.time() - t0


def model_epoch(argv):
    """Median seconds per training epoch of lightgcn.py with these flags (3 epochs)."""
    r = lightgcn.main(lightgcn.parse_args(argv + ['--epochs', '3', '--eval-every', '3']))
    return r['sec_per_epoch']


def main():
    p = ArgumentParser(prog='bench/mlp_floor.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--dataset', default='ml100k')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=str(ROOT / 'bench/results/mlp_floor.json'))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    common = ['--dataset', a.dataset, '--data-dir', a.data_dir, '--threads', str(a.threads), '--seed', '1']
    data = D.load_dataset(a.dataset, a.data_dir, profiles=True)
    out = {'dataset': a.dataset, 'threads': a.threads, 'git': git_state(),
           'command': shlex.join(['python'] + sys.argv), 'by_width': {}}
    base = model_epoch(common)
    for width in (None, 64):  # the views' own width, and --profile-dim 64
        torch.manual_seed(1)
        prof = P.ProfileEncoder(data.usr_prf, data.itm_prf, 32, width)
        mlp = float(np.median([mlp_epoch(prof, data.train, 4096, np.random.default_rng(s)) for s in range(3)]))
        proex = model_epoch(common + ['--proex'] + ([] if width is None else ['--profile-dim', str(width)]))
        d_s = prof.c_users.shape[-1]
        out['by_width'][str(d_s)] = {'base_s': base, 'mlp_s': mlp, 'proex_s': proex,
                                     'floor_ratio': 1 + mlp / base, 'ratio': proex / base,
                                     'mlp_share_of_proex': mlp / proex}
        print(f'd_s {d_s}: base {base:.3f} s, MLP alone {mlp:.3f} s, ProEx {proex:.3f} s per epoch; '
              f'ratio {proex / base:.1f}x, floor {1 + mlp / base:.1f}x', flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print('wrote', a.out)


if __name__ == '__main__':
    main()
