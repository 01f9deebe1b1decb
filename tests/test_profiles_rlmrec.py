"""profiles.py on a book-shaped folder holding RLMRec's OP texts: `python profiles.py --dataset
book` reads <data root>/amazon/usr_prf.pkl (a pickled list) and itm_prf.pkl (a pickled dict
{id: ...}), each entry {'profile': str, 'reasoning': str} as in RLMRec's data release, so the
chain runs F2-F4 only; --dry-run prints the calls, tokens and cost; without those files the
error names each file and where it comes from. No request is sent.

Run: python -m pytest -q tests/test_profiles_rlmrec.py
"""
import os
import pickle
import re
import subprocess
import sys

import numpy as np

from test_profiles import ROOT
import profiles  # noqa: E402

USERS = [f'<<u{i:03d}>> reads crime novels and short histories, kind {i}' for i in range(5)]
ITEMS = [f'<<i{i:03d}>> a detective novel of kind {i}, for readers of slow suspense' for i in range(4)]


def book_folder(root, with_profiles=True):
    """<root>/amazon as RLMRec's release has it: the OP embeddings and, unless told not to, the OP
    texts (users as a list, items as a dict). profiles.py reads no interaction matrix."""
    folder = root / 'amazon'
    folder.mkdir()
    for p, n in (('usr', len(USERS)), ('itm', len(ITEMS))):
        with open(folder / f'{p}_emb_np.pkl', 'wb') as f:
            pickle.dump(np.zeros((n, 8), np.float32), f)
    if with_profiles:
        with open(folder / 'usr_prf.pkl', 'wb') as f:
            pickle.dump([{'profile': t, 'reasoning': 'from the reviews'} for t in USERS], f)
        with open(folder / 'itm_prf.pkl', 'wb') as f:
            pickle.dump({i: {'profile': t, 'reasoning': 'from the description'} for i, t in enumerate(ITEMS)}, f)
    return folder


def run(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'profiles.py'), *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_list_and_dict_pickles_give_the_op_texts(tmp_path):
    folder = book_folder(tmp_path)
    assert profiles.load_profile_pickle(str(folder / 'usr_prf.pkl')) == USERS
    assert profiles.load_profile_pickle(str(folder / 'itm_prf.pkl')) == ITEMS


def test_book_dry_run_from_rlmrec_op_texts(tmp_path):
    book_folder(tmp_path)
    out = run('--dataset', 'book', '--data-dir', str(tmp_path), '--dry-run',
              '--price-in', '0.5', '--price-out', '1.5', '--price-embed', '0.1')
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f'from {tmp_path / "amazon" / "usr_prf.pkl"} (OP given)' in text
    assert 'F1 skipped, the OP is given' in text and USERS[0] in text and ITEMS[0] in text  # F2's message
    # a real run would not replace the release's OP embeddings: it says so, and names --out-dir
    assert "note: refusing to overwrite ['usr_emb_np.pkl'] in" in text and '--out-dir' in text
    for side, n, words in (('user', len(USERS), 100), ('item', len(ITEMS), 200)):
        m = re.search(rf'{side}: {n} entities to do -> (\d+) chat calls, (\d+) embedding calls of 4 texts each, '
                      r'~([\d,]+) prompt \+ ~([\d,]+) completion tokens, ~([\d,]+) embedding tokens', text)
        assert m, text
        chat, emb, prompt, completion, embedding = (int(g.replace(',', '')) for g in m.groups())
        assert (chat, emb) == (3 * n, n)  # F2, F3, F4 and one request embedding OP + 3 NPs, per entity
        assert prompt > 0 and embedding > 0 and completion >= n * 3 * words * 4 / 3  # NPs at the word cap
        cost = float(re.search(rf'{side}: cost ~\$([\d.]+) online', text).group(1))
        assert abs(cost - (0.5 * prompt + 1.5 * completion + 0.1 * embedding) / 1e6) <= 0.006
        assert cost > 0


def test_book_without_op_texts_names_the_files_and_where_they_come_from(tmp_path):
    folder = book_folder(tmp_path, with_profiles=False)
    out = run('--dataset', 'book', '--data-dir', str(tmp_path), '--dry-run')
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    err = out.stderr
    assert err.startswith(f'error: no input for the users and the items of book in {folder}')
    for name in ('usr_prf.json', 'usr_prf.pkl', 'usr_side.jsonl', 'itm_prf.json', 'itm_prf.pkl', 'itm_side.jsonl'):
        assert name in err
    assert "usr_prf.pkl / itm_prf.pkl: RLMRec's OP texts" in err
    assert 'same release archive as the OP embeddings usr_emb_np.pkl / itm_emb_np.pkl' in err
    assert 'https://github.com/BlueGhostYi/ProRec' in err and 'https://github.com/HKUDS/RLMRec' in err
    assert 'side information for F1' in err
    assert f'python profiles.py --dataset book --data-dir {tmp_path} --dry-run' in err


def test_one_side_without_input_names_only_its_files(tmp_path, capsys):
    folder = book_folder(tmp_path)
    os.remove(folder / 'itm_prf.pkl')
    assert profiles.main(['--dataset', 'book', '--data-dir', str(tmp_path), '--dry-run']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: no input for the items of book') and '--item-input' in err
    assert 'itm_prf.pkl' in err and 'usr_prf.pkl' not in err
