"""data.py at the command line's door: dataset names (any case for the known ones, an unknown
name is one error and never a download), --profiles outside 0..K-1, and a failed download that
leaves no folder behind. Offline: the download URLs point at a closed port on 127.0.0.1.

Run: python -m pytest -q tests/test_front_door.py
"""
import subprocess
import sys
from pathlib import Path

import pytest

from test_data import REPO, write_dataset
import data as D

pytestmark = pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')
CLOSED = 'http://127.0.0.1:9/data.zip'   # the discard port: nothing listens, connection refused


@pytest.fixture
def offline(monkeypatch):
    """Every download fails at once, without the network."""
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.setattr(D, 'RLMREC_URL', CLOSED)
    monkeypatch.setenv('PROEX_ML100K_URL', CLOSED)


def one_line(e):
    message = str(e.value)
    assert '\n' not in message
    return message


# ---------------------------------------------------------------- names

@pytest.mark.parametrize('name', ['books', 'Books', 'yelpp', 'ml-100k'])
def test_unknown_name_is_one_error_listing_the_known_names(tmp_path, offline, name):
    with pytest.raises(D.DataError) as e:
        D.load_dataset(name, tmp_path / 'root')
    message = one_line(e)
    assert message.startswith(f'unknown dataset {name!r} (no folder {tmp_path / "root" / name})')
    assert all(known in message for known in D.KNOWN_NAMES) and '--data-dir' in message
    assert not (tmp_path / 'root').exists()          # nothing downloaded, nothing created


@pytest.mark.parametrize('name', ['Book', 'BOOK', 'book'])
def test_known_names_match_in_any_case(tmp_path, offline, name):
    write_dataset(tmp_path / 'amazon')
    d = D.load_dataset(name, tmp_path)
    assert d.name == 'book' and (d.n_users, d.n_items) == (12, 9)
    assert D.load_dataset('Synthetic', seed=1).n_users == 3000


def test_other_folders_load_by_their_exact_name(tmp_path):
    write_dataset(tmp_path / 'MyData')
    assert D.load_dataset('MyData', tmp_path).n_users == 12


def test_known_name_without_its_folder_says_where_it_looked(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load_dataset('ML100K', tmp_path)
    assert str(tmp_path / 'ml100k' / 'trn_mat.pkl') in one_line(e) and 'unknown' not in str(e.value)


def test_unknown_name_on_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, 'data.py', '--dataset', 'books', '--data-dir', str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count('\n') == 1
    assert r.stderr.startswith("error: unknown dataset 'books'") and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- --profiles outside 0..K-1

def test_view_beyond_synthetic_names_the_valid_range():
    with pytest.raises(D.DataError) as e:
        D.load_dataset('synthetic', views=[7])
    assert one_line(e) == ('--profiles 7: dataset synthetic has K = 4 profile views, '
                           'valid indices are 0-3')


def test_view_beyond_a_folder_names_the_valid_range(tmp_path):
    write_dataset(tmp_path / 'toy', K=4)
    with pytest.raises(D.DataError) as e:
        D.load_dataset('toy', tmp_path, profiles=True, views=[0, 7])
    assert one_line(e) == ('--profiles 0,7: dataset toy has K = 4 profile views, '
                           'valid indices are 0-3')
    write_dataset(tmp_path / 'one', K=1)
    with pytest.raises(D.DataError, match='K = 1 profile views, the valid index is 0$'):
        D.load_dataset('one', tmp_path, profiles=True, views=[1])


def test_folder_without_views_still_lists_the_missing_files(tmp_path):
    write_dataset(tmp_path / 'toy')
    with pytest.raises(D.DataError, match='missing: .*usr_emb_np_7.pkl'):
        D.load_dataset('toy', tmp_path, profiles=True, views=[7])


# ---------------------------------------------------------------- a failed download leaves nothing

@pytest.mark.parametrize('name', ['book', 'Yelp', 'steam', D.ML100K_NAME])
def test_failed_download_leaves_no_new_folder(tmp_path, offline, name):
    root = tmp_path / 'new' / 'root'
    with pytest.raises(D.DataError) as e:
        D.load_dataset(name, root)
    assert one_line(e).startswith(f'could not download {CLOSED}')
    assert list(tmp_path.iterdir()) == []


def test_failed_download_keeps_a_folder_that_was_there(tmp_path, offline):
    root = tmp_path / 'root'
    root.mkdir()
    with pytest.raises(D.DataError, match='could not download'):
        D.load_dataset('book', root)
    with pytest.raises(D.DataError, match='could not download'):
        D.fetch_ml100k(root)
    assert root.is_dir() and list(root.iterdir()) == []


def test_failed_download_without_a_data_root_leaves_no_data_folder(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('PROEX_DATA', raising=False)
    for name in ('steam', D.ML100K_NAME):
        with pytest.raises(D.DataError):
            D.load_dataset(name)
        assert not Path('data').exists()


def test_command_line_build_leaves_no_data_folder(tmp_path):
    env = {'PATH': '/usr/bin:/bin', 'PROEX_ML100K_URL': CLOSED, 'NO_PROXY': '127.0.0.1',
           'PYTHONPATH': str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / 'data.py'), '--dataset', D.ML100K_NAME],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith(f'error: could not download {CLOSED}') and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('name', ['lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga', 'data'])
def test_help_shows_no_path_of_this_checkout(name, capsys):
    """--help's examples name the data root as DIR or $PROEX_DATA, not a path only the
    developers of this repository have."""
    import importlib
    mod = importlib.import_module(name)
    if hasattr(mod, 'parse_args'):
        with pytest.raises(SystemExit):
            mod.parse_args(['--help'])
    text = mod.__doc__ + capsys.readouterr().out
    assert '--data-dir DIR' in text or name == 'data'
    assert 'shared/datasets' not in text and '--data-dir ../' not in text


def test_readme_installs_the_cpu_build_from_its_index():
    readme = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
    assert 'pip install torch --index-url https://download.pytorch.org/whl/cpu' in readme
    assert len(readme.splitlines()) <= 200  # the front door; measured detail lives in bench/RESULTS.md
