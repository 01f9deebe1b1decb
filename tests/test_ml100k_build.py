"""Tests of `--dataset ml100k-grouplens` (data.py, section 6) and the whole ProEx chain on it:
the GroupLens archive -> the three splits and the side information -> profiles.py (F1-F4 and
the K embeddings) against the loopback OpenAI-compatible server -> lightgcn.py --proex.
No network: the archive is $PROEX_DATA/ml100k_raw/ml-100k.zip (default ../shared/datasets),
passed as a local path or a file:// URL; the tests skip when it is absent.

Run: python -m pytest -q tests/test_ml100k_build.py
"""
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]
import data as D  # noqa: E402
import profiles  # noqa: E402
from openai_server import API_KEY, FakeOpenAI  # noqa: E402

REAL_DATA = Path(os.environ.get('PROEX_DATA') or REPO.parent / 'shared' / 'datasets')
ARCHIVE = REAL_DATA / 'ml100k_raw' / 'ml-100k.zip'
PREPARED = REAL_DATA / 'ml100k'
pytestmark = [pytest.mark.skipif(not ARCHIVE.exists(), reason=f'{ARCHIVE} not present'),
              pytest.mark.filterwarnings('ignore:Sparse CSR tensor support is in beta')]
N_USERS, N_ITEMS = 12, 40   # the slice the chain runs on (lightgcn's Recall@20 needs >= 20 items)


def quiet(*a, **k):
    pass


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


def movie(item):
    """A movie as usr_side.jsonl lists it."""
    return f'{item["title"]} [{", ".join(item["genres"])}]'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """<root>/ml100k-grouplens built from the archive given as a file:// URL."""
    root = tmp_path_factory.mktemp('root')
    t = time.time()
    folder = D.fetch_ml100k(root, url=ARCHIVE.resolve().as_uri(), log=quiet)
    print(f'build: {time.time() - t:.2f} s')
    return folder


# ---------------------------------------------------------------- the build

@pytest.mark.skipif(not (PREPARED / 'trn_mat.pkl').exists(), reason=f'{PREPARED} not present')
def test_build_gives_the_prepared_matrices(built):
    for s in D.SPLITS:
        ours, prepared = D.safe_load(built / f'{s}_mat.pkl'), D.safe_load(PREPARED / f'{s}_mat.pkl')
        assert ours.shape == prepared.shape == (943, 1682)
        assert (sp.csr_matrix(ours) != sp.csr_matrix(prepared)).nnz == 0   # every entry equal
        assert (ours.toarray() == prepared.toarray()).all()
    assert sorted(os.listdir(built.parent)) == ['ml-100k.zip', D.ML100K_NAME]  # no temp folder left


def test_load_dataset_builds_from_a_copy_placed_by_hand(tmp_path, monkeypatch):
    shutil.copy(ARCHIVE, tmp_path / 'ml-100k.zip')                       # placed by hand
    monkeypatch.setenv('PROEX_ML100K_URL', str(tmp_path / 'nowhere.zip'))  # so never downloaded
    d = D.load_dataset(D.ML100K_NAME, tmp_path)
    assert (d.n_users, d.n_items) == (943, 1682)
    assert (d.train.nnz, d.val.nnz, d.test.nnz) == (44140, 5506, 5729)


def test_side_information_holds_training_positives_only(built):
    users, items = read_jsonl(built / 'usr_side.jsonl'), read_jsonl(built / 'itm_side.jsonl')
    assert len(profiles.load_side_info(built / 'usr_side.jsonl')) == len(users) == 943
    assert len(profiles.load_side_info(built / 'itm_side.jsonl')) == len(items) == 1682
    assert items[0] == {'id': 0, 'title': 'Toy Story (1995)', 'year': 1995,
                        'genres': ['Animation', "Children's", 'Comedy']}
    assert set(users[0]) == {'id', 'age', 'gender', 'occupation', 'liked_movies'}
    train, val, test = (D.load_matrix(built / f'{s}_mat.pkl') for s in D.SPLITS)
    held_out = 0
    for u, row in enumerate(users):
        trained = [movie(items[i]) for i in train[u].indices]
        assert row['liked_movies'] == trained                       # exactly the training positives
        held = {movie(items[i]) for i in (val + test)[u].indices} - set(trained)  # same title, same film
        assert held.isdisjoint(row['liked_movies'])
        held_out += len(held)
    assert held_out > 10000   # the check above did look at the validation and test items


# ---------------------------------------------------------------- failures

def assert_one_line_error(e, url, root):
    message = str(e.value)
    assert '\n' not in message and url in message and 'offline, place the archive at' in message
    assert 'PROEX_ML100K_URL' in message  # the offline remedy
    assert os.listdir(root) == []          # no archive, no folder, no temporary file


def test_truncated_archive(tmp_path):
    cut = tmp_path / 'cut' / 'ml-100k.zip'
    cut.parent.mkdir()
    cut.write_bytes(ARCHIVE.read_bytes()[:1_000_000])
    root = tmp_path / 'root'
    root.mkdir()
    with pytest.raises(D.DataError, match='not a complete ML-100K archive') as e:
        D.fetch_ml100k(root, url=cut.as_uri(), log=quiet)
    assert_one_line_error(e, cut.as_uri(), root)


def test_bad_file_url(tmp_path):
    url = (tmp_path / 'missing' / 'ml-100k.zip').as_uri()
    with pytest.raises(D.DataError, match='could not download') as e:
        D.fetch_ml100k(tmp_path, url=url, log=quiet)
    assert_one_line_error(e, url, tmp_path)


def test_no_network(tmp_path):
    url = 'http://127.0.0.1:9/ml-100k.zip'   # discard port: nothing listens, connection refused
    with pytest.raises(D.DataError, match='could not download') as e:
        D.fetch_ml100k(tmp_path, url=url, log=quiet)
    assert_one_line_error(e, url, tmp_path)


def test_command_line_error_is_one_line(tmp_path):
    url = (tmp_path / 'missing.zip').as_uri()
    env = dict(os.environ, PROEX_ML100K_URL=url)
    r = subprocess.run([sys.executable, 'data.py', '--dataset', D.ML100K_NAME,
                        '--data-dir', str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count('\n') == 1
    assert r.stderr.startswith(f'error: could not download {url}') and 'PROEX_ML100K_URL' in r.stderr


# ---------------------------------------------------------------- the whole chain

def write_slice(src, dst):
    """The first N_USERS users and N_ITEMS items of a built folder, in the same format."""
    dst.mkdir()
    for s in D.SPLITS:
        m = sp.coo_matrix(D.safe_load(src / f'{s}_mat.pkl').tocsr()[:N_USERS, :N_ITEMS])
        with open(dst / f'{s}_mat.pkl', 'wb') as f:
            pickle.dump(m, f)
    for name, n in (('usr_side.jsonl', N_USERS), ('itm_side.jsonl', N_ITEMS)):
        lines = (src / name).read_text(encoding='utf-8').splitlines(keepends=True)
        (dst / name).write_text(''.join(lines[:n]), encoding='utf-8')


def test_chain_build_profiles_proex(built, tmp_path, monkeypatch, capsys):
    # 1. the dry run on the whole built folder: calls, tokens, cost; no request
    assert profiles.main(['--dataset', D.ML100K_NAME, '--data-dir', str(built.parent), '--dry-run',
                          '--price-in', '0.15', '--price-out', '0.6']) == 0
    out = capsys.readouterr().out
    assert 'user: 943 entities to do -> 3772 chat calls' in out and 'item: 1682 entities' in out
    # 2. F1-F4 and the embeddings on a slice, against the loopback server
    write_slice(built, tmp_path / 'ml100k-slice')
    monkeypatch.setenv('OPENAI_API_KEY', API_KEY)
    server = FakeOpenAI(dim=16)
    try:
        assert profiles.main(['--dataset', 'ml100k-slice', '--data-dir', str(tmp_path),
                              '--base-url', server.url, '--model', 'chat-m',
                              '--embed-model', 'embed-m', '--embed-dim', '16', '--concurrency', '4']) == 0
    finally:
        server.close()
    f1 = [r['text'] for r in server.requests('chat') if r['step'] == 'F1']   # F1 wrote every OP
    assert len(f1) == N_USERS + N_ITEMS and any('Toy Story (1995)' in t for t in f1)
    for p, n in (('usr', N_USERS), ('itm', N_ITEMS)):
        assert len(json.load(open(tmp_path / 'ml100k-slice' / f'{p}_prf.json'))) == n   # the OPs
        for name in [f'{p}_emb_np.pkl'] + [f'{p}_emb_np_{k}.pkl' for k in (1, 2, 3)]:
            assert D.safe_load(tmp_path / 'ml100k-slice' / name).shape == (n, 16)
    # 3. one epoch of LightGCN with ProEx on those embeddings
    r = subprocess.run([sys.executable, 'lightgcn.py', '--proex', '--dataset', 'ml100k-slice',
                        '--data-dir', str(tmp_path), '--epochs', '1', '--device', 'cpu',
                        '--out', str(tmp_path / 'r.json')],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.load(open(tmp_path / 'r.json'))
    assert 'K=4 profile views of dim 16' in result['dataset'] and result['config']['proex']
