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
                      per dimension at initialisation) is what holds the model back;
  gauss/10            the same with mu_{u,k} / 10 and sigma^2_{u,k} / 100: the whole profile
                      Gaussian ten times narrower and closer to 0, so the profile part of the
                      fused latent starts small beside the encoder's z.
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
from eval import ArgumentParser, git_state  # noqa: E402

VARIANTS = {'base': [], 'proex': ['--proex'], 'beta1': ['--proex', '--beta', '1'],
            'lambda1-0': ['--proex', '--lambda1', '0'],
            'no-var-reg': ['--proex', '--lambda3', '0', '--lambda2', '0'],
            'no-mixing': ['--proex', '--no-mixing'], 'var/100': ['--proex'], 'gauss/10': ['--proex']}
SCALES = {'var/100': (1.0, 0.01), 'gauss/10': (0.1, 0.01)}  # (mu, sigma^2) multipliers of Eq. 6


def run(argv, scales=(1.0, 1.0)):
    """One short run; scales multiply the means and variances returned by Eq. 6's mapping."""
    forward = P.AggregationMapping.forward
    if scales != (1.0, 1.0):
        P.AggregationMapping.forward = lambda self, c: tuple(t * s for t, s in zip(forward(self, c), scales))
    try:
        t0 = time.time()
        r = ldiffrec.main(ldiffrec.parse_args(argv))
    finally:
        P.AggregationMapping.forward = forward
    curve = [(h['epoch'], round(h['val_recall20'], 4)) for h in r['history'] if h.get('val_recall20') is not None]
    return {'argv': argv, 'scales_mu_var': scales, 'val_curve': curve, 'best_val_recall20': r['best_val_recall20'],
            'wall_s': round(time.time() - t0, 1)}


def main():
    p = ArgumentParser(prog='bench/ldiffrec_plateau.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--variants', default=','.join(VARIANTS),
                   help='comma-separated subset to (re)run; the others are kept from --out')
    p.add_argument('--out', default=str(ROOT / 'bench/results/ldiffrec_plateau.json'))
    a = p.parse_args()
    common = ['--dataset', 'ml100k', '--data-dir', a.data_dir, '--seed', str(a.seed), '--epochs',
              str(a.epochs), '--patience', str(a.epochs), '--threads', str(a.threads)]
    old = json.loads(Path(a.out).read_text())['runs'] if Path(a.out).exists() else {}
    out = {'runs': old}
    for name in a.variants.split(','):
        out['runs'][name] = run(common + VARIANTS[name], SCALES.get(name, (1.0, 1.0)))
        out['runs'][name].update(command=shlex.join([sys.executable.rsplit("/", 1)[-1]] + sys.argv), git=git_state(ROOT))
        print(name, out['runs'][name]['val_curve'], flush=True)
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
