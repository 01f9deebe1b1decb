"""The error cases of a run, each run as a shell would: one clear line and nothing lost.
  * --out into a folder that takes no file (/proc) fails at start-up, before training;
  * the result file is written atomically (no temporary file left, an old file kept whole);
  * Ctrl-C (SIGINT) stops training with one line and exit status 130, and --out holds the
    epochs measured so far, marked 'interrupted', without test metrics;
  * a result file holds no absolute path of the machine that wrote it.
(--released with a flag it overrides: tests/test_bad_input.py and tests/test_proex_core.py.)
Run: python -m pytest -q tests/test_errors.py
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import eval as E

pytestmark = pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')
REPO = Path(__file__).resolve().parents[1]
MODELS = ['lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga']


def run(*argv, cwd=REPO, timeout=300):
    """`python <argv>` in a child process with SIGINT at its default (a shell's job may
    inherit it ignored, and Python then installs no KeyboardInterrupt handler)."""
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=default_sigint)


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line(stderr):
    """The only non-empty line of stderr (no traceback, no usage block)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'Traceback' not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------- --out checked at start-up

@pytest.mark.skipif(not Path('/proc/self').is_dir(), reason='needs Linux /proc')
def test_out_in_proc_fails_before_training():
    """os.access says /proc is writable for root; the check creates a real file instead."""
    p = run('lightgcn.py', '--threads', '1', '--epochs', '1', '--out', '/proc/r.json')
    (line,) = p.stderr.splitlines()                    # one line, no usage block
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert line.startswith('error: argument --out: cannot create a file in folder /proc') and \
        line.endswith('write elsewhere (see: python lightgcn.py --help)'), p.stderr
    assert 'epoch' not in p.stdout and not Path('/proc/r.json').exists()


def test_out_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / 'pipe')                       # like /dev/null: renaming over it is wrong
    p = run('lightgcn.py', '--threads', '1', '--epochs', '1', '--out', str(tmp_path / 'pipe'))
    assert p.returncode == 1 and 'not a regular file' in p.stderr and 'epoch' not in p.stdout


def test_result_is_written_atomically(tmp_path, capsys):
    out = tmp_path / 'r.json'
    E.write_result({'a': 1}, str(out))
    assert json.loads(out.read_text()) == {'a': 1}
    with pytest.raises(TypeError):                     # fails half-way through json.dump
        E.write_result({'a': 2, 'b': object()}, str(out))
    assert json.loads(out.read_text()) == {'a': 1}     # the old file is whole
    assert sorted(os.listdir(tmp_path)) == ['r.json']  # no temporary file left
    assert 'wrote' in capsys.readouterr().out


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_stops_with_one_line_and_keeps_the_epochs(tmp_path):
    """SIGINT once the third epoch (the first validation) is printed: exit status 130, one
    line on stderr, and r.json holds the history so far, marked interrupted, without test."""
    p = subprocess.Popen([sys.executable, str(REPO / 'lightgcn.py'), '--threads', '1',
                          '--epochs', '1000', '--out', 'r.json'], cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    try:
        for line in p.stdout:
            if line.startswith('epoch    3 '):
                p.send_signal(signal.SIGINT)
                break
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    line = one_line(err)
    assert line.startswith('interrupted: stopped by Ctrl-C after epoch ') and 'r.json' in line
    assert 'test recall' not in out
    r = json.loads((tmp_path / 'r.json').read_text())
    epochs = [h['epoch'] for h in r['history']]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 3
    assert (r['stop_reason'], r['stop_epoch'], r['test'], r['test_by_activity']) == \
        ('interrupted', epochs[-1], None, None)
    assert r['best_epoch'] in epochs and r['best_val_recall20'] == max(
        h['val_recall20'] for h in r['history'] if 'val_recall20' in h)
    assert os.listdir(tmp_path) == ['r.json']


@pytest.mark.parametrize('name', MODELS)
def test_every_model_saves_the_epochs_before_a_ctrl_c(name, tmp_path, monkeypatch):
    """The same in each model file's loop, in-process: a KeyboardInterrupt in the second
    epoch gives eval.Interrupted (the model file's one line) and the first epoch on disk."""
    module = __import__(name)
    real = module.timed

    def second_epoch_interrupted(fn, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(fn, epoch)
    monkeypatch.setattr(module, 'timed', second_epoch_interrupted)
    out = tmp_path / 'r.json'
    args = module.parse_args(['--threads', '1', '--eval-every', '1', '--out', str(out)])
    with pytest.raises(E.Interrupted, match='after epoch 1 '):
        module.main(args)
    r = json.loads(out.read_text())
    assert (r['stop_reason'], r['stop_epoch'], r['best_epoch'], r['test']) == ('interrupted', 1, 1, None)
    assert [h['epoch'] for h in r['history']] == [1]


def test_ctrl_c_outside_training_is_one_line_too(capsys):
    assert E.on_interrupt(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == 'interrupted by Ctrl-C; no result written\n'


# ---------------------------------------------------------------- no machine paths

def test_result_holds_no_absolute_path(tmp_path):
    """The data root as typed (or None), no interpreter path, the --out as typed."""
    rel_out = os.path.relpath(tmp_path / 'r.json', REPO)
    p = run('lightgcn.py', '--threads', '1', '--epochs', '1', '--out', rel_out)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / 'r.json').read_text())
    assert r['config']['data_dir'] is None and r['argv'][0] == 'lightgcn.py'
    assert r['config']['out'] == rel_out and not [s for s in strings(r) if s.startswith('/')]
    p = run('lightgcn.py', '--threads', '1', '--epochs', '1', '--data-dir', 'some/data',
            '--out', rel_out)
    assert json.loads((tmp_path / 'r.json').read_text())['config']['data_dir'] == 'some/data'


def strings(x):
    """Every string value in a JSON object."""
    if isinstance(x, dict):
        return [s for v in x.values() for s in strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in strings(v)]
    return [x] if isinstance(x, str) else []
