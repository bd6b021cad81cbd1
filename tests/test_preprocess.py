"Tests of temlearn.preprocess: x-rays, flat field, rescaling, patching, percolation, CLI."
import importlib, importlib.util
import numpy as np
import pytest
from PIL import Image
from temlearn.core import TEMImage, shared_data
from temlearn.core import run_cli
from temlearn.preprocess import (percolates, nanowire_density, dbscan_pixels, resize_mask, remove_xrays, flatfield,
                                 fit_illumination, illumination_surface, rescale, patchify, preprocess, fast_median,
                                 fast_percentile, RESCALE_METHODS)
from temlearn.patches import preprocess_cli
from temlearn.reference import xrays_loop as _xrays_loop_pair


def xrays_loop(img, threshold=1500, passes=2):
    "The published rule as a per-pixel loop (temlearn.reference), image only."
    return _xrays_loop_pair(img, threshold, passes)[0]


# ---------------------------------------------------------------- synthetic frames with known answers
def frame_with_truth(n=1024, seed=0, dose=1000, n_spikes=200):
    "Known smooth illumination × Poisson substrate with dark particles, plus injected x-ray hits."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    truth = 1 + 0.5 * xx * yy - 0.25 * (yy - 0.4) ** 2 + 0.15 * xx
    parts = np.zeros((n, n), bool)
    for _ in range(25):
        cy, cx = rng.uniform(0, n, 2); r = rng.uniform(n / 60, n / 25)
        parts |= (yy * n - cy) ** 2 + (xx * n - cx) ** 2 < r * r
    clean = rng.poisson(dose * truth * np.where(parts, 0.6, 1.0)).astype(np.float32)
    spiky = clean.copy()
    ys, xs = rng.integers(0, n, n_spikes), rng.integers(0, n, n_spikes)      # border hits included
    spiky[ys, xs] += rng.uniform(3000, 40000, n_spikes).astype(np.float32)
    pair = (rng.random(n_spikes) < 0.3) & (xs < n - 1)
    spiky[ys[pair], xs[pair] + 1] += rng.uniform(2000, 6000, pair.sum()).astype(np.float32)
    hit = np.zeros((n, n), bool); hit[ys, xs] = True; hit[ys[pair], xs[pair] + 1] = True
    return spiky, clean, hit, truth, parts


def test_every_spike_removed_few_other_pixels_changed():
    spiky, clean, hit, truth, parts = frame_with_truth()
    before = spiky.copy()
    out, n = remove_xrays(spiky, threshold=1500)
    np.testing.assert_array_equal(spiky, before)                           # input untouched
    thr = np.median(clean) + 1500
    assert out[hit].max() <= thr                                           # every injected hit removed
    changed = (out != spiky) & ~hit
    assert changed.mean() <= 1e-4, f"{changed.sum()} non-spike pixels changed"
    assert n >= hit.sum() * 0.95 and n <= hit.sum() + changed.sum()


def test_illumination_recovered_within_1pct_on_substrate():
    spiky, clean, hit, truth, parts = frame_with_truth(seed=1)
    out, _ = remove_xrays(spiky)
    corr, surf = flatfield(out)
    r = surf[~parts] / truth[~parts]; r = r / np.median(r)
    assert np.sqrt(np.mean((r - 1) ** 2)) < 0.01
    c = corr[~parts]
    assert abs(np.median(c) - 1) < 0.02 and np.std(c / 1) < 0.06


@pytest.mark.parametrize('seed', range(4))
def test_vectorised_xrays_equal_published_loop(seed):
    rng = np.random.default_rng(seed)
    n = 96
    t = rng.poisson(500, (n, n)).astype(np.float32) - (rng.random((n, n)) < 0.01) * 600    # some negatives
    k = 40
    ys, xs = rng.integers(0, n, k), rng.integers(0, n, k)
    t[ys, xs] += rng.uniform(2500, 30000, k).astype(np.float32)
    cy, cx = rng.integers(2, n - 3, 2)
    t[cy - 1:cy + 2, cx - 1:cx + 2] += rng.uniform(3000, 9000, (3, 3)).astype(np.float32)   # a 3×3 cluster
    for passes in (1, 2, 3):
        np.testing.assert_allclose(remove_xrays(t, 1500, passes)[0], xrays_loop(t, 1500, passes), rtol=1e-5, atol=1e-2)


def test_xrays_big_frame_equals_loop_on_hot_pixels():
    "4096²-like path (bracketed median, tracker for the second pass) on a 1100² frame vs the loop."
    rng = np.random.default_rng(5)
    t = rng.poisson(300, (1100, 1100)).astype(np.float32)
    ys, xs = rng.integers(0, 1100, 300), rng.integers(0, 1100, 300)
    t[ys, xs] += 20000; t[ys, (xs + 1) % 1100] += 9000
    np.testing.assert_allclose(remove_xrays(t)[0], xrays_loop(t), rtol=1e-5, atol=1e-2)


def test_xrays_bad_input_and_kinds():
    with pytest.raises(ValueError, match='NaN'): remove_xrays(np.array([[1.0, np.nan], [1, 1]]))
    with pytest.raises(ValueError, match='2-D'): remove_xrays(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match='threshold'): remove_xrays(np.zeros((4, 4)), threshold=-1)
    img = TEMImage(np.full((16, 16), 10, np.uint16), (0.1, 0.2), {'source': 'x.dm4'})
    out, n = remove_xrays(img)
    assert isinstance(out, TEMImage) and out.pixel_size == (0.1, 0.2) and n == 0 and out.source == 'x.dm4'


@pytest.mark.parametrize('dist', ['poisson', 'normal', 'ties', 'skewed'])
def test_fast_median_and_percentiles_exact(dist):
    rng = np.random.default_rng(0)
    n = 1_200_001
    a = {'poisson': lambda: rng.poisson(50, n), 'normal': lambda: rng.normal(size=n).astype(np.float32),
         'ties': lambda: rng.integers(0, 2, n).astype(np.float32),
         'skewed': lambda: np.r_[np.zeros(n - 1000), rng.random(1000)]}[dist]()
    assert fast_median(a) == np.median(a)
    np.testing.assert_allclose(fast_percentile(a, [0, 1, 50, 99, 100]), np.percentile(a, [0, 1, 50, 99, 100]))


def test_flatfield_shapes_kinds_and_input_untouched():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:250, 0:333] / 250
    a = (1000 * (1 + 0.3 * yy + 0.2 * xx)).astype(np.float32) + rng.normal(0, 5, (250, 333)).astype(np.float32)
    b = a.copy()
    corr, surf = flatfield(a, downsample=4)
    np.testing.assert_array_equal(a, b)
    assert corr.shape == a.shape and surf.dtype == np.float32
    assert np.abs(corr - 1).max() < 0.05
    ci, si = flatfield(TEMImage(a, 0.05))
    assert ci.pixel_size == (0.05, 0.05) and si.pixel_size == (0.05, 0.05)
    C, w = fit_illumination(a, degree=(1, 3))
    assert C.shape == (2, 4) and illumination_surface(C, (7, 9)).shape == (7, 9)


def test_rescale_methods():
    rng = np.random.default_rng(0)
    x = rng.gamma(2, 100, (100, 120))
    s = rescale(x); assert abs(s.mean()) < 1e-6 and abs(s.std() - 1) < 1e-6 and s.dtype == np.float64
    n = rescale(x.astype(np.float32), 'normalize'); assert n.min() == 0 and abs(n.max() - 1) < 1e-6
    h = rescale(x, 'histogram', (5, 95))
    assert h.min() == 0 and h.max() == 1 and abs((h == 0).mean() - 0.05) < 0.01
    for m in RESCALE_METHODS:
        with pytest.raises(ValueError, match='constant'): rescale(np.full((5, 5), 3.0), m)
    with pytest.raises(ValueError, match='percentiles'): rescale(x, 'histogram', (90, 10))


@pytest.mark.parametrize('shape,size', [((100, 130), 32), ((512, 512), 128), ((300, 200), 100)])
def test_patch_origins_reassemble(shape, size):
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    p = patchify(TEMImage(img, 0.3), size=size)
    nh, nw = shape[0] // size, shape[1] // size
    assert len(p) == nh * nw and p.pixel_size == (0.3, 0.3)
    np.testing.assert_array_equal(p.reassemble()[:nh * size, :nw * size], img[:nh * size, :nw * size])
    assert len(set(map(tuple, p.origins))) == len(p)


def test_patch_filter_counts_foreground():
    m = np.zeros((256, 256), bool); m[10:30, 10:30] = True; m[200:202, 200:250] = True   # 400 and 100 px
    p = patchify(np.zeros((256, 256)), m, size=64, min_foreground=99)
    assert p.origins.tolist() == [[0, 0], [192, 192]]
    assert patchify(np.zeros((256, 256)), m, size=64, min_foreground=400).origins.tolist() == []
    with pytest.raises(ValueError, match='mask shape'): patchify(np.zeros((256, 256)), m[:10])


def test_real_label_15_of_64_tiles():
    p = shared_data('hrtem-generalization', '20221109_Au_UTC_330kx_2640e_0p1596s_03_label.png')
    if p is None: pytest.skip('shared data (hrtem-generalization label) not found')
    lab = np.asarray(Image.open(p))
    assert lab.shape[:2] == (4096, 4096)
    assert len(patchify(np.zeros(lab.shape[:2], np.float32), lab if lab.ndim == 2 else lab[..., 0])) == 15


def test_preprocess_chain_equals_steps_and_keeps_calibration():
    spiky, clean, hit, truth, parts = frame_with_truth(512, seed=3, n_spikes=50)
    full = preprocess(TEMImage(spiky, 0.02), size=None)
    steps = rescale(flatfield(remove_xrays(spiky)[0])[0])
    np.testing.assert_allclose(full.data, steps, atol=2e-4)
    assert full.pixel_size == (0.02, 0.02) and full.metadata['xrays_removed'] >= 50
    p = preprocess(spiky, parts, size=128, min_foreground=300)
    assert all(m.sum() > 300 for m in p.masks) and p.info['rescale'] == 'standardize'
    h = preprocess(spiky, size=None, threshold=None, flat=False, method='histogram')
    assert h.min() == 0 and h.max() == 1


# ---------------------------------------------------------------- percolation
@pytest.mark.parametrize('p,shape', [(0.03, (50, 60)), (0.15, (64, 64)), (0.4, (40, 80))])
def test_dbscan_pixels_equals_sklearn(p, shape):
    from sklearn.cluster import DBSCAN
    rng = np.random.default_rng(int(p * 100))
    for _ in range(3):
        m = rng.random(shape) < p
        ys, xs = np.nonzero(m)
        for eps, ms in ((2, 2), (1.5, 2), (3, 2), (2, 1), (2, 4)):
            ref = DBSCAN(eps=eps, min_samples=ms).fit(np.c_[ys, xs]).labels_
            np.testing.assert_array_equal(dbscan_pixels(m, eps, ms)[ys, xs], ref)


def test_percolation_definitions():
    n = 224
    net = np.zeros((n, n), bool); net[5, :] = True; net[:, 7] = True
    assert percolates(net)
    half = net.copy(); half[:, 120:] = False                           # spans vertically only
    assert not percolates(half)
    diag = np.eye(n, dtype=bool)                                       # diagonal steps are within eps=2
    assert percolates(diag)
    short = np.zeros((n, n), bool); short[3:n - 3, 3:n - 3] = np.eye(n - 6, dtype=bool)   # spans n-7 < n-2
    assert not percolates(short)
    assert percolates(np.kron(net, np.ones((3, 3), bool)))              # resized from 672²
    assert not percolates(np.zeros((10, 10)))
    assert nanowire_density(np.kron(net, np.ones((3, 3)))) == pytest.approx(net.mean())


def test_resize_mask_area_coverage():
    m = np.zeros((448, 448), bool); m[:, :3] = True                     # 1.5 px at 224: columns covered 1, ½, 0
    r = resize_mask(m, 224)
    assert r[:, 0].all() and r[:, 1].all() and not r[:, 2:].any()
    q = np.zeros((448, 448), bool); q[::2, 0] = True                     # ¼ coverage: dropped
    assert not resize_mask(q, 224).any() and resize_mask(q, 224, coverage=0.25)[:, 0].all()
    assert resize_mask(r, 224) is not None and resize_mask(r, 224).shape == (224, 224)


def test_synth_masks_if_available():
    if importlib.util.find_spec('temlearn.synth') is None: pytest.skip('temlearn.synth not written yet')
    synth = importlib.import_module('temlearn.synth')
    if not hasattr(synth, 'nanowire_image'): pytest.skip('temlearn.synth.nanowire_image not available yet')
    _, m_net = synth.nanowire_image('network', size=256, seed=0)
    _, m_dis = synth.nanowire_image('dispersed', size=256, seed=0)
    assert percolates(m_net) and not percolates(m_dis)
    assert nanowire_density(m_net) > 0 and nanowire_density(m_dis) > 0


# ---------------------------------------------------------------- CLI
def write_raw_folder(root, n=4, size=256, seed=0, masks=True):
    from temlearn.io import write_tiff
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        spiky, clean, hit, truth, parts = frame_with_truth(size, seed=seed + i, n_spikes=10)
        name = f"20221109_Au_UTC_330kx_{i:02d}"
        write_tiff(TEMImage(spiky, 0.02), root / f"{name}.tif")
        if masks: Image.fromarray(parts.astype(np.uint8) * 255).save(root / f"{name}_label.png")
        names.append(name)
    return names


def test_cli_folder_to_hdf5(tmp_path):
    from temlearn.data import read_hdf5_dataset
    write_raw_folder(tmp_path / 'raw')
    out = tmp_path / 'ds.h5'
    rc = run_cli(preprocess_cli, [str(tmp_path / 'raw'), '-o', str(out), '--size', '64', '--min-foreground', '200',
                         '--workers', '2', '--quiet', '--test-frac', '0.25'])
    assert rc == 0 and out.exists()
    imgs, labs, tab = read_hdf5_dataset(out)
    assert imgs.shape[1:] == (64, 64) and labs.shape == imgs.shape and len(tab) == len(imgs)
    assert (labs.reshape(len(labs), -1) > 0).sum(1).min() > 200
    assert set(tab.split) == {'train', 'test'}
    assert not set(tab.group[tab.split == 'train']) & set(tab.group[tab.split == 'test'])
    # same result with one worker
    out1 = tmp_path / 'ds1.h5'
    assert run_cli(preprocess_cli, [str(tmp_path / 'raw'), '-o', str(out1), '--size', '64', '--min-foreground', '200',
                           '--workers', '1', '--quiet', '--test-frac', '0.25']) == 0
    np.testing.assert_array_equal(read_hdf5_dataset(out1)[0], imgs)


def test_cli_with_metadata_selection(tmp_path):
    import pandas as pd
    from temlearn.data import read_hdf5_dataset
    names = write_raw_folder(tmp_path / 'raw' / 'sessA', n=2, seed=0)
    names += write_raw_folder(tmp_path / 'raw' / 'sessB', n=2, seed=10)
    meta = pd.DataFrame({'File name': [f"{n}.tif" for n in names], 'Date': ['10/06/21'] * 2 + ['12/15/21'] * 2,
                         'Material': ['Au', 'Au', 'Au', 'Ag'], 'Nanoparticle Size (nm)': [5, 5, 5, 5],
                         'Nanoparticle Shape': 'Sphere', 'Support': 'UT Carbon', 'Instrument': 'Team05',
                         'Dosage (e/A2)': [423, 421, 80, 423], 'Pixel Scale (nm)': 0.02,
                         'Folder': ['sessA', 'sessA', 'sessB', 'sessB']})
    csv = tmp_path / 'meta.csv'; meta.to_csv(csv, index=False)
    out = tmp_path / 'sel.h5'
    rc = run_cli(preprocess_cli, [str(tmp_path / 'raw'), '-o', str(out), '--metadata', str(csv), '--where', 'material=Au',
                         '--where', 'dose=400:450', '--size', '64', '--min-foreground', '100', '--quiet',
                         '--group-by', 'session', '--workers', '1'])
    assert rc == 0
    _, _, tab = read_hdf5_dataset(out)
    assert set(tab.source.map(lambda s: s.split('/')[-1])) <= {f"{n}.tif" for n in names[:2]}
    assert set(tab.group) == {'sessA'}


def test_cli_errors(tmp_path, capsys):
    assert run_cli(preprocess_cli, [str(tmp_path / 'nope'), '-o', str(tmp_path / 'x.h5')]) == 2    # a bad argument
    assert 'not a folder' in capsys.readouterr().err
    write_raw_folder(tmp_path / 'raw', n=2)
    assert run_cli(preprocess_cli, [str(tmp_path / 'raw'), '-o', str(tmp_path / 'x.h5'), '--where', 'material=Au']) == 2
    assert '--metadata' in capsys.readouterr().err


def test_synth_hrtem_frame_through_chain():
    "On the synth helper's raw HRTEM frames (when available): every injected x-ray removed, calibration kept."
    if importlib.util.find_spec('temlearn.synth') is None: pytest.skip('temlearn.synth not written yet')
    synth = importlib.import_module('temlearn.synth')
    if not hasattr(synth, 'hrtem_image'): pytest.skip('temlearn.synth.hrtem_image not available yet')
    img, mask, row = synth.hrtem_image(size=512, seed=2, n_xrays=40)
    clean, n = remove_xrays(img)
    assert n >= 40 and clean.pixel_size == img.pixel_size
    pos = img.metadata.get('xray_positions')
    if pos is not None:
        pos = np.asarray(pos)
        assert clean.data[pos[:, 0], pos[:, 1]].max() <= fast_median(clean) + 1500 + 1e-3
    changed = clean.data != np.maximum(img.data, 0)
    assert changed.sum() <= n
    p = preprocess(img, mask, size=128, min_foreground=400)
    assert p.pixel_size == img.pixel_size and all(m.sum() > 400 for m in p.masks)


def test_cli_on_synth_hrtem_dataset(tmp_path):
    "The synth helper's raw HRTEM folder + Dataset_metadata.csv → HDF5, selecting by dose, split by session."
    if importlib.util.find_spec('temlearn.synth') is None: pytest.skip('temlearn.synth not written yet')
    synth = importlib.import_module('temlearn.synth')
    if not hasattr(synth, 'write_hrtem_dataset'): pytest.skip('temlearn.synth.write_hrtem_dataset not available yet')
    from temlearn.data import read_hdf5_dataset, read_metadata_csv
    synth.write_hrtem_dataset(tmp_path / 'raw', 8, seed=0, doses=(423, 80), size=256, frames_per_session=2,
                              progress=False)
    csv = tmp_path / 'raw' / 'Dataset_metadata.csv'
    meta = read_metadata_csv(csv)
    out = tmp_path / 'hr.h5'
    rc = run_cli(preprocess_cli, [str(tmp_path / 'raw'), '-o', str(out), '--metadata', str(csv), '--where', 'dose=400:450',
                         '--size', '128', '--min-foreground', '100', '--group-by', 'session', '--workers', '2',
                         '--quiet', '--test-frac', '0.5'])
    assert rc == 0
    imgs, labs, tab = read_hdf5_dataset(out)
    assert len(imgs) > 0 and labs is not None
    chosen = set(meta.relpath[meta.dose.between(400, 450)])
    assert {str(__import__('pathlib').Path(s).relative_to(tmp_path / 'raw')) for s in tab.source} <= chosen
    assert not set(tab.group[tab.split == 'train']) & set(tab.group[tab.split == 'test'])
    assert set(tab.group) <= set(meta.session)
