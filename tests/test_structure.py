"""The shape of the code base, checked (issue 12): a reader's map that stays honest.

- every module is exported from exactly one numbered notebook, and imports only modules of lower-numbered notebooks
  (so there is no import cycle and the notebooks can be read in order);
- no module is longer than 500 lines; the median export cell is at most 20 lines;
- no private name (`_x`) is imported from another temlearn module;
- notebook cells that import something hold nothing but imports (nbdev's docs processor runs every cell with an
  import statement; a cell mixing imports and work would run that work while the docs are built).
"""
import ast, json, re, statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB, NBS = ROOT / 'temlearn', ROOT / 'nbs'


def _notebooks():
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(q.startswith(('.', '_')) for q in p.relative_to(NBS).parts))


def _cells(nb):
    return [c for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']


def _module_numbers():
    "module name → number of the notebook that exports it."
    out = {}
    for nb in _notebooks():
        m = re.match(r'(\d+)_', nb.name)
        for c in _cells(nb):
            e = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
            if e and m:
                assert e.group(1) not in out, f"module {e.group(1)} exported by two notebooks"
                out[e.group(1)] = int(m.group(1))
    return out


def _modules():
    return sorted(p for p in LIB.glob('*.py') if not p.name.startswith('_'))


def _temlearn_imports(path):
    "(imported module, [names]) for every `from temlearn.x import …` / `from .x import …` in a module."
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module.split('.')[-1] if node.module.startswith('temlearn.') else (node.module if node.level else None)
            if mod: out.append((mod, [a.name for a in node.names]))
        if isinstance(node, ast.Import):
            out += [(a.name.split('.')[1], []) for a in node.names if a.name.startswith('temlearn.')]
    return out


def test_every_module_has_a_numbered_notebook():
    nums = _module_numbers()
    missing = [p.stem for p in _modules() if p.stem not in nums]
    assert not missing, f"modules without a numbered notebook: {missing}"


def test_imports_follow_notebook_order():
    nums, bad = _module_numbers(), []
    for p in _modules():
        for mod, _ in _temlearn_imports(p):
            if mod in nums and mod != p.stem and nums[mod] >= nums[p.stem]:
                bad.append(f"{p.stem} ({nums[p.stem]:02d}) imports {mod} ({nums[mod]:02d})")
    assert not bad, '; '.join(bad)


def test_no_private_names_across_modules():
    bad = [f"{p.stem} imports {mod}.{n}" for p in _modules() for mod, names in _temlearn_imports(p)
           for n in names if n.startswith('_') and mod != p.stem]
    assert not bad, '; '.join(bad)


@pytest.mark.parametrize('path', _modules(), ids=lambda p: p.stem)
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= 500, f"{path.name} has {n} lines: split it into rooms"


def test_median_export_cell_length():
    lengths = [len([l for l in ''.join(c['source']).splitlines() if l.strip()]) - 1
               for nb in _notebooks() for c in _cells(nb) if ''.join(c['source']).lstrip().startswith('#| export')]
    assert lengths and statistics.median(lengths) <= 20, f"median export cell {statistics.median(lengths)} lines"


_IMPORT_LINE = re.compile(r'^\s*(from\s+\S+\s+import\s+.+|import\s+.+)$')

def _import_cells_mixing_work(nb):
    bad = []
    for i, c in enumerate(_cells(nb)):
        src = ''.join(c['source'])
        if src.lstrip().startswith(('#| export', '#|export')) or not re.search(r'^\s*(import|from)\s', src, re.M): continue
        lines = [l for l in src.splitlines() if l.strip() and not l.strip().startswith('#')]
        if any(re.match(r'^\s*(import|from)\s', l) for l in lines) and not all(_IMPORT_LINE.match(l) or l.startswith((' ', ')')) for l in lines):
            bad.append(f"{nb.name} cell {i}: {lines[0][:60]}")
    return bad


@pytest.mark.parametrize('nb', _notebooks(), ids=lambda p: p.relative_to(NBS).as_posix())
def test_import_cells_hold_only_imports(nb):
    bad = _import_cells_mixing_work(nb)
    assert not bad, 'cells that mix imports with work (move the imports to a cell of their own): ' + '; '.join(bad)
