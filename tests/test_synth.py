"Tests of temlearn.camera, temlearn.hrtem and temlearn.synth: physics checks, exact ground truth, reproducibility, writers and CLI."
import importlib.util
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from temlearn.core import TEMImage, shared_data, run_cli
from temlearn.io import read_image
from temlearn.masks import percolates
from temlearn.synth import (MORPHOLOGIES, HRTEM_COLUMNS, MATERIALS, poisson_counts, random_field, nanowire_image,
                            hrtem_image, generic_em_image, lattice_spacing, noise_gain, write_nanowire_dataset,
                            write_hrtem_dataset, write_generic_dataset, synth_cli, ctf, interaction_constant)


def official_percolates(mask):
    "The library's percolation analysis (paper 001's rule: DBSCAN eps=2, min_samples=2 on the mask resized to 224²)."
    return percolates(mask, eps=2, min_samples=2, size=224)


def test_synth_reexports_camera_and_hrtem():
    "The user-facing module keeps the names that moved to temlearn.camera and temlearn.hrtem."
    import temlearn.camera as C, temlearn.hrtem as H, temlearn.synth as S
    for mod in (C, H):
        for name in mod.__all__:
            assert getattr(S, name) is getattr(mod, name), name
            assert name in S.__all__, name


# ---------------------------------------------------------------- counting statistics
def test_poisson_counts_statistics():
    lam = np.full((256, 256), 9.5)
    c = poisson_counts(lam, seed=0)
    assert c.dtype == np.float32
    assert abs(c.mean() - 9.5) < 0.05 and abs(c.var() / c.mean() - 1) < 0.03
    c3 = poisson_counts(lam, seed=0, gain=3)
    assert abs(c3.var() / c3.mean() - 3) < 0.12
    assert np.array_equal(poisson_counts(lam, seed=4, threads=1), poisson_counts(lam, seed=4, threads=2))


def _exact_inversion(lam, u):
    "Reference: smallest k with F(k; λ) > u, F the Poisson CDF from scipy.special.pdtr (slow, obviously correct)."
    from scipy.special import pdtr
    lam = lam.astype(np.float64)
    k = np.maximum(np.floor(lam - 10 * np.sqrt(lam) - 10), 0)      # F(k - 1) ≈ 0 ≤ u there
    assert (pdtr(k - 1, lam)[k > 0] <= u[k > 0]).all()
    sub = np.arange(lam.size)
    while sub.size:
        sub = sub[pdtr(k[sub], lam[sub]) <= u[sub]]; k[sub] += 1
    return k


@pytest.mark.parametrize('lo,hi', [(0, 1.5), (2, 9), (14, 21), (62.5, 66)])   # the last one straddles NumPy's range
def test_table_sampler_is_exact_inversion(lo, hi):
    "The table-guided sampler returns, pixel for pixel, the exact inverse CDF of the same uniform draw."
    from temlearn.camera import _poisson_inv, _poisson_table, _PLMAX
    rng = np.random.default_rng(int(lo * 10))
    lam = rng.uniform(lo, hi, 200_000).astype(np.float32)
    lam[:50] = np.float32(lo)                                           # grid points themselves
    lam[50:100] = np.float32(np.ceil(lo * 64) / 64)
    table = _poisson_table(int(min(lo, _PLMAX - 1)), int(min(hi, _PLMAX - 1)))
    x = _poisson_inv(lam, np.random.default_rng(7), table)
    u = np.random.default_rng(7).random(lam.size)                      # the same uniforms the sampler drew first
    small = lam < _PLMAX
    assert x.dtype == np.float32 and (x >= 0).all()
    assert np.array_equal(x[small], _exact_inversion(lam[small], u[small]))
    if (~small).any(): assert abs(x[~small].mean() / lam[~small].mean() - 1) < 0.02


def test_poisson_counts_small_means_discreteness():
    "Low counts: P(0) = mean of exp(−λ), P(1) = mean of λ·exp(−λ); mean and Var(k − λ) equal mean λ."
    lam = np.random.default_rng(1).uniform(0, 3, (600, 600))
    k = poisson_counts(lam, seed=2, threads=2).astype(np.float64)
    assert np.array_equal(poisson_counts(lam, seed=2, threads=1), k)
    assert (k == np.round(k)).all() and k.min() >= 0
    assert abs((k == 0).mean() - np.exp(-lam).mean()) < 0.003
    assert abs((k == 1).mean() - (lam * np.exp(-lam)).mean()) < 0.003
    assert abs((k == 2).mean() - (lam ** 2 / 2 * np.exp(-lam)).mean()) < 0.003
    assert abs(k.mean() / lam.mean() - 1) < 0.01 and abs(((k - lam) ** 2).mean() / lam.mean() - 1) < 0.02
    lam0 = np.full((300, 300), 0.05)                                    # almost always 0, sometimes 1
    k0 = poisson_counts(lam0, seed=3)
    assert abs((k0 == 0).mean() - np.exp(-0.05)) < 0.003 and set(np.unique(k0)) <= {0, 1, 2, 3}
    assert not poisson_counts(np.zeros((64, 64)), seed=0).any()          # λ = 0 → no counts


@pytest.mark.parametrize('mean', [0.7, 17.0, 45.0, 150.0])             # table sampler (≤ 64) and NumPy's (> 64)
def test_poisson_counts_variance_equals_mean(mean):
    c = poisson_counts(np.full((400, 400), mean), seed=11).astype(np.float64)
    assert abs(c.mean() / mean - 1) < 0.01 and abs(c.var() / c.mean() - 1) < 0.03


def test_hrtem_frame_independent_of_threads(monkeypatch):
    import temlearn.camera as C, temlearn.hrtem as H
    ref = hrtem_image('Au', size=512, seed=5)[0].data
    for n in (1, 3):
        for mod in (C, H): monkeypatch.setattr(mod, 'n_threads', lambda n=n: n)
        assert np.array_equal(hrtem_image('Au', size=512, seed=5)[0].data, ref)
    assert np.array_equal(hrtem_image('Au', size=512, seed=5, threads=2)[0].data, ref)


def test_poisson_counts_rejects_bad_mean():
    lam = np.ones((8, 8)); lam[2, 2] = np.nan
    with pytest.raises(ValueError, match='finite and non-negative'): poisson_counts(lam)
    with pytest.raises(ValueError, match='2-D'): poisson_counts(np.ones(5))
    orig = np.ones((8, 8)); poisson_counts(orig); assert (orig == 1).all()       # input untouched


def test_random_field_normalised():
    f = random_field((64, 64), seed=2, corr=3)
    assert abs(f.std() - 1) < 1e-3 and abs(f.mean()) < 1e-5


# ---------------------------------------------------------------- nanowires
@pytest.mark.parametrize('morph', MORPHOLOGIES)
def test_nanowire_image_contract(morph):
    img, mask = nanowire_image(morph, size=96, seed=1)
    assert isinstance(img, TEMImage) and img.shape == (96, 96) and img.calibrated
    assert mask.dtype == bool and mask.shape == (96, 96) and 0 < mask.mean() < 0.6
    assert 21e3 <= img.metadata["magnification"] <= 400e3
    assert np.array_equal(nanowire_image(morph, 96, 1)[0].data, img.data)
    assert not np.array_equal(nanowire_image(morph, 96, 2)[0].data, img.data)


def test_nanowire_bad_input():
    with pytest.raises(ValueError, match='morphology must be one of'): nanowire_image('spaghetti')
    with pytest.raises(ValueError, match='size'): nanowire_image('network', size=4)


@pytest.mark.parametrize('size', [64, 160, 512])
def test_network_percolates_dispersed_does_not(size):
    for s in range(8 if size < 512 else 3):
        assert official_percolates(nanowire_image('network', size, [3, s])[1]), (size, s)
        assert not official_percolates(nanowire_image('dispersed', size, [3, s])[1]), (size, s)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2 ** 31))
def test_percolation_by_construction_any_seed(seed):
    assert official_percolates(nanowire_image('network', 80, seed)[1])
    assert not official_percolates(nanowire_image('dispersed', 80, seed)[1])


def _nanowire_sample(n=15, size=80):
    imgs, labs, dens = [], [], []
    for ci, m in enumerate(MORPHOLOGIES):
        for i in range(n):
            im, mk = nanowire_image(m, size, [21, ci, i]); imgs.append(im); labs.append(m); dens.append(mk.mean())
    return imgs, labs, np.array(dens)


def test_density_overlap():
    "Wire-pixel density alone cannot tell dispersed from network (ranges overlap, ROC AUC well below 1)."
    from sklearn.metrics import roc_auc_score
    _, labs, dens = _nanowire_sample()
    labs = np.array(labs)
    d, n = dens[labs == 'dispersed'], dens[labs == 'network']
    assert d.max() > n.min() and n.max() > d.min()                    # the density ranges overlap
    sel = (labs == 'network') | (labs == 'dispersed')
    assert roc_auc_score(labs[sel] == 'network', dens[sel]) < 0.85


def test_histogram_classifier_fails():
    "A grey-level-histogram classifier does not solve the 4-class task (the baseline lives in temlearn.features)."
    try: from temlearn.features import histogram_baseline
    except ImportError: pytest.skip('temlearn.features.histogram_baseline not available (moved out of temlearn.synth)')
    imgs, labs, _ = _nanowire_sample()
    assert histogram_baseline(imgs, labs, folds=3)['accuracy'] < 0.6   # chance is 0.25


# ---------------------------------------------------------------- HRTEM
def test_hrtem_contract_and_metadata():
    img, mask, row = hrtem_image('Au', 5.0, 0.02, 423, size=256, seed=0)
    assert img.dtype == np.float32 and img.pixel_size == (0.02, 0.02) and mask.dtype == bool
    assert tuple(row) == HRTEM_COLUMNS and row['Dosage (e/A2)'] == 423 and row['Pixel Scale (nm)'] == 0.02
    assert row['File name'].endswith('.tif') and '_Au_UTC_330kx_' in row['File name']
    real = shared_data('hrtem-generalization', 'Dataset_metadata.csv')
    if real is not None: assert tuple(pd.read_csv(real).columns) == HRTEM_COLUMNS
    a, _, _ = hrtem_image('Au', size=128, seed=3)
    b, _, _ = hrtem_image('Au', size=128, seed=3)
    assert np.array_equal(a.data, b.data)


def test_hrtem_bad_input():
    with pytest.raises(ValueError, match='material'): hrtem_image('Pt')
    with pytest.raises(ValueError, match='pixel_size_nm'): hrtem_image(pixel_size_nm=0)
    with pytest.raises(ValueError, match='support'): hrtem_image(support='graphene')
    with pytest.raises(ValueError, match='orientation'): hrtem_image('Au', orientations=['wz001'], size=64)


@pytest.mark.parametrize('material,ps,orient,d_true', [
    ('Au', 0.02, 'planes111', 0.2355), ('Ag', 0.02, 'planes111', 0.2359), ('Au', 0.033, 'zone110', 0.2355),
    ('Au', 0.026, 'zone100', 0.4078 / 2), ('CdSe', 0.026, 'wz001', 0.3723)])
def test_fringe_period_from_power_spectrum(material, ps, orient, d_true):
    img, _, _ = hrtem_image(material, 5.0, ps, 423, size=384, seed=1, n_particles=1, off_zone_fraction=0,
                            orientations=[orient])
    assert abs(lattice_spacing(img) / d_true - 1) < 0.03


@pytest.mark.parametrize('gain', [1.0, 2.5])
def test_substrate_noise_is_scaled_poisson(gain):
    kw = dict(size=256, seed=8, n_xrays=0, read_noise=0.0, gain=gain)
    f1, m, _ = hrtem_image('Au', noise_seed=1, **kw)
    f2, m2, _ = hrtem_image('Au', noise_seed=2, **kw)
    assert np.array_equal(m, m2) and not np.array_equal(f1.data, f2.data)
    assert abs(noise_gain(f1, f2, mask=m) / gain - 1) < 0.1


def test_mean_counts_scale_with_dose():
    kw = dict(size=256, seed=4, n_xrays=0)
    med = [np.median(hrtem_image('Ag', dose=d, **kw)[0].data) for d in (100, 400)]
    assert abs(med[1] / med[0] - 4) < 0.3
    # expected electrons per pixel = dose (e/Å²) × pixel area (Å²)
    img, _, _ = hrtem_image('Au', dose=423, pixel_size_nm=0.02, **kw)
    assert abs(img.metadata['electrons_per_px'] - 423 * 0.2 ** 2) < 1e-9


def test_contrast_grows_with_thickness_and_Z():
    def c(mat, dia):
        im, m, _ = hrtem_image(mat, dia, 0.04, 423, size=384, seed=3, n_xrays=0, illumination=0.0)
        return 1 - im.data[m].mean() / im.data[~m].mean()
    assert c('Au', 10) > c('Au', 5) > c('Ag', 5) > 0


def test_xrays_and_illumination_present():
    img, mask, _ = hrtem_image('Au', size=512, seed=2, n_xrays=20)
    d = img.data
    assert (d > np.median(d) + 1500).sum() >= 20
    flat, _, _ = hrtem_image('Au', size=512, seed=2, n_xrays=0, illumination=0.3)
    sub = np.where(mask, np.nan, flat.data)
    q = [np.nanmean(b) for b in (sub[:128, :128], sub[:128, -128:], sub[-128:, :128], sub[-128:, -128:])]
    assert max(q) / min(q) > 1.03                                       # uneven illumination


def test_ctf_physics():
    assert abs(interaction_constant(300) - 6.526e-3) < 5e-6
    assert ctf(0.0, -10, 0.005) == 0
    assert ctf(1 / 0.2355, -12, 0.005) < -0.7


@pytest.mark.slow
def test_hrtem_4096_frame_memory():
    import tracemalloc
    tracemalloc.start()
    img, mask, _ = hrtem_image('Au', size=4096, seed=0)
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    assert img.shape == (4096, 4096) and peak < 1.5e9


# ---------------------------------------------------------------- generic
def test_generic_em_image():
    g = generic_em_image(64, seed=5)
    assert g.dtype == np.float32 and g.shape == (64, 64) and 0 <= g.data.min() and g.data.max() <= 1
    assert np.array_equal(generic_em_image(64, seed=5).data, g.data)
    kinds = {'+'.join(generic_em_image(32, seed=s).metadata['kinds']) for s in range(25)}
    assert len(kinds) > 6


# ---------------------------------------------------------------- writers and CLI
def test_write_nanowire_dataset_layout(tmp_path):
    df = write_nanowire_dataset(tmp_path, n_per_class=6, size=64, seed=1, n_jobs=2, progress=False)
    assert len(df) == 24 and set(df.label) == set(MORPHOLOGIES)
    sing = df[df.label == 'singular']
    assert sing.group.nunique() == 2 and {'sing000_rot90.tif', 'sing001_rot90.tif'} <= {p.split('/')[-1] for p in sing.path}
    for _, r in df.iterrows():
        has_label = (tmp_path / r.label / (r.path.split('/')[-1][:-4] + '_label.png')).exists()
        assert has_label == (r.label in ('dispersed', 'network'))
    assert df[df.label == 'network'].percolates.all() and not df[df.label == 'dispersed'].percolates.any()
    r = df[df.label == 'dispersed'].iloc[0]
    im = read_image(r.path); lab = read_image(r.mask_path)
    assert abs(im.pixel_size[0] / r.pixel_size_nm - 1) < 1e-4
    assert abs((lab.data > 0).mean() - r.density) < 1e-9
    # the same seed gives the same files with 1 or 2 processes
    df1 = write_nanowire_dataset(tmp_path / 'one', n_per_class=2, size=48, seed=1, n_jobs=1, progress=False,
                                 classes=('network',))
    df2 = write_nanowire_dataset(tmp_path / 'two', n_per_class=2, size=48, seed=1, n_jobs=2, progress=False,
                                 classes=('network',))
    assert all(np.array_equal(read_image(a).data, read_image(b).data) for a, b in zip(df1.path, df2.path))
    if importlib.util.find_spec('temlearn.data') is not None:
        from temlearn.data import index_folder
        idx = index_folder(tmp_path)
        idx = idx[idx.path.astype(str).str.startswith(str(tmp_path / 'singular'))]
        assert idx.group.nunique() == 2


def test_write_hrtem_dataset(tmp_path):
    df = write_hrtem_dataset(tmp_path, 4, materials=('Au', 'CdSe'), size=96, frames_per_session=1, progress=False)
    meta = pd.read_csv(tmp_path / 'Dataset_metadata.csv')
    assert tuple(meta.columns) == HRTEM_COLUMNS and list(meta.Material) == ['Au', 'CdSe', 'Au', 'CdSe']
    assert list(meta['Nanoparticle Shape']) == ['Sphere', 'Oblong', 'Sphere', 'Oblong']
    for _, r in df.iterrows():
        p = tmp_path / r['Folder'] / r['File name']
        assert p.exists() and read_image(p).pixel_size == (0.02, 0.02)
        assert (tmp_path / r['Folder'] / (p.stem + '_label.png')).exists()


def test_write_generic_dataset(tmp_path):
    df = write_generic_dataset(tmp_path, 3, size=40, progress=False)
    assert len(df) == 3 and read_image(df.path[0]).shape == (40, 40)
    with pytest.raises(ValueError, match='n must be'): write_generic_dataset(tmp_path, 0)


@pytest.mark.parametrize('kind,n', [('nanowires', 1), ('hrtem', 1), ('generic', 2)])
def test_cli(tmp_path, kind, n):
    assert run_cli(synth_cli, [kind, '--out', str(tmp_path), '-n', str(n), '--size', '48', '--quiet', '--jobs', '1']) == 0
    files = [p for p in tmp_path.rglob('*') if p.suffix in ('.tif', '.png')]
    assert len(files) >= n


def test_cli_errors(tmp_path, capsys):
    assert run_cli(synth_cli, ['generic', '--out', str(tmp_path), '-n', '0', '--quiet']) == 2
    assert run_cli(synth_cli, ['movies', '--out', str(tmp_path)]) == 2
    assert 'choose a command: nanowires, hrtem, generic' in capsys.readouterr().err
