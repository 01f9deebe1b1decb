"""profiles.py: F1's prompt names only the side-information fields a record fills, and --dry-run
lists the fields the first user and the first item fill and leave empty. No request is sent.

Run: python -m pytest -q tests/test_profiles_fields.py
"""
import json
import os

from test_profiles import flags, server  # noqa: F401 (fixture)
import profiles  # noqa: E402

# as data.py's ml100k-grouplens writes them: demographics, titles, genres and years only
USERS = [{'id': 0, 'age': 24, 'gender': 'male', 'occupation': 'technician',
          'liked_movies': ['Toy Story (1995) [Animation, Comedy]']},
         {'id': 1, 'age': 53, 'gender': 'female', 'occupation': 'other', 'liked_movies': []}]
ITEMS = [{'id': 0, 'title': 'Toy Story (1995)', 'year': 1995, 'genres': ['Animation', 'Comedy']},
         {'id': 1, 'title': 'unknown', 'year': None, 'genres': []}]
ABSENT = ('description', 'review', 'what users said')


def write_side_info(root):
    folder = os.path.join(root, 'toy')
    os.makedirs(folder)
    for name, rows in (('usr_side.jsonl', USERS), ('itm_side.jsonl', ITEMS)):
        with open(os.path.join(folder, name), 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(row) + '\n' for row in rows)
    return folder


def f1_prompt(side, record):
    source = {key: value for key, value in record.items() if key != 'id'}
    system, _ = profiles.step_messages(side, 4, source)['F1']
    return system


def test_f1_prompt_names_the_fields_the_record_has():
    user = f1_prompt('user', USERS[0])
    assert "the user's age, gender, occupation and the titles and genres of the movies they liked" in user
    item = f1_prompt('item', ITEMS[0])
    assert "the item's title, release year and genres." in item
    for prompt in (user, item):
        assert not any(word in prompt.lower() for word in ABSENT)


def test_f1_prompt_leaves_out_empty_fields():
    assert "the user's age, gender and occupation." in f1_prompt('user', USERS[1])
    item = f1_prompt('item', ITEMS[1])
    assert "the item's title." in item and 'year' not in item and 'genres' not in item
    nothing = profiles.system_prompt('item', 'F1', 4, {'title': ' ', 'genres': []})
    assert 'no filled field' in nothing and 'title' not in nothing.split('{')[0]


def test_f1_prompt_names_other_fields_by_their_names():
    prompt = profiles.system_prompt('user', 'F1', 4, {'titles': ['Film a'], 'reviews': ['great']})
    assert "the user's titles and reviews." in prompt and 'description' not in prompt


def test_dry_run_lists_present_and_empty_fields(server, tmp_path, capsys):  # noqa: F811
    write_side_info(tmp_path)
    assert profiles.main(flags(server, tmp_path, '--dry-run')) == 0
    out = capsys.readouterr().out
    assert ('--- user 0: side information fields present: age, gender, occupation, liked_movies; '
            'empty: none') in out
    assert '--- item 0: side information fields present: title, year, genres; empty: none' in out
    assert "the user's age, gender, occupation and the titles and genres" in out   # F1 as sent
    assert server.log == []


def test_dry_run_names_the_empty_fields_of_the_first_entity(server, tmp_path, capsys):  # noqa: F811
    write_side_info(tmp_path)
    with open(os.path.join(tmp_path, 'toy', 'itm_side.jsonl'), 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(row) + '\n' for row in (dict(ITEMS[1], id=0), dict(ITEMS[0], id=1)))
    assert profiles.main(flags(server, tmp_path, '--dry-run', '--side', 'item')) == 0
    out = capsys.readouterr().out
    assert '--- item 0: side information fields present: title; empty: year, genres' in out
    assert "the item's title." in out and not any(word in out for word in ABSENT)
