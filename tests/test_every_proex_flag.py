"""No ProEx switch that does not act: every flag of the ProEx group of each model file, given
with --proex on a tiny dataset (one batch per epoch), changes the first batch's loss, is
refused with an error, or prints a note that it has no effect in that configuration."""
import contextlib
import importlib
import io

import pytest

from test_bad_input import write_toy

MODELS = ['lightgcn', 'gccf', 'simgcl', 'multvae', 'ldiffrec', 'cvga']
# knobs outside the ProEx group: L-DiffRec's KL weight starts at 0 on its annealing schedule,
# which would hide Eq. 11 from the first batch
BASE = {'ldiffrec': ['--vae-anneal-steps', '0']}


def other_value(action, resolved):
    """A value of the flag other than the one --proex alone resolves to, or None for --proex."""
    if action.dest == 'proex':
        return None
    if action.nargs == 0 and len(action.option_strings) == 2:  # --x / --no-x
        return [action.option_strings[1] if resolved[action.dest] else action.option_strings[0]]
    if action.nargs == 0:
        return [action.option_strings[0]]  # store_true
    value = {'envs': '4', 'alpha': '0.5', 'lambda1': '0.5', 'lambda2': '0.3', 'lambda3': '2',
             'tau': '0.5', 'beta': '0.3', 'profile_dim': '3', 'profiles': '0,1',
             'profile_input': 'dropped-sum', 'kd_weight': '0.5', 'kd_temp': '0.5'}[action.dest]
    return [action.option_strings[0], value]


def first_loss(mod, argv):
    """(outcome, loss): 'refused' (SystemExit), 'note' (a no-effect note), else the loss."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            args = mod.parse_args(argv)
        except SystemExit:
            return 'refused', None
        if 'no effect' in out.getvalue():
            return 'note', None
        r = mod.main(args)
    return 'ran', r['history'][0]['loss']


@pytest.mark.parametrize('name', MODELS)
def test_every_proex_flag_acts_is_refused_or_noted(name, tmp_path):
    write_toy(tmp_path / 'toy')
    mod = importlib.import_module(name)
    common = ['--dataset', 'toy', '--data-dir', str(tmp_path), '--epochs', '1', '--seed', '3',
              '--patience', '1'] + BASE.get(name, [])
    _, base = first_loss(mod, common + ['--proex'])
    resolved = vars(mod.parse_args(common + ['--proex']))
    group = next(g for g in captured_parser(mod)._action_groups if g.title == 'ProEx')
    seen = {}
    for action in group._group_actions:
        flag = other_value(action, resolved)
        if flag is None:
            continue
        outcome, loss = first_loss(mod, common + ['--proex'] + flag)
        seen[' '.join(flag)] = outcome
        assert outcome != 'ran' or loss != base, f'{name}: {" ".join(flag)} ran and changed nothing'
    assert len(seen) >= 18 and sum(o == 'ran' for o in seen.values()) >= 10


def captured_parser(mod):
    """The model file's parser, as it hands it to eval.resolve_proex_args."""
    import eval as E
    made, original = [], E.resolve_proex_args

    def keep(parser, *a, **k):
        made.append(parser)
        return original(parser, *a, **k)

    E.resolve_proex_args = keep
    try:
        mod.parse_args([])
    finally:
        E.resolve_proex_args = original
    return made[0]
