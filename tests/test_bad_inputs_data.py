"""Issue 11 — bad inputs to the data stages (io, masks, preprocess, data, patches): each case is the exact input that
the earlier code mishandled, and the behaviour it must have now. Table-driven: one row per case."""
import hashlib, io, warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from temlearn.core import TEMImage, run_cli
from temlearn.io import write_tiff


def _frame(n=128, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.poisson(800, (n, n)) * (1 + 0.2 * np.linspace(0, 1, n))[None]).astype(dtype)


def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(np.asarray(a, np.uint8)).save(path)


def _raw_folder(root, n=3, bad=None):
    "n calibrated raw frames with particle labels; `bad`: name of an extra unusable frame ('nan', 'const', 'small')."
    for i in range(n):
        f = _frame(128, i); m = np.zeros(f.shape, np.uint8); m[30:70, 30:70] = 255; f[m > 0] *= 0.6
        write_tiff(TEMImage(f, 0.02), root / f"f{i}.tif"); _png(root / f"f{i}_label.png", m)
    if bad:
        a = {'nan': np.full((128, 128), np.nan, np.float32), 'const': np.full((128, 128), 5.0, np.float32),
             'small': _frame(16, 9)}[bad]
        write_tiff(TEMImage(a, 0.02), root / f"bad_{bad}.tif"); _png(root / f"bad_{bad}_label.png", np.zeros(a.shape))
    return root


def _quiet(f, *a, **k):
    with redirect_stderr(io.StringIO()) as err, redirect_stdout(io.StringIO()):
        rc = f(*a, **k)
    return rc, err.getvalue()


# ---------------------------------------------------------------------------------------------- cases
def case_multiclass_mask_kept_by_patchify():
    "5. a 3-class mask (0/1/2) keeps its classes through patching (was binarised to 0/1)."
    from temlearn.preprocess import patchify
    m = np.zeros((64, 64), np.uint8); m[:20, :20] = 2; m[40:60, 40:60] = 1
    p = patchify(np.zeros((64, 64), np.float32), m, size=32, min_foreground=100)
    assert sorted(np.unique(p.masks).tolist()) == [0, 1, 2]


def case_multiclass_mask_kept_by_preprocess():
    "5. preprocessing a frame with a 3-class mask keeps the classes in the patches."
    from temlearn.preprocess import preprocess
    m = np.zeros((128, 128), np.uint8); m[:40, :40] = 2; m[80:120, 80:120] = 1
    p = preprocess(TEMImage(_frame(), 0.02), m, size=64, min_foreground=100)
    assert sorted(np.unique(p.masks).tolist()) == [0, 1, 2]


def case_stray_mask_values_refused():
    "5. a label with anti-aliased grey values {0, 3, 17, 255} is an error naming it (was silently binarised)."
    from temlearn.preprocess import patchify
    m = np.zeros((64, 64), np.uint8); m[10:20, 10:20] = 255; m[9, 10:20] = 17; m[8, 10:20] = 3
    with pytest.raises(ValueError, match=r'mask values \{0, 3, 17, 255\}'):
        patchify(np.zeros((64, 64), np.float32), m, size=32)


def case_read_mask_multiclass_file(tmp_path):
    "5. a multi-class label file read from disk keeps its classes; binarising only when asked."
    from temlearn.masks import read_mask
    a = np.zeros((8, 8), np.uint8); a[:4] = 1; a[0, :2] = 2
    _png(tmp_path / 'x_label.png', a)
    assert read_mask(tmp_path / 'x_label.png').max() == 2
    assert read_mask(tmp_path / 'x_label.png', binarize=True).max() == 1


def case_float16_frame(tmp_path):
    "8. float16 frames are valid (the float16 sum overflowed and they were rejected as 'NaN or inf')."
    from temlearn.preprocess import rescale, preprocess
    f = _frame(128, dtype=np.float16)
    assert np.isfinite(rescale(f)).all()
    assert preprocess(f, size=None).shape == (128, 128)


def case_minus_inf_pixel_refused():
    "8. a -inf pixel is an error (x-ray removal turned it into 0 silently)."
    from temlearn.preprocess import remove_xrays
    f = _frame(); f[5, 5] = -np.inf
    with pytest.raises(ValueError, match='NaN or infinite'): remove_xrays(f)


def case_fast_median_nan_refused():
    "8. `fast_median` of an image with NaN is an error (it returned a number, ignoring the NaN)."
    from temlearn.preprocess import fast_median
    a = _frame(1100).ravel(); a[10] = np.nan
    with pytest.raises(ValueError, match='NaN'): fast_median(a)


def case_empty_class_folder_reported(tmp_path):
    "8. an empty class folder is reported by name (it was dropped without a word)."
    from temlearn.data import index_folder
    for c in ('a', 'b'):
        for i in range(2): _png(tmp_path / c / f"{i}.png", np.full((8, 8), i * 50))
    (tmp_path / 'empty_class').mkdir()
    with pytest.warns(UserWarning, match='empty_class'): index_folder(tmp_path)


def case_images_without_masks_reported(tmp_path):
    "8. images without a label are reported — how many and which (they were dropped silently)."
    from temlearn.data import seg_dataloaders
    rng = np.random.default_rng(0)
    for i in range(5):
        _png(tmp_path / f"im{i}.png", rng.integers(0, 255, (32, 32)))
        if i < 4: _png(tmp_path / f"im{i}_label.png", (rng.random((32, 32)) > 0.5) * 255)
    with pytest.warns(UserWarning, match=r'1 of 5 images have no label.*im4\.png'):
        seg_dataloaders(tmp_path, size=16, bs=2, valid_frac=0.3)


def case_preprocess_cli_nan_frame_named(tmp_path):
    "6./3. a NaN frame in a folder: skipped, named in <out>.errors.csv, the others written, exit 1 ('img contains NaN')."
    from temlearn.patches import preprocess_cli
    from temlearn.data import read_hdf5_dataset
    raw = _raw_folder(tmp_path / 'raw', bad='nan')
    rc, err = _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--size', '64', '--min-foreground', '50', '--workers', '1', '--quiet'])
    assert rc == 1 and 'skipped' in err
    assert 'bad_nan.tif' in (tmp_path / 'd.h5.errors.csv').read_text() and 'NaN' in (tmp_path / 'd.h5.errors.csv').read_text()
    assert len(set(read_hdf5_dataset(tmp_path / 'd.h5')[2].source)) == 3


def _unusable_frame_skipped(tmp_path, bad):
    "3. a constant or too-small frame does not abort the folder run."
    from temlearn.patches import preprocess_cli
    raw = _raw_folder(tmp_path / 'raw', bad=bad)
    rc, err = _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--size', '64', '--min-foreground', '50', '--workers', '1', '--quiet'])
    assert rc == 1 and (tmp_path / 'd.h5').exists() and f'bad_{bad}.tif' in (tmp_path / 'd.h5.errors.csv').read_text()


def case_preprocess_cli_constant_frame_skipped(tmp_path): _unusable_frame_skipped(tmp_path, 'const')
def case_preprocess_cli_too_small_frame_skipped(tmp_path): _unusable_frame_skipped(tmp_path, 'small')


def case_preprocess_cli_partial_labels_named(tmp_path):
    "6. only some frames have labels: a message naming them (was 'error: 0' from a KeyError)."
    from temlearn.patches import preprocess_cli
    raw = _raw_folder(tmp_path / 'raw')
    write_tiff(TEMImage(_frame(128, 7), 0.02), raw / 'unlabeled_frame.tif')
    (raw / 'f0_label.png').rename(raw / 'f0_label.png.bak')
    rc, err = _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--workers', '1', '--quiet'])
    assert rc == 1 and 'have no label' in err and 'unlabeled_frame.tif' in err and 'f0.tif' in err


def case_preprocess_cli_existing_output(tmp_path):
    "3. an existing output file is refused unless --overwrite (it was replaced silently)."
    from temlearn.patches import preprocess_cli
    raw = _raw_folder(tmp_path / 'raw')
    (tmp_path / 'd.h5').write_bytes(b'earlier results')
    rc, err = _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--size', '64', '--min-foreground', '50', '--workers', '1', '--quiet'])
    assert rc == 1 and 'exists' in err and (tmp_path / 'd.h5').read_bytes() == b'earlier results'
    rc, _ = _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--size', '64', '--min-foreground', '50', '--workers', '1', '--quiet', '--overwrite'])
    assert rc == 0 and (tmp_path / 'd.h5').read_bytes() != b'earlier results'


def case_preprocess_cli_bad_arguments(tmp_path):
    "6. bad arguments: one line on stderr and exit 2 (the same convention in every CLI)."
    from temlearn.patches import preprocess_cli
    raw = _raw_folder(tmp_path / 'raw', n=1)
    for argv in ([raw, '-o', tmp_path / 'x.h5', '--size', '0'], [tmp_path / 'nope', '-o', tmp_path / 'x.h5'],
                 [raw, '-o', tmp_path / 'x.h5', '--where', 'material=Au'], [raw]):
        rc, err = _quiet(run_cli, preprocess_cli, argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (argv, err)


def case_inputs_never_modified(tmp_path):
    "Earlier guarantee: no input file or array is modified by the chain or the CLI."
    from temlearn.preprocess import preprocess, remove_xrays, rescale, flatfield
    from temlearn.patches import preprocess_cli
    f = _frame(); f[3, 3] = 1e5; f0 = f.copy()
    remove_xrays(f); flatfield(f); rescale(f); preprocess(f, size=None)
    assert np.array_equal(f, f0)
    raw = _raw_folder(tmp_path / 'raw')
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.iterdir()}
    _quiet(run_cli, preprocess_cli, [raw, '-o', tmp_path / 'd.h5', '--size', '64', '--min-foreground', '50', '--workers', '1', '--quiet'])
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.iterdir()}


CASES = [v for k, v in sorted(globals().items()) if k.startswith('case_')]


@pytest.mark.parametrize('case', CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input(case, tmp_path):
    import inspect
    params = inspect.signature(case).parameters
    case(**({'tmp_path': tmp_path} if 'tmp_path' in params else {}))
