"""Do the runs a protocol file keeps reproduce with this checkout? Each chosen run is trained
again in full from its recorded command line (one thread, so seeded runs are bit-identical)
and compared with what the file holds: best epoch, validation curve and test metrics.

    python bench/kept_runs.py bench/results/protocol_ml100k_gccf.json --seeds 1 \
        --out bench/results/kept_runs_ml100k_gccf.json

--steps names the runs by key prefix (default: final|, the final runs); --seeds the seeds to redo.
Writes the commit of this checkout, the command line and, per run, identical or not.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from eval import ArgumentParser, git_state  # noqa: E402


def rerun(model, argv, out):
    """Train model.py with the recorded argv; its result file as a dict."""
    subprocess.run([sys.executable, f'{model}.py', *argv, '--out', out], cwd=ROOT, check=True,
                   capture_output=True)
    return json.loads(Path(out).read_text())


def main():
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('protocol', help='a result file of bench/reproduce.py')
    p.add_argument('--steps', default='final|', help="comma-separated key prefixes, e.g. 'final|base|,one|' "
                   "(default 'final|')")
    p.add_argument('--seeds', default='1', help='comma-separated seeds to redo (default 1)')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    store = json.loads(Path(a.protocol).read_text())
    seeds = a.seeds.split(',')
    keys = [k for k in store['runs'] if k.split('|')[-1] in seeds
            and any(k.startswith(prefix) for prefix in a.steps.split(','))]
    kept_commits = sorted({store['runs'][k]['code']['commit'] for k in keys})
    result = {'protocol': Path(a.protocol).name, 'command': shlex.join(['python'] + sys.argv),
              'commits': {'before': ', '.join(kept_commits), 'after': git_state()['commit']},
              'dirty': git_state()['dirty'], 'runs': {}}  # the layout of same_numbers.py's files
    with tempfile.TemporaryDirectory() as tmp:
        for k in keys:
            kept = store['runs'][k]
            r = rerun(store['model'], kept['argv'], os.path.join(tmp, 'r.json'))
            now = {'best_epoch': r['best_epoch'], 'best_val_recall20': r['best_val_recall20'],
                   'test': r['test'], 'val_curve': [h.get('val_recall20') for h in r['history']]}
            same = all(now[f] == kept[f] for f in now)
            result['runs'][k] = {'identical': same, 'test_recall@20': {'before': kept['test']['recall@20'],
                                                                       'after': r['test']['recall@20']}}
            print(f"{k}: {'identical' if same else 'DIFFERENT'} (kept {kept['code']['commit'][:7]}, "
                  f"test R@20 {kept['test']['recall@20']:.6f} / {r['test']['recall@20']:.6f})", flush=True)
            Path(a.out).write_text(json.dumps(result, indent=1))
    result['all_identical'] = all(r['identical'] for r in result['runs'].values())
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
