"""The main job (`temlearn-demo`): runs on the embedded default and on real folders, writes an honest, complete report.

The default suite runs the tiny `--quick` demo and checks the report's structure: every figure is present, every
part has its pretrained, random-init and classical rows, and every number printed in a verdict is in results.json.
Slow tests (`pytest -m slow`) run the full-size demo, the real ISBI 2012 folder and the folder of raw microscope files,
and open the report in a real headless browser."""
import html, io, json, re, shutil, subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from temlearn.core import run_cli, shared_data
from temlearn.workflow import demo_cli, find_parts, LAYOUTS

PARTS = {'classification': {'pretrained', 'random init', 'histogram'},
         'segmentation': {'pretrained', 'random init', 'smoothed Otsu'}}


def _run(argv):
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()) as err:
        rc = run_cli(demo_cli, argv, 'temlearn-demo')
    return rc, out.getvalue(), err.getvalue()


def check_report(out: Path, parts=('pretraining', 'classification', 'segmentation', 'particles')):
    "The structure every report must have."
    page = (out / 'report.html').read_text()
    res = json.loads((out / 'results.json').read_text())
    for p in parts: assert p in res, f"results.json has no {p!r} part"
    figs = {'pretraining': 'pretraining', 'classification': 'probe', 'segmentation': 'segmentation', 'particles': 'particles'}
    for p in parts:
        if p == 'particles' and res['particles']['count'] == 0: continue
        assert f"data-figure='{figs[p]}'" in page, f"figure of {p} missing"
    for p, rows in PARTS.items():
        if p in parts: assert {r['encoder'] for r in res[p]['rows']} == rows, p
    assert page.count('plotly.js v') == 1, 'the plotly library must be embedded exactly once (offline report)'
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']https?:", page), 'the report must not load anything from the network'
    text = html.unescape(page)
    for p in PARTS:
        if p not in parts: continue
        v = res[p]['verdict']
        assert v['sentence'] in text
        for b, d in v['vs'].items():          # every number of the verdict is in results.json
            for key in ('difference', 'ci_low', 'ci_high'): assert f"{d[key]:+.3f}" in v['sentence']
    assert res['run']['versions']['torch'] and res['run']['seconds'] > 0
    return res, page


def test_demo_quick_embedded(tmp_path):
    rc, out, err = _run(['--out', tmp_path / 'run', '--quick', '--quiet'])
    assert rc == 0, err
    res, page = check_report(tmp_path / 'run')
    assert res['particles']['unit'] == 'nm' and 'nan nm' not in page
    assert (tmp_path / 'run' / 'encoder' / 'encoder.json').is_file() and (tmp_path / 'run' / 'segmenter' / 'model.json').is_file()
    assert 'wrote' in out
    rc, _, err = _run(['--out', tmp_path / 'run', '--quick', '--quiet'])       # earlier results are never mixed in
    assert rc == 1 and 'not empty' in err


def test_demo_arguments(tmp_path):
    assert _run([])[0] == 2
    assert _run(['--out', tmp_path / 'o', '--data', tmp_path / 'missing'])[0] == 2
    assert _run(['--out', tmp_path / 'o', '--pixel-size', '-1'])[0] == 2
    (tmp_path / 'empty').mkdir(); (tmp_path / 'empty' / 'notes.txt').write_text('x')
    rc, _, err = _run(['--out', tmp_path / 'o2', '--data', tmp_path / 'empty'])
    assert rc == 1 and 'unlabeled/' in err and 'classes/' in err and '_label.png' in err and len(err.strip().splitlines()) == 1


def test_find_parts_on_real_folders():
    isbi = shared_data('isbi2012-membranes')
    if isbi is None: pytest.skip('shared data not found')
    p = find_parts(isbi)
    assert len(p.pairs) == 30 and p.classes is None and not p.unlabeled
    raw = find_parts(shared_data('raw'))
    assert len(raw.unlabeled) >= 10 and raw.pairs is None


def test_uncalibrated_sizes_in_pixels(tmp_path):
    "PNG pairs without --pixel-size: particle sizes in px, said so; with --pixel-size: nm."
    from temlearn.reference import blobs
    ims, ms = blobs(6, size=64, seed=1)
    for i, (im, m) in enumerate(zip(ims, ms)):
        Image.fromarray(((im - im.min()) / np.ptp(im) * 255).astype(np.uint8)).save(tmp_path / f"b{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"b{i}_label.png")
    rc, _, err = _run(['--out', tmp_path / 'px', '--data', tmp_path, '--quick', '--quiet'])
    assert rc == 0, err
    res, page = check_report(tmp_path / 'px', parts=('pretraining', 'segmentation', 'particles'))
    assert res['particles']['unit'] == 'px' and 'nan nm' not in page and '--pixel-size' in page
    rc, _, err = _run(['--out', tmp_path / 'nm', '--data', tmp_path, '--quick', '--quiet', '--pixel-size', '0.5'])
    assert rc == 0 and json.loads((tmp_path / 'nm' / 'results.json').read_text())['particles']['unit'] == 'nm'


# ------------------------------------------------------------------------------------------- slow: real folders, browser
@pytest.mark.slow
def test_demo_on_isbi_folder(tmp_path):
    isbi = shared_data('isbi2012-membranes')
    if isbi is None: pytest.skip('shared data not found')
    rc, _, err = _run(['--out', tmp_path / 'isbi', '--data', isbi, '--quiet'])
    assert rc == 0, err
    check_report(tmp_path / 'isbi', parts=('pretraining', 'segmentation', 'particles'))


@pytest.mark.slow
def test_demo_on_raw_files_as_unlabeled(tmp_path):
    raw = shared_data('raw')
    if raw is None: pytest.skip('shared data not found')
    rc, _, err = _run(['--out', tmp_path / 'raw', '--data', raw, '--quiet'])
    assert rc == 1 and 'errors.csv' in (tmp_path / 'raw' / 'report.html').read_text()    # some raw files are not usable images
    res = json.loads((tmp_path / 'raw' / 'results.json').read_text())
    assert res['pretraining']['n_images'] >= 8 and any('temp.mrc' in e['file'] for e in res['run']['errors'])


def _chromium():
    try: from selenium import webdriver
    except ImportError: return None
    exe, drv = shutil.which('chromium'), shutil.which('chromedriver')
    if not (exe and drv): return None
    opts = webdriver.ChromeOptions(); opts.binary_location = exe
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1300,2400'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    from selenium.webdriver.chrome.service import Service
    return webdriver.Chrome(options=opts, service=Service(drv))


@pytest.mark.slow
def test_report_in_a_real_browser(tmp_path):
    """The full-size demo's report opened in headless Chromium (Debian packages chromium + chromium-driver, and
    `pip install selenium`): no JavaScript error, every plotly figure rendered; a screenshot is saved."""
    drv = _chromium()
    if drv is None: pytest.skip('needs selenium and Debian chromium + chromium-driver (apt-get install chromium chromium-driver)')
    try:
        rc, _, err = _run(['--out', tmp_path / 'full', '--quiet'])
        assert rc == 0, err
        check_report(tmp_path / 'full')
        drv.get((tmp_path / 'full' / 'report.html').as_uri())
        n_plots = drv.execute_script("return document.querySelectorAll('.js-plotly-plot .main-svg').length")
        errors = [e for e in drv.get_log('browser') if e['level'] == 'SEVERE']
        shot = Path(__file__).resolve().parents[1] / 'tests' / 'artifacts'; shot.mkdir(exist_ok=True)
        drv.save_screenshot(str(shot / 'report.png'))
        assert not errors, errors
        assert n_plots >= 4, n_plots
    finally: drv.quit()
