"""Seconds per training epoch and per validation pass, measured alone on this machine.

    python bench/timing.py [--models lightgcn,gccf,...] [--epochs 5] [--device cuda]

1. every model, base, on book (the released RLMRec framework takes 3.03 s per LightGCN
   epoch and 3.77 s per validation on a 2-core CPU);
2. ProEx cost: base vs --proex, ratio of seconds per epoch per model, on `synthetic-book`
   (synthetic at Amazon-Book's size, K = 4 views of 64-d: book itself has no profile files
   here), `ml100k` (the real K = 4 views of 384-d) and `synthetic-book-1536` (the paper's
   width, text-embedding-ada-002), the last also with `--profile-dim 64` (--reduced-models).
Writes bench/results/timing.json (the device, the git commit and the command line named; --out
for another file). Run it with nothing else on the machine.
"""
import argparse
import importlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from book import RLMREC_SECONDS  # HKUDS/RLMRec's framework, LightGCN, book, this CPU
from eval import ArgumentParser, git_state  # noqa: E402


def measure(model, dataset, data_dir, epochs, flags=''):
    mod = importlib.import_module(model)
    argv = ['--dataset', dataset, '--data-dir', data_dir, '--epochs', str(epochs),
            '--patience', str(epochs), '--eval-every', '1'] + flags.split()
    r = mod.main(mod.parse_args(argv))
    train = [h['train_s'] for h in r['history'][1:]]   # first epoch: warm-up, not counted
    evals = [h['eval_s'] for h in r['history'][1:] if 'eval_s' in h]
    return {'sec_per_epoch': statistics.median(train), 'sec_per_eval': statistics.median(evals),
            'epochs_timed': len(train), 'threads': r['torch_threads']}


def main():
    p = ArgumentParser(prog='bench/timing.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', default='lightgcn,gccf,simgcl,multvae,ldiffrec,cvga')
    p.add_argument('--epochs', type=int, default=6, help='epochs per measurement (first is dropped)')
    p.add_argument('--data-dir', default=os.environ.get('PROEX_DATA', str(ROOT.parent / 'shared/datasets')))
    p.add_argument('--skip-proex', action='store_true', help='only the base timings on book')
    p.add_argument('--skip-book', action='store_true', help='only the ProEx cost ratios')
    p.add_argument('--cost-datasets', default='synthetic-book,ml100k,synthetic-book-1536',
                   help='datasets of the ProEx cost ratio (default: synthetic-book, 64-d views at '
                        'book size; ml100k, the real 384-d views; synthetic-book-1536, 1536-d)')
    p.add_argument('--reduced-models', default='lightgcn', help='models also timed with '
                   '--profile-dim 64 on the 1536-d views (default lightgcn)')
    p.add_argument('--wide-epochs', type=int, default=3, help='epochs per measurement on the '
                   '1536-d views (first dropped; default 3: a CPU ProEx epoch there takes ~40 s)')
    p.add_argument('--book-models', default=None, help='models timed on book (default: --models)')
    p.add_argument('--wide-models', default=None, help='models timed on the 1536-d views '
                   '(default: --models)')
    p.add_argument('--device', default='cpu', help='cpu or cuda (default cpu)')
    p.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'timing.json'))
    a = p.parse_args()
    device = (torch.cuda.get_device_name(0) if a.device.startswith('cuda') else
              f'CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
              f'{torch.get_num_threads()} torch threads')
    out = {'machine': device, 'device': a.device, 'command': ' '.join(sys.argv), 'git': git_state(),
           'torch': torch.__version__, 'rlmrec_seconds': RLMREC_SECONDS, 'book': {}, 'proex_cost': {}}
    for m in ([] if a.skip_book else (a.book_models or a.models).split(',')):
        out['book'][m] = measure(m, 'book', a.data_dir, a.epochs, f'--device {a.device}')
        Path(a.out).write_text(json.dumps(out, indent=1))
    if 'lightgcn' in out['book']:
        lg = out['book']['lightgcn']
        out['speedup_vs_released_lightgcn'] = {
            'train_epoch': RLMREC_SECONDS['train_epoch'] / lg['sec_per_epoch'],
            'validation': RLMREC_SECONDS['validation'] / lg['sec_per_eval']}
    for ds in ([] if a.skip_proex else a.cost_datasets.split(',')):
        epochs = a.wide_epochs if ds.endswith('1536') else a.epochs
        wide = ds.endswith('1536')
        for m in (a.wide_models or a.models).split(',') if wide else a.models.split(','):
            base = measure(m, ds, a.data_dir, epochs, f'--device {a.device}')
            variants = {'': '--proex'}
            if wide and m in a.reduced_models.split(','):
                variants[' --profile-dim 64'] = '--proex --profile-dim 64'
            for label, flags in variants.items():
                proex = measure(m, ds, a.data_dir, epochs, f'{flags} --device {a.device}')
                out['proex_cost'].setdefault(ds + label, {})[m] = {
                    'base': base, 'proex': proex, 'ratio': proex['sec_per_epoch'] / base['sec_per_epoch']}
                Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != 'proex_cost'}, indent=1))
    print({ds: {m: round(v['ratio'], 2) for m, v in r.items()} for ds, r in out['proex_cost'].items()})


if __name__ == '__main__':
    main()
