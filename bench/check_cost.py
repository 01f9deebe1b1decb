"""What the input checks at proex_core's entry points cost per batch: the checks alone
(check_shape and as_ids as discriminative_objective and generative_objective call them)
against the whole objective, forward and backward, on batches of ml100k's size, one thread.

    python bench/check_cost.py [--repeats 30]

Writes bench/results/check_cost.json (commit and command line named).
"""
import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import proex_core as P  # noqa: E402
from eval import ArgumentParser, git_state, versions  # noqa: E402


def seconds(fn, repeats):
    """Median wall seconds of fn() over repeats calls."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def disc_case(B=4096, K=4, d=32):
    z = [torch.randn(B, d, requires_grad=True) for _ in range(3)]
    c = [torch.randn(K, B, d, requires_grad=True) for _ in range(3)]
    ids = torch.randint(943, (B,)), torch.randint(1682, (B,))

    def objective():
        P.discriminative_objective(*z, *c, users=ids[0], pos_items=ids[1],
                                   rng=np.random.default_rng(0))[0].backward()

    def checks():
        for name, t in zip(('z_u', 'z_i', 'z_j'), z):
            P.check_shape(name, t, (B, d), '[B, d]', f'B, d = {B}, {d}')
        for name, t in zip(('c_u', 'c_i', 'c_j'), c):
            P.check_shape(name, t, (K, B, d), '[K, B, d]', f'B = {B}, d = {d}, K = {K}')
        for name, t in zip(('users', 'pos_items'), ids):
            P.check_shape(name, P.as_ids(t, name), (B,), '[B]', f'B = {B}')
    return objective, checks


def gen_case(B=943, K=4, d=200, I=1682):
    mu, logvar = (torch.randn(B, d, requires_grad=True) for _ in range(2))
    mu_k, logvar_k = (torch.randn(K, B, d, requires_grad=True) for _ in range(2))
    dec = torch.nn.Linear(d, I)
    x = (torch.rand(B, I) < 0.03).float()

    def objective():
        P.generative_objective(lambda z: P.multinomial_nll(dec(z), x), mu, logvar, mu_k, logvar_k,
                               rng=np.random.default_rng(0))[0].backward()

    def checks():
        P.check_shape('mu', mu, (B, d), '[B, d]')
        P.check_shape('logvar', logvar, (B, d), '[B, d]', f'B, d = {B}, {d}')
        for name, t in (('mu_k', mu_k), ('logvar_k', logvar_k)):
            P.check_shape(name, t, (K, B, d), '[K, B, d]', f'B = {B}, d = {d}, K = {K}')
    return objective, checks


def main():
    p = ArgumentParser(prog='bench/check_cost.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=int, default=30)
    p.add_argument('--out', default=str(ROOT / 'bench/results/check_cost.json'))
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = {'git': git_state(), 'versions': versions(), 'command': shlex.join(['python', *sys.argv]),
           'repeats': a.repeats, 'cases': {}}
    for name, case in (('discriminative, B 4096, K 4, d 32', disc_case),
                       ('generative, B 943, K 4, d 200, I 1682', gen_case)):
        objective, checks = case()
        obj_s, chk_s = seconds(objective, a.repeats), seconds(checks, a.repeats * 10)
        out['cases'][name] = {'objective_s': obj_s, 'checks_s': chk_s, 'share': chk_s / obj_s}
        print(name, json.dumps(out['cases'][name]), flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
