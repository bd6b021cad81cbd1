"""A real browser drives both labeling widgets: Voilà serves a notebook on localhost, headless Chromium clicks a
thumbnail and paints a stroke, and the test reads the Python state the kernel writes to a JSON file after every change.

    python -m pytest -m slow tests/test_label_browser.py -v

Needs (not installed by CI; the test skips without them):
    apt-get install -y chromium chromium-driver      # Debian/Ubuntu: Chromium and its WebDriver
    pip install voila selenium ipykernel
Fails on any JavaScript error (console errors, uncaught exceptions, unhandled rejections). Screenshots and the collected
JavaScript errors go to $TEMLEARN_BROWSER_ARTIFACTS (default: the test's temporary folder)."""
import json, os, shutil, socket, subprocess, sys, time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser') or '/usr/bin/chromium'
DRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'

NOTEBOOK_CODE = r'''
import json, os
import numpy as np
from temlearn.labelgrid import LabelGrid
from temlearn.paint import MaskPainter

STATE = os.environ['TL_STATE']
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:64, :64]
images = [(1 - 0.6 * ((yy - 32) ** 2 + (xx - 32) ** 2 < (3 + i % 10 * 2) ** 2) + rng.normal(0, 0.1, (64, 64))).astype('float32')
          for i in range(30)]                                   # one dark particle each, growing with i % 10
grid = LabelGrid(images, ['a', 'b', 'c'], suggested=[5, 17, 2], page_size=12, thumb_size=64)
Y, X = np.mgrid[:120, :160]
img = (1 - 0.7 * sum(((Y - cy) ** 2 + (X - cx) ** 2 < r * r) for cy, cx, r in [(30, 40, 12), (45, 110, 18), (95, 60, 9)])
       + rng.normal(0, 0.05, (120, 160))).astype(np.float32)
painter = MaskPainter(img, classes=('background', 'particle'), radius=3, opacity=0.6)
events = []

def dump(w=None):
    if w is not None: events.append(type(w).__name__)
    m = painter.mask
    state = dict(labels={str(k): v for k, v in grid.labels.items()}, mask_counts=np.bincount(m.ravel(), minlength=2).tolist(),
                 painted=np.argwhere(m == 1).tolist() if (m == 1).sum() < 5000 else 'many', grid_page=grid.page,
                 errors=[grid.error, painter.error], events=events, ack=painter._ack)
    with open(STATE + '.tmp', 'w') as f: json.dump(state, f)
    os.replace(STATE + '.tmp', STATE)

grid.on_change(dump); painter.on_change(dump); dump()
'''

# Voilà's lab template links FontAwesome from a CDN; offline (CI, lab machines) that is a console error. The test serves
# an otherwise identical template without those two links (`super.super()` skips the lab block's links).
OFFLINE_TEMPLATE = r'''{%- extends 'lab/index.html.j2' -%}
{%- block notebook_css -%}
  {% if frontend == "voila" %}{{ resources.include_js("static/voila-style.js") }}{% endif %}
  {{ spinner.css() }}
  <style>.jp-mod-noOutputs.jp-mod-noInput { display: none; }</style>
  {{ super.super() }}
{%- endblock notebook_css -%}
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(fn, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v: return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _requirements():
    "Skip (with the install command) unless Voilà, selenium, ipykernel, Chromium and ChromeDriver are all here."
    missing = [m for m in ('voila', 'selenium', 'ipykernel') if not _importable(m)]
    missing += [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"browser test needs {', '.join(map(str, missing))}: apt-get install -y chromium chromium-driver; "
                    "pip install voila selenium ipykernel")


def _importable(mod):
    import importlib.util
    return importlib.util.find_spec(mod) is not None


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory):
    d = Path(os.environ.get('TEMLEARN_BROWSER_ARTIFACTS') or tmp_path_factory.mktemp('browser-artifacts'))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    _requirements()
    import nbformat
    d = tmp_path_factory.mktemp('voila')
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CODE), nbformat.v4.new_code_cell('grid'), nbformat.v4.new_code_cell('painter')]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, d / 'widgets.ipynb')
    tpl = d / 'jupyter' / 'voila' / 'templates' / 'tl-offline'
    tpl.mkdir(parents=True)
    (tpl / 'conf.json').write_text(json.dumps({'base_template': 'lab'}))
    (tpl / 'index.html.j2').write_text(OFFLINE_TEMPLATE)
    port, state = _free_port(), d / 'state.json'
    env = dict(os.environ, TL_STATE=str(state), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
               JUPYTER_PATH=os.pathsep.join([str(d / 'jupyter'), os.environ.get('JUPYTER_PATH', '')]))
    log = open(d / 'voila.log', 'w')
    # jupytext's lab extension, when installed, fails to load under Voilà (module-federation RUNTIME-012 for
    # @jupyterlab/docmanager): it is unrelated to the widgets, so it is left out
    proc = subprocess.Popen([sys.executable, '-m', 'voila', 'widgets.ipynb', f'--port={port}', '--Voila.ip=127.0.0.1',
                             '--no-browser', '--show_tracebacks=True', '--template=tl-offline',
                             '--VoilaConfiguration.extension_denylist=["jupyterlab-jupytext"]'],
                            cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            if proc.poll() is not None: pytest.fail('voila exited:\n' + (d / 'voila.log').read_text())
            try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); return True
            except OSError: return False
        wait_for(up, 60, 'voila to listen')
        yield dict(url=f'http://127.0.0.1:{port}/', state=state, dir=d)
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture(scope='module')
def driver(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--window-size=1280,1700', f'--user-data-dir={tmp_path_factory.mktemp("chrome-profile")}'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': '''
        window.__jsErrors = [];
        addEventListener('error', e => __jsErrors.push('error: ' + (e.message || e.type) + ' @ ' + (e.filename || '') + ':' + (e.lineno || '')));
        addEventListener('unhandledrejection', e => __jsErrors.push('unhandled rejection: ' + String(e.reason && (e.reason.stack || e.reason))));
    '''})
    yield drv
    drv.quit()


def js_errors(drv):
    "Every JavaScript problem so far: console errors (SEVERE) and uncaught errors / rejections."
    logs = [f"console {e['level']}: {e['message']}" for e in drv.get_log('browser') if e['level'] == 'SEVERE']
    return logs + (drv.execute_script('return window.__jsErrors || []') or [])


def read_state(path):
    try: return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError): return None


def test_click_label_and_paint_in_a_real_browser(server, driver, artifacts):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    drv, state, errors = driver, server['state'], []
    try:
        drv.get(server['url'])
        wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, '.tl-grid .tl-cell img') and
                 drv.find_elements(By.CSS_SELECTOR, '.tl-painter canvas.tl-overlay'), 180, 'both widgets to render')
        wait_for(lambda: read_state(state), 30, 'the kernel to write its first state')
        cells = drv.find_elements(By.CSS_SELECTOR, '.tl-grid .tl-cell')
        assert [c.get_attribute('data-index') for c in cells][:4] == ['5', '17', '2', '0']   # suggested first
        assert '★1' in cells[0].text
        assert 'null' not in drv.find_element(By.CSS_SELECTOR, '.tl-grid').text
        assert 'null' not in drv.find_element(By.CSS_SELECTOR, '.tl-painter').text

        # LabelGrid: click a thumbnail, then a class button
        drv.find_element(By.CSS_SELECTOR, '.tl-cell[data-index="17"]').click()
        drv.find_element(By.CSS_SELECTOR, '.tl-grid .tl-class[data-class="b"]').click()
        wait_for(lambda: (read_state(state) or {}).get('labels') == {'17': 'b'}, 30, "label 17 -> 'b' in Python")
        # hover another thumbnail and press 3 (the grid has focus after the click)
        ActionChains(drv).move_to_element(drv.find_element(By.CSS_SELECTOR, '.tl-cell[data-index="0"]')).perform()
        ActionChains(drv).send_keys('3').perform()
        wait_for(lambda: (read_state(state) or {}).get('labels') == {'17': 'b', '0': 'c'}, 30, "label 0 -> 'c' via key 3")
        wait_for(lambda: drv.find_element(By.CSS_SELECTOR, '.tl-cell[data-index="0"] .tl-lab').text == 'c', 10,
                 'the label chip to show the Python state')
        # the next page button: Python sends the second page
        drv.find_element(By.CSS_SELECTOR, '.tl-grid .tl-next').click()
        wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, '.tl-cell[data-index="12"]'), 30, 'page 2 to arrive')
        drv.find_element(By.CSS_SELECTOR, '.tl-grid .tl-first').click()

        # MaskPainter: a horizontal mouse stroke across the stage
        stage = drv.find_element(By.CSS_SELECTOR, '.tl-painter .tl-stage')
        drv.execute_script('arguments[0].scrollIntoView({block: "center"})', stage)
        rect = drv.execute_script('const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]', stage)
        scale = rect[0] / 160
        y_img, x0_img, x1_img = 90, 20, 140
        ox = lambda x: int(round((x + 0.5) * scale - rect[0] / 2))      # offsets from the stage centre
        oy = int(round((y_img + 0.5) * scale - rect[1] / 2))
        chain = ActionChains(drv).move_to_element_with_offset(stage, ox(x0_img), oy).click_and_hold()
        for x in range(x0_img + 10, x1_img + 1, 10): chain = chain.move_to_element_with_offset(stage, ox(x), oy)
        chain.release().perform()
        st = wait_for(lambda: (s := read_state(state)) and s['mask_counts'][1] > 0 and s, 30, 'the stroke in Python')
        ys = sorted({p[0] for p in st['painted']}); xs = sorted({p[1] for p in st['painted']})
        assert abs(ys[0] - (y_img - 3)) <= 2 and abs(ys[-1] - (y_img + 3)) <= 2, ys      # radius 3 around y=90
        assert abs(xs[0] - (x0_img - 3)) <= 2 and abs(xs[-1] - (x1_img + 3)) <= 2, (xs[0], xs[-1])
        # the canvas shows what Python sent back (RLE -> overlay), and the stroke preview was cleared on ack
        px = lambda cls, y, x: drv.execute_script(
            f'return Array.from(document.querySelector(".tl-painter canvas.{cls}").getContext("2d")'
            f'.getImageData({x}, {y}, 1, 1).data)')
        wait_for(lambda: px('tl-overlay', y_img, 80)[3] == 255, 10, 'the overlay to show the painted pixel')
        assert px('tl-overlay', 10, 10)[3] == 0
        wait_for(lambda: drv.execute_script('''const c = document.querySelector(".tl-painter canvas.tl-preview");
            return !c.getContext("2d").getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 == 3 && v)'''),
                 10, 'the stroke preview to clear after the ack')
        drv.save_screenshot(str(artifacts / 'browser_painted.png'))

        # undo button, then flood fill by tool button + click, then ctrl+z from the keyboard
        drv.find_element(By.CSS_SELECTOR, '.tl-painter .tl-undo').click()
        wait_for(lambda: read_state(state)['mask_counts'] == [19200, 0], 30, 'undo in Python')
        drv.find_element(By.CSS_SELECTOR, '.tl-painter .tl-tool[data-tool="fill"]').click()
        ActionChains(drv).move_to_element_with_offset(stage, ox(5), int(round(5.5 * scale - rect[1] / 2))).click().perform()
        wait_for(lambda: read_state(state)['mask_counts'] == [0, 19200], 30, 'flood fill in Python')
        ActionChains(drv).key_down(Keys.CONTROL).send_keys('z').key_up(Keys.CONTROL).perform()
        wait_for(lambda: read_state(state)['mask_counts'] == [19200, 0], 30, 'ctrl+z in Python')
        assert read_state(state)['errors'] == ['', '']
    finally:
        drv.save_screenshot(str(artifacts / 'browser_final.png'))
        errors = js_errors(drv)
        (artifacts / 'browser_js_errors.json').write_text(json.dumps(errors, indent=1))
    assert errors == [], errors
