"""bench/reproduce.py's extra steps on a few epochs of `synthetic`: the Eq. 7 forms and the
single views run with the chosen ProEx configuration and pair with its final seeds, and
bench/table.py turns them into the two tables of section 3."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'bench'))
import table  # noqa: E402


def reproduce(tmp_path, proex_config):
    out = tmp_path / 'protocol_ml100k_lightgcn.json'  # named as table.py looks for it
    subprocess.run([sys.executable, str(ROOT / 'bench' / 'reproduce.py'), '--model', 'lightgcn',
                    '--dataset', 'synthetic', f'--proex-config={proex_config}', '--base-config=--reg 1e-6',
                    '--seeds', '2', '--views', '--view-seeds', '2', '--view-list', '0,3', '--eq7',
                    '--eq7-seeds', '2', '--extra', '--epochs 2 --eval-every 1', '--out', str(out)],
                   check=True, capture_output=True, cwd=tmp_path)
    return json.loads(out.read_text())


@pytest.mark.parametrize('lambda2, extra_runs', [('0', ['printed', 'infonce', 'uniformity']),
                                                  ('0.01', ['infonce', 'uniformity'])])
def test_eq7_forms_and_views_pair_with_the_chosen_configuration(tmp_path, lambda2, extra_runs):
    r = reproduce(tmp_path, f'--proex --lambda2 {lambda2} --envs 2 --alpha 0.3')
    eq7 = sorted({k.split('|')[1] for k in r['runs'] if k.startswith('eq7|')})
    assert eq7 == sorted(extra_runs)  # the form equal to the chosen configuration is not rerun
    argv = r['runs']['eq7|infonce|2']['argv']
    assert '--infonce-reg' in argv and argv[argv.index('--lambda2') + 1] == '0.01'
    assert argv.count('--lambda2') == 1 and argv[argv.index('--seed') + 1] == '2'
    assert r['runs']['eq7|uniformity|1']['argv'][-5:] == ['--lambda2', '0.4', '--uniformity-reg', '--seed', '1']
    printed = r['summary']['eq7']['printed']
    assert printed['n'] == 2 and printed['config'].endswith('--lambda2 0.01 --no-infonce-reg')
    assert [f['is_chosen'] for f in r['summary']['eq7'].values()] == [lambda2 == '0.01', False, False]
    if lambda2 == '0.01':  # the chosen configuration itself: its final runs
        assert printed['mean'] == r['summary']['recall@20']['proex']['mean']
    view = r['summary']['views_recall@20']['3']
    assert view['n'] == 2 and view['vs_chosen']['proex']['mean'] == r['summary']['recall@20']['proex']['mean']
    text = table.build(tmp_path).split('\n## 3.')[1].split('\n## 4.')[0]  # section 3, ml100k
    assert '| LightGCN | 3 (NP3) |' in text and '### Eq. 7 in three forms' in text
    assert text.count('(n=2), ') == len(extra_runs)  # each form run, over the two seeds
    assert text.count('= chosen') == 3 - len(extra_runs)  # the form that is the chosen configuration
    assert text.count('; val 0.') == len(extra_runs) + 1  # validation R@20 of each form and of the chosen


def test_eq7_seeds_must_pair_with_final_seeds(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / 'bench' / 'reproduce.py'), '--model', 'lightgcn',
                        '--dataset', 'synthetic', '--defaults', '--seeds', '2', '--eq7', '--eq7-seeds', '3',
                        '--out', str(tmp_path / 'r.json')], capture_output=True, text=True)
    assert p.returncode != 0 and '--eq7-seeds' in p.stderr and not (tmp_path / 'r.json').exists()


def test_fused_share_runs_alone_and_merges_into_the_protocol(tmp_path):
    def go(*flags):
        subprocess.run([sys.executable, str(ROOT / 'bench' / 'reproduce.py'), '--model', 'multvae',
                        '--dataset', 'synthetic', '--base-config=--kl-weight 0.5', '--proex-config=--proex',
                        '--seeds', '2', '--fused-seeds', '2', '--extra', '--epochs 2 --eval-every 1']
                       + list(flags), check=True, capture_output=True, cwd=tmp_path)
    go('--fused-only', '--out', 'share.json')
    share = json.loads((tmp_path / 'share.json').read_text())['runs']
    assert sorted(share) == ['fused|1', 'fused|2'] and '--align-fused' in share['fused|2']['argv']
    go('--merge', 'share.json', '--out', 'main.json')
    r = json.loads((tmp_path / 'main.json').read_text())
    assert r['runs']['fused|2'] == share['fused|2']  # taken, not rerun
    assert r['summary']['align_fused']['recall@20']['align_fused']['n'] == 2
    assert '--fused-only' in r['merged']['share.json']  # the share's command stays on record
    assert table.clean_command('x/python a.py --merge /tmp/s/share.json --out /tmp/o.json').endswith(
        '--merge share.json --out o.json')


def test_one_profile_arm_is_tuned_and_pairs_per_view_with_proex(tmp_path):
    """--one-profile: the single-profile arm (RLMRec-C here) gets as many configurations as
    the base arm, its chosen one runs on each view and on the view validation picks, each
    paired with ProEx's finals; with several views their mean per seed is reported too."""
    subprocess.run([sys.executable, str(ROOT / 'bench' / 'reproduce.py'), '--model', 'lightgcn',
                    '--dataset', 'synthetic', '--base-config=--reg 1e-6', '--proex-config=--proex',
                    '--seeds', '2', '--tune-seeds', '0', '--one-profile', '--one-views', '0,3',
                    '--one-seeds', '2', '--one-best', '--extra', '--epochs 2 --eval-every 1',
                    '--out', 'r.json'], check=True, capture_output=True, cwd=tmp_path)
    r = json.loads((tmp_path / 'r.json').read_text())
    tuned = {k.split('|')[2] for k in r['runs'] if k.startswith('tune|rlmrec|')}
    assert len(tuned) == 6 and r['chosen']['rlmrec'] in tuned  # the base arm's six
    one = r['summary']['one_profile']
    assert set(one['views']) >= {'0', '3'} and one['best_view'] in range(4)
    assert one['views']['3']['recall@20']['proex']['mean'] == r['summary']['recall@20']['proex']['mean']
    assert r['runs']['one|3|2']['argv'][-4:] == ['--profiles', '3', '--seed', '2']
    assert '--rlmrec-con' in r['runs']['one|3|2']['argv'] and one['avg']['recall@20']['one']['n'] == 2


def test_tune_and_one_profile_shares_merge_and_a_share_of_another_configuration_is_refused(tmp_path):
    """--tune-only (each core its tuning seeds) and --one-only (step 7's runs, --one-from splits
    the seeds) write the runs the protocol reads under the same keys; a merged single-profile run
    of another configuration than the chosen one stops the protocol with one error naming it."""
    def go(*flags, check=True):
        return subprocess.run([sys.executable, str(ROOT / 'bench' / 'reproduce.py'), '--model', 'lightgcn',
                               '--dataset', 'synthetic', '--base-config=--reg 1e-6',
                               '--proex-config=--proex --lambda1 0', '--seeds', '2', '--one-seeds', '2',
                               '--one-profile', '--one-views', '3', '--extra', '--epochs 1']
                              + list(flags), check=check, capture_output=True, text=True, cwd=tmp_path)
    go('--tune-only', '--tune-seeds', '101', '--out', 'a.json')
    a = json.loads((tmp_path / 'a.json').read_text())
    assert len(a['runs']) == 6 and all(k.startswith('tune|rlmrec|') and k.endswith('|101') for k in a['runs'])
    assert 'chosen' not in a  # nothing chosen from one core's share
    go('--one-only', '--one-config=--rlmrec-con --kd-weight 1e-2', '--one-from', '2', '--out', 's.json')
    assert list(json.loads((tmp_path / 's.json').read_text())['runs']) == ['one|3|2']
    p = go('--one-config=--rlmrec-con --kd-weight 1e-3', '--merge', 's.json', '--out', 'm.json', check=False)
    assert p.returncode == 1 and 'run one|3|2' in p.stderr and '--kd-weight 1e-2' in p.stderr
    go('--one-config=--rlmrec-con --kd-weight 1e-2', '--merge', 's.json', '--out', 'ok.json')
    r = json.loads((tmp_path / 'ok.json').read_text())
    assert r['runs']['one|3|2'] == json.loads((tmp_path / 's.json').read_text())['runs']['one|3|2']  # not rerun
    assert r['summary']['one_profile']['views']['3']['recall@20']['one']['n'] == 2
