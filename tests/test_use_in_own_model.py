"""README's "Use ProEx in your own model": its two code blocks run against proex_core.py
copied ALONE into an empty folder (no other file of this project importable), on tiny random
data, and train (the loss is finite and goes down). Also: the copy imports, and a profile
tensor laid out [B, K, d] is refused with a message that names [K, B, d]."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETUP = '''
import numpy as np, torch, torch.nn as nn
import proex_core as P
torch.manual_seed(0)
rng = np.random.default_rng(0)
U, I, K, d_s, d, epochs = 40, 30, 3, 8, 8, 25
taste = rng.normal(size=(U, 2)) @ rng.normal(size=(2, I))          # a planted low-rank taste
rows = torch.tensor((taste > 0.8).astype(np.float32))               # [U, I] 0/1
train = rows.numpy()
usr_prf = [rng.normal(size=(U, d_s)) for _ in range(K)]             # K arrays [U, d_s]
itm_prf = [rng.normal(size=(I, d_s)) for _ in range(K)]

class BPRModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.e_u, self.e_i = nn.Embedding(U, d), nn.Embedding(I, d)
    def forward(self, u, i, j):
        return self.e_u(u), self.e_i(i), self.e_i(j)
    def all(self):
        return self.e_u.weight, self.e_i.weight

class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.p = nn.Linear(I, 2 * d), nn.Linear(d, I)
    def encode(self, x):
        return self.q(x).chunk(2, dim=-1)
    def decode(self, z):
        return self.p(z)

model, vae = BPRModel(), VAE()
u_all, i_all = rows.nonzero(as_tuple=True)
batches = [(u_all, i_all, torch.randint(I, (len(u_all),)))]
user_batches = [torch.arange(U)]
'''


def readme_blocks():
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Use ProEx in your own model', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)


def run_in_empty_folder(tmp_path, code):
    (tmp_path / 'proex_core.py').write_bytes((ROOT / 'proex_core.py').read_bytes())
    (tmp_path / 'snippet.py').write_text(code)
    return subprocess.run([sys.executable, '-E', '-s', 'snippet.py'], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # no PYTHONPATH, no user site


def test_readme_section_is_short_and_has_both_loops():
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Use ProEx in your own model', 1)[1].split('\n## ', 1)[0]
    assert len(section.strip().splitlines()) <= 50
    for said in ('lambda1 * beta', 'no_grad', 'eval()', 'import proex_core as P', 'nll_fn'):
        assert said in section
    blocks = readme_blocks()
    assert len(blocks) == 2 and 'discriminative_objective' in blocks[0]
    assert 'generative_objective' in blocks[1]


def test_readme_snippets_train_with_proex_core_alone(tmp_path):
    for block in readme_blocks():
        r = run_in_empty_folder(tmp_path, SETUP + block + '\nprint("scores", tuple(scores.shape))\n')
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        losses = [float(x.split()[1]) for x in lines if x.split()[0].isdigit()]
        assert len(losses) == 25 and all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it trains
        assert lines[-1].startswith('scores (')


def test_the_copy_imports_nothing_of_the_project_and_names_the_layout(tmp_path):
    code = textwrap.dedent('''
        import sys, torch, proex_core as P
        assert not any(m in sys.modules for m in ('eval', 'data'))
        z = torch.randn(6, 4)
        c = torch.randn(6, 3, 4)                      # [B, K, d]: the wrong layout
        try:
            P.discriminative_objective(z, z, z, c, c, c)
        except ValueError as e:
            print(e)
        ''')
    r = run_in_empty_folder(tmp_path, code)
    assert r.returncode == 0, r.stderr
    imports = re.findall(r'^(?:import|from) (\S+)', (ROOT / 'proex_core.py').read_text(), flags=re.M)
    assert sorted(imports) == ['numpy', 'torch', 'torch.nn', 'torch.nn.functional']  # no argparse
    assert r.stdout.strip() == ("c_u: expected [K, B, d] (K profiles first) with B = 6, d = 4, got "
                                "[6, 3, 4], the transposed layout [B, K, d] with K = 3; pass "
                                "c_u.transpose(0, 1)")


import numpy as np  # noqa: E402  (used by the checks above)
