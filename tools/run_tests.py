#!/usr/bin/env python3
"""temlearn's whole test suite, as CI runs it (called by `test.sh` after the install).

Checks, each counted as passed/failed in the closing line `N passed, N failed`:
1. export sync: `nbdev-export` leaves the library unchanged (temlearn/ matches the notebooks);
2. nbdev-test: every notebook in nbs/ (cells flagged `gpu`/`slow` skipped unless --flags asks for them);
3. pytest: every test in tests/;
4. docs smoke: nbdev's docs processor (what `nbdev-docs` runs before quarto) executes each notebook's
   export and show_doc cells; `_quarto.yml`/`sidebar.yml` list exactly the notebooks that exist; README.md
   carries the text of nbs/index.ipynb.
"""
import argparse, hashlib, json, os, re, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
LIB = ROOT / 'temlearn'
results = []          # (section, name, ok, detail)


def record(section, name, ok, detail=''):
    results.append((section, name, ok, detail))
    print(f"  {'PASS' if ok else 'FAIL'}  {section}: {name}{(' — ' + detail) if detail and not ok else ''}", flush=True)


def lib_hashes():
    return {p.relative_to(ROOT).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(LIB.rglob('*.py')) if '__pycache__' not in p.parts}


def check_export():
    print('== 1. library in sync with notebooks (nbdev-export)', flush=True)
    before = lib_hashes()
    r = subprocess.run(['nbdev-export'], cwd=ROOT, capture_output=True, text=True)
    after = lib_hashes()
    if r.returncode: return record('export', 'nbdev-export runs', False, r.stderr[-2000:])
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    record('export', 'nbdev-export leaves temlearn/ unchanged', not changed,
           f"changed by export: {', '.join(changed)} (run nbdev-export and commit)")


def notebooks():
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.relative_to(NBS).parts))


def run_nb(nb, flags):
    t = time.time()
    cmd = ['nbdev-test', str(nb)] + (['--flags', flags] if flags else [])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
    return nb, r.returncode == 0, time.time() - t, (r.stdout + r.stderr)[-4000:]


def check_notebooks(flags, workers):
    print(f'== 2. nbdev-test on every notebook ({workers} at a time{", flags: " + flags if flags else ""})', flush=True)
    with ThreadPoolExecutor(workers) as ex:
        for nb, ok, dt, out in ex.map(lambda nb: run_nb(nb, flags), notebooks()):
            record('nbdev-test', f'{nb.relative_to(ROOT)} ({dt:.0f} s)', ok, out)


def check_pytest(extra):
    print('== 3. pytest tests/', flush=True)
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / 'junit.xml'
        r = subprocess.run([sys.executable, '-m', 'pytest', 'tests', '-q', '-p', 'no:cacheprovider',
                            f'--junitxml={xml}', *extra], cwd=ROOT, env={**os.environ, 'MPLBACKEND': 'Agg'})
        if not xml.exists(): return record('pytest', 'pytest ran', False, f'exit code {r.returncode}')
        for case in ET.parse(xml).getroot().iter('testcase'):
            name = f"{case.get('classname')}::{case.get('name')}"
            if case.find('skipped') is not None: results.append(('pytest', name, None, 'skipped')); continue
            bad = case.find('failure') if case.find('failure') is not None else case.find('error')
            results.append(('pytest', name, bad is None, '' if bad is None else (bad.get('message') or '')[:300]))
            if bad is not None: print(f'  FAIL  pytest: {name}')
        if r.returncode not in (0, 1, 5): record('pytest', 'pytest exit status', False, f'exit code {r.returncode}')


def _proc_one(nb):
    "Run nbdev's docs processor on one notebook (what nbdev-docs does before handing over to quarto)."
    code = ("import sys, json; from pathlib import Path; from nbdev.processors import FilterDefaults; "
            "import nbdev.serve_drv as d; d.main((Path(sys.argv[1]), Path(sys.argv[2]), FilterDefaults)); "
            "nb = json.load(open(sys.argv[2])); "
            "docs = sum('[source]' in ''.join(o.get('data', {}).get('text/markdown', '')) "
            "for c in nb['cells'] for o in c.get('outputs', [])); "
            "src = json.load(open(sys.argv[1])); "
            "exp = sum(''.join(c['source']).lstrip().startswith('#| export') for c in src['cells'] if c['cell_type'] == 'code'); "
            "print(f'show_doc outputs: {docs}, export cells: {exp}'); "
            "sys.exit(0 if exp == 0 or docs > 0 else 3)")
    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / nb.name
        r = subprocess.run([sys.executable, '-c', code, str(nb), str(dst)], cwd=nb.parent, capture_output=True,
                           text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
        return nb, r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def check_docs(workers):
    print('== 4. docs smoke check (nbdev docs processor, _quarto.yml, sidebar, README)', flush=True)
    nbs = notebooks()
    with ThreadPoolExecutor(workers) as ex:
        for nb, ok, out in ex.map(_proc_one, nbs):
            record('docs', f'processor runs show_doc/export cells of {nb.relative_to(ROOT)}', ok, out)
    for f in ('_quarto.yml', 'sidebar.yml', 'nbdev.yml', 'styles.css'):
        record('docs', f'nbs/{f} exists', (NBS / f).exists())
    q = (NBS / '_quarto.yml').read_text() if (NBS / '_quarto.yml').exists() else ''
    record('docs', '_quarto.yml uses nbdev.yml and sidebar.yml', 'nbdev.yml' in q and 'sidebar.yml' in q)
    sb = (NBS / 'sidebar.yml').read_text() if (NBS / 'sidebar.yml').exists() else ''
    listed = set(re.findall(r'([\w./-]+\.ipynb)', sb))
    actual = {p.relative_to(NBS).as_posix() for p in nbs}
    record('docs', 'sidebar.yml lists exactly the notebooks in nbs/', listed == actual,
           f'missing from sidebar: {sorted(actual - listed)}; listed but absent: {sorted(listed - actual)}')
    idx = json.loads((NBS / 'index.ipynb').read_text())
    readme = (ROOT / 'README.md').read_text()
    norm = lambda s: re.sub(r'\s+', ' ', s).strip()
    missing = []
    for c in idx['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'markdown' or src.lstrip().startswith('---'): continue
        for para in re.split(r'\n\s*\n', src):
            if para.strip() and norm(para) not in norm(readme): missing.append(para.strip()[:80])
    record('docs', 'README.md carries the text of nbs/index.ipynb', not missing,
           'paragraphs of index.ipynb missing from README.md: ' + ' | '.join(missing[:5]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--flags', default='', help='nbdev-test flags to run, e.g. "gpu slow"')
    ap.add_argument('--workers', type=int, default=max(os.cpu_count() or 1, 1))
    ap.add_argument('--only', default='export,notebooks,pytest,docs')
    ap.add_argument('pytest_args', nargs='*', help='extra pytest arguments (after --)')
    a = ap.parse_args()
    t0 = time.time()
    only = a.only.split(',')
    if 'export' in only: check_export()
    if 'notebooks' in only: check_notebooks(a.flags, a.workers)
    if 'pytest' in only: check_pytest(a.pytest_args)
    if 'docs' in only: check_docs(a.workers)
    passed = sum(1 for r in results if r[2] is True)
    failed = [r for r in results if r[2] is False]
    skipped = sum(1 for r in results if r[2] is None)
    print(f'\n== summary ({time.time() - t0:.0f} s)')
    for sec, name, _, detail in failed: print(f'FAILED {sec}: {name}\n{detail}\n')
    print(f'{passed} passed, {len(failed)} failed, {skipped} skipped')
    sys.exit(1 if failed else 0)


if __name__ == '__main__': main()
