"""Base rows of Table 1 on Amazon-Book (paper protocol: full ranking, early stopping on validation R@20).

    python bench/book.py --model lightgcn [--seeds 2023] [--data-dir DIR]   # or $PROEX_DATA

Trains `<model>.py` with its book defaults (early stop on validation Recall@20,
patience 20, test once with the best parameters) for each seed, and writes
bench/results/<model>_book.json: every run's full result (history, seconds per epoch
and per evaluation), the mean over seeds, and the paper's row for comparison, with the git
commit (and whether tracked files were modified) and the command line.
"""
import argparse
import importlib
import json
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from eval import ArgumentParser, git_state  # noqa: E402

PAPER = {  # Table 1, Amazon-Book, base rows (mean of 10 seeds): R@10 R@20 N@10 N@20
    'gccf': (.0872, .1343, .0653, .0807), 'lightgcn': (.0915, .1411, .0694, .0856),
    'simgcl': (.0992, .1512, .0749, .0919), 'multvae': (.0976, .1472, .0752, .0916),
    'ldiffrec': (.1048, .1495, .0844, .0990), 'cvga': (.1030, .1522, .0799, .0960),
}
# the released framework of the paper's base rows (HKUDS/RLMRec, encoder/train_encoder.py with
# its lightgcn config), LightGCN on book, timed on this 2-core CPU: seconds per epoch / validation
RLMREC_SECONDS = {'train_epoch': 3.03, 'validation': 3.77}


def main():
    p = ArgumentParser(prog='bench/book.py', description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True, choices=sorted(PAPER))
    p.add_argument('--seeds', default='2023', help='comma-separated seeds (default 2023)')
    p.add_argument('--data-dir', default=None, help='the data root, passed on as given '
                   '(default: the model\'s own, $PROEX_DATA or ./data)')
    p.add_argument('--extra', default='', help='extra flags passed to the model, e.g. "--threads 2"')
    p.add_argument('--out', default=None, help='default: bench/results/<model>_book.json')
    a = p.parse_args()
    code = git_state()  # the code that runs, taken before the first run
    mod = importlib.import_module(a.model)
    runs = []
    for seed in [int(s) for s in a.seeds.split(',')]:
        root = ['--data-dir', a.data_dir] if a.data_dir else []
        argv = ['--dataset', 'book', *root, '--seed', str(seed)] + a.extra.split()
        runs.append(mod.main(mod.parse_args(argv)))
    keys = ['recall@10', 'recall@20', 'ndcg@10', 'ndcg@20']
    mean = {k: statistics.mean(r['test'][k] for r in runs) for k in keys}
    sec_epoch = statistics.median(r['sec_per_epoch'] for r in runs)
    sec_eval = statistics.median(r['sec_per_eval'] for r in runs)
    out = {'model': a.model, 'dataset': 'book', 'seeds': a.seeds, 'extra': a.extra, 'git': code,
           'command': shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv]), 'test_mean': mean,
           'paper': dict(zip(keys, PAPER[a.model])), 'sec_per_epoch': sec_epoch,
           'sec_per_eval': sec_eval, 'best_epochs': [r['best_epoch'] for r in runs], 'runs': runs}
    if a.model == 'lightgcn':
        out['rlmrec_seconds'] = RLMREC_SECONDS
        out['speedup'] = {'train_epoch': RLMREC_SECONDS['train_epoch'] / sec_epoch,
                          'validation': RLMREC_SECONDS['validation'] / sec_eval}
    path = a.out or ROOT / 'bench' / 'results' / f'{a.model}_book.json'
    Path(path).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ('test_mean', 'paper', 'sec_per_epoch', 'sec_per_eval',
                                          'best_epochs')}, indent=1))
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
