"""Cost of Eq. 13's InfoNCE alignment: seconds per training epoch of LightGCN + ProEx with
--lambda1 (default 0.01, lightgcn.py's default) against --lambda1 0, measured interleaved in one
process, one thread.

    python bench/align_cost.py [--dataset ml100k] [--lambda1 0.01] [--rounds 3] [--epochs 4]

Each round trains --epochs epochs at lambda1 0, then at --lambda1 (no validation inside them;
Eq. 13 over the batch's distinct users, positive and negative items); the median of each
setting's per-epoch seconds over all rounds is reported with their ratio. Interleaving puts both
settings under the same load. Writes bench/results/align_cost_DATASET.json (commit and command
line named).
"""
import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import lightgcn  # noqa: E402
from eval import ArgumentParser, git_state, versions  # noqa: E402


def main():
    p = ArgumentParser(prog='bench/align_cost.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', '../shared/datasets'))
    p.add_argument('--dataset', default='ml100k', help='ml100k or synthetic (default ml100k)')
    p.add_argument('--lambda1', default='0.01', help="Eq. 13's weight when on (default 0.01)")
    p.add_argument('--rounds', type=int, default=3, help='rounds of both settings (default 3)')
    p.add_argument('--epochs', type=int, default=4, help='epochs per setting and round (default 4)')
    p.add_argument('--out', help='result file (default bench/results/align_cost_DATASET.json)')
    a = p.parse_args()
    out_file = a.out or str(ROOT / f'bench/results/align_cost_{a.dataset}.json')
    code = git_state()
    seconds = {'0': [], a.lambda1: []}
    for r in range(a.rounds):
        for lambda1 in seconds:
            argv = ['--proex', '--dataset', a.dataset, '--data-dir', a.data_dir, '--threads', '1',
                    '--lambda1', lambda1, '--epochs', str(a.epochs), '--eval-every', str(a.epochs + 1),
                    '--seed', str(r)]
            res = lightgcn.main(lightgcn.parse_args(argv))
            seconds[lambda1] += [h['train_s'] for h in res['history']]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    out = {'model': 'lightgcn', 'dataset': a.dataset, 'lambda1': a.lambda1, 'sec_per_epoch_median': med,
           'ratio': med[a.lambda1] / med['0'], 'sec_per_epoch_all': seconds, 'rounds': a.rounds,
           'epochs': a.epochs, 'git': code, 'versions': versions(),
           'command': shlex.join(['python', *sys.argv])}
    Path(out_file).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ('sec_per_epoch_median', 'ratio')}), '->', out_file)


if __name__ == '__main__':
    main()
