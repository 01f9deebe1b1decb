"""Why L-DiffRec + ProEx sits on a plateau on ml100k: short runs of variants, one seed.

    python bench/ldiffrec_plateau.py --data-dir ../shared/datasets

On ml100k most `ldiffrec.py --proex` runs stay near validation R@20 .17 for hundreds of
epochs while the base climbs past .30 (bench/results/protocol_ml100k_ldiffrec.json). This
script trains --epochs epochs (default 60) of each variant with the same seed and keeps the
validation curve (every 5 epochs, the model file's default):
  base                the L-DiffRec base model;
  proex               ldiffrec.py --proex (lambda1 0.3, beta 0.5);
  beta1, lambda1-0,   Eq. 11 with the prior KL only / without Eq. 11 /
  no-var-reg,         without Var_e and L_reg (lambda3 = lambda2 = 0) /
  no-mixing           one environment, the mean of the K profiles;
  var/100             --proex with every profile variance sigma^2_{u,k} of Eq. 6 divided by
                      100, a diagnostic (not a method): it tests whether the noise that Eq. 12
                      adds to the latent (a sample of N(mu_e, sigma^2_e), about unit variance
                      per dimension at initialisation) is what holds the model back.
Writes bench/results/ldiffrec_plateau.json (git commit and command line).
"""
import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import ldiffrec  # noqa: E402
import proex_core as P  # noqa: E402
from eval import git_state  # noqa: E402

VARIANTS = {'base': [], 'proex': ['--proex'], 'beta1': ['--proex', '--beta', '1'],
            'lambda1-0': ['--proex', '--lambda1', '0'],
            'no-var-reg': ['--proex', '--lambda3', '0', '--lambda2', '0'],
            'no-mixing': ['--proex', '--no-mixing'], 'var/100': ['--proex']}


def run(argv, var_scale=1.0):
    """One short run; var_scale multiplies the variances returned by Eq. 6's mapping."""
    forward = P.AggregationMapping.forward
    if var_scale != 1.0:
        P.AggregationMapping.forward = lambda self, c: (lambda mu, var: (mu, var * var_scale))(*forward(self, c))
    try:
        t0 = time.time()
        r = ldiffrec.main(ldiffrec.parse_args(argv))
    finally:
        P.AggregationMapping.forward = forward
    curve = [(h['epoch'], round(h['val_recall20'], 4)) for h in r['history'] if h.get('val_recall20') is not None]
    return {'argv': argv, 'var_scale': var_scale, 'val_curve': curve, 'best_val_recall20': r['best_val_recall20'],
            'wall_s': round(time.time() - t0, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=str(ROOT / 'bench/results/ldiffrec_plateau.json'))
    a = p.parse_args()
    common = ['--dataset', 'ml100k', '--data-dir', a.data_dir, '--seed', str(a.seed), '--epochs',
              str(a.epochs), '--patience', str(a.epochs), '--threads', str(a.threads)]
    out = {'command': shlex.join([sys.executable] + sys.argv), 'git': git_state(ROOT), 'runs': {}}
    for name, flags in VARIANTS.items():
        out['runs'][name] = run(common + flags, 0.01 if name == 'var/100' else 1.0)
        print(name, out['runs'][name]['val_curve'], flush=True)
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
