"""Issue 11, probe area: the exact failing inputs, table-driven. Each case failed on the code before the fix
(the before/after table is in the note on issue 11).

* item 3  -- `temlearn-probe` replaced earlier results silently: a non-empty --out is refused unless --overwrite;
* item 7  -- a test side too small for t-SNE made the CLI exit 1 after writing half its outputs: now skipped, warned;
* item 8  -- an empty class folder was dropped without a word: the CLI says which;
* item 8  -- the feature cache: a pickled .npy errored without naming it, a replaced file was used silently: now the
             cache is keyed by content and verified (SHA-256 in the file name), a bad file is named, removed, recomputed.
"""
import io, warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
import numpy as np, pytest, torch
from temlearn.core import run_cli, sha256_file
from temlearn.encoder import create_encoder, save_encoder
from temlearn.features import extract_features
from temlearn.probe import probe_cli


def class_folder(root, n_per_class=8, size=32, classes=('a', 'b', 'c'), seed=0, empty=()):
    "One sub-folder of PNG images per class (+ empty class folders `empty`)."
    from PIL import Image
    r = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (Path(root) / c).mkdir(parents=True)
        for i in range(n_per_class):
            a = r.normal(80 + 30 * ci, 20, (size, size))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(Path(root) / c / f"{c}{i:02d}.png")
    for e in empty: (Path(root) / e).mkdir()
    return Path(root)


@pytest.fixture(scope='module')
def encoder_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('enc')
    torch.manual_seed(0)
    return save_encoder(create_encoder('resnet18', in_chans=1, input_size=32), d / 'enc', method='test')


def cli(argv):
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()) as err:
        rc = run_cli(probe_cli, [str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


# ---- the CLI cases: (id, data folder, previous run into --out?, extra flags, exit status, stderr must say, files) ----
CLI_CASES = [
    # item 3: a second run into the same --out; before: exit 0, results.csv replaced silently
    dict(id='3-out-not-empty', data=dict(), first=True, extra=[], rc=1, says=['not empty', '--overwrite'],
         files=['results.csv', 'summary.csv', 'report.html']),
    # item 3: ... allowed with --overwrite
    dict(id='3-overwrite', data=dict(), first=True, extra=['--overwrite'], rc=0, says=[],
         files=['results.csv', 'summary.csv', 'report.html']),
    # item 7: 2 classes x 4 images -> 2 test images; before: exit 1 "t-SNE needs an (n >= 4, d) feature array", no report
    dict(id='7-small-test-side', data=dict(n_per_class=4, classes=('a', 'b')), first=False, extra=[], rc=0,
         says=['t-SNE skipped'], files=['results.csv', 'summary.csv', 'report.html']),
    # item 8: an empty class folder; before: exit 0, not a word about it
    dict(id='8-empty-class-folder', data=dict(empty=('empty_cls',)), first=False, extra=[], rc=0,
         says=['empty_cls', 'hold no images'], files=['results.csv', 'summary.csv', 'report.html']),
]


@pytest.mark.parametrize('case', CLI_CASES, ids=[c['id'] for c in CLI_CASES])
def test_cli_case(case, tmp_path, encoder_dir):
    data = class_folder(tmp_path / 'data', **case['data'])
    argv = ['--encoder', encoder_dir, '--data', data, '--out', tmp_path / 'out', '--shots', '1', '--seeds', '1',
            '--no-progress', '--no-imagenet', '--no-random']
    if case['first']:
        assert cli(argv)[0] == 0
        earlier = (tmp_path / 'out' / 'results.csv').read_bytes()
    rc, out, err = cli(argv + (['--shots', '2'] if case['first'] else []) + case['extra'])   # a second, different run
    assert rc == case['rc'], err
    for s in case['says']: assert s in err, err
    for f in case['files']: assert (tmp_path / 'out' / f).is_file()
    if case['first'] and rc != 0:          # refused: the earlier results are untouched
        assert (tmp_path / 'out' / 'results.csv').read_bytes() == earlier
    if case['id'] == '7-small-test-side':
        assert 't-SNE skipped' in (tmp_path / 'out' / 'report.html').read_text()
    if case['id'] == '8-empty-class-folder':
        assert 'empty_cls' in (tmp_path / 'out' / 'report.html').read_text()


# ---- the feature-cache cases: (id, how the cache file is tampered with) ----
def _pickled(f, good):
    "before: ValueError 'Object arrays cannot be loaded when allow_pickle=False', file not named"
    np.save(f, np.array([{'payload': 1}], dtype=object), allow_pickle=True)
    return f

def _replaced(f, good):
    "before: the replaced numbers were returned silently"
    np.save(f, np.zeros_like(good))
    return f

def _pickled_with_matching_name(f, good):
    "a pickled array planted under a name whose hash matches its bytes: never unpickled (before: not looked at)"
    bad = f.with_name('planted.npy')
    np.save(bad, np.array([{'payload': 1}], dtype=object), allow_pickle=True)
    key = f.name.split('-')[1].split('.')[0]
    f.unlink()
    return bad.rename(f.with_name(f"features-{key}-{sha256_file(bad)}.npy"))

def _truncated(f, good):
    "half a file (a killed writer elsewhere): named and recomputed"
    f.write_bytes(f.read_bytes()[:40])
    return f

CACHE_CASES = [('8-cache-pickled', _pickled, 'SHA-256'), ('8-cache-replaced', _replaced, 'SHA-256'),
               ('8-cache-pickled-named', _pickled_with_matching_name, 'not a plain .npy'),
               ('8-cache-truncated', _truncated, 'SHA-256')]


@pytest.mark.parametrize('name,tamper,says', CACHE_CASES, ids=[c[0] for c in CACHE_CASES])
def test_feature_cache_case(name, tamper, says, tmp_path):
    torch.manual_seed(0)
    enc = create_encoder('resnet18', in_chans=1, input_size=32)
    imgs = [np.random.default_rng(i).random((32, 32)).astype(np.float32) for i in range(5)]
    good = extract_features(enc, imgs, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob('features-*.npy'))
    assert len(files) == 1
    bad = tamper(files[0], good)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        got = extract_features(enc, imgs, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(got, good, atol=1e-5)                    # never the tampered numbers
    msgs = [str(x.message) for x in w if 'feature cache' in str(x.message)]
    assert msgs and str(bad) in msgs[0] and says in msgs[0], msgs        # the bad file is named, and what is wrong
    assert not bad.exists() or np.load(bad, allow_pickle=False).dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                  # the fresh entry is trusted again, silently
        np.testing.assert_allclose(extract_features(enc, imgs, cache_dir=tmp_path, progress=False), good, atol=1e-5)


def test_frame_features_files_pieces_and_bad_file(tmp_path):
    "Image-level features from files: large frames read in pieces, a bad file named, nothing on disk changed."
    from PIL import Image
    from temlearn.features import frame_features, image_features
    torch.manual_seed(0)
    enc = create_encoder('resnet18', in_chans=1, input_size=32)
    r = np.random.default_rng(0)
    big = tmp_path / 'big.png'; Image.fromarray(r.integers(0, 255, (1100, 700), dtype=np.uint8)).save(big)
    small = tmp_path / 'small.png'; Image.fromarray(r.integers(0, 255, (48, 80), dtype=np.uint8)).save(small)
    before = {p: sha256_file(p) for p in (big, small)}
    F = image_features(enc, [big, small], progress=False)
    assert F.shape == (2, 3 * (128 + 256 + 512) * 2) and np.isfinite(F).all()
    one = frame_features(enc, [big], tile=256, max_tiles=4, progress=False)           # 4 pieces of 256 px
    assert one.shape == (1, F.shape[1]) and not np.allclose(one[0], F[0])
    assert {p: sha256_file(p) for p in (big, small)} == before
    bad = tmp_path / 'bad.png'; bad.write_bytes(b'not an image')
    with pytest.raises(Exception, match='bad.png'):
        frame_features(enc, [small, bad], progress=False)
    with pytest.raises(ValueError, match='pool must be'):
        frame_features(enc, [small], pool=('median',), progress=False)
    with pytest.raises(ValueError, match='stages'):
        frame_features(enc, [small], stages=0, progress=False)
