"Tests of the generalization study (temlearn.generalize): data sets by metadata, the per-image chain with resampling, folds by image, the matrix, the CLI and its errors."
import contextlib, io, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from PIL import Image

from temlearn.core import TEMImage, run_cli, shared_data
from temlearn.hrtem import hrtem_image
from temlearn.synth import synth_cli
from temlearn.generalize import (GeneralizeSettings, load_frames, metadata_datasets, check_fold_sizes, anscombe,
                                 frame_patches, patch_set, images_table, fold_splits, cross_dataset_matrix, matrix_table,
                                 hard_vs_easy, parse_dataset, generalize_cli, noise_study, score_published_network)

torch.set_num_threads(1)
TINY = ['--folds', '2', '--epochs', '1', '--size', '32', '--min-foreground', '50', '--max-patches', '3', '--bs', '4', '--quiet']


def _run(func, argv):
    "Exit status and stderr of a CLI run."
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
        rc = run_cli(func, [str(a) for a in argv])
    return rc, err.getvalue()


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    "A `temlearn-synth hrtem` folder: 2.2 nm Au at two pixel sizes and two doses, two frames each (128 px)."
    d = tmp_path_factory.mktemp('gen') / 'repo'
    rc, err = _run(synth_cli, ['hrtem', '--out', d, '-n', '8', '--size', '128', '--diameter', '2.2', '--pixel-size', '0.02',
                               '0.042', '--dose', '80', '884', '--quiet', '--jobs', '1'])
    assert rc == 0, err
    return d


# ---------------------------------------------------------------- the command line
def test_cli_on_synth_hrtem_folder(repo, tmp_path):
    "Two doses × two pixel sizes → a 4 × 4 matrix (2 folds), the heatmap and the data-set table; a rerun is refused."
    out = tmp_path / 'run'
    rc, err = _run(generalize_cli, ['--metadata', repo / 'Dataset_metadata.csv', '--by', 'pixel_size_nm,dose', '-o', out] + TINY)
    assert rc == 0, err
    m = pd.read_csv(out / 'matrix.csv')
    assert {'train', 'test', 'fold', 'dice', 'method', 'flat', 'pixel_size', 'epochs', 'seed'} <= set(m.columns)
    assert len(m) == 4 * 2 * 4 and m.train.nunique() == 4 and sorted(m.fold.unique()) == [0, 1]
    assert m.dice.between(0, 1).all()
    ds = pd.read_csv(out / 'datasets.csv')
    assert ds.dataset.nunique() == 4 and len(ds) == 8
    total = ds.groupby('dataset').n_patches.sum()
    own, other = m[m.train == m.test], m[m.train != m.test]
    assert (own.n_test < own.train.map(total)).all()                    # own set: the held-out fold only
    assert (other.n_test == other.test.map(total)).all()                # other sets: every patch
    assert 'plotly' in (out / 'matrix.html').read_text()[:20000].lower()
    rc, err = _run(generalize_cli, ['--metadata', repo / 'Dataset_metadata.csv', '--by', 'dose', '-o', out] + TINY)
    assert rc == 1 and 'not empty' in err


def test_cli_pixel_size_and_named_datasets(repo, tmp_path):
    "--pixel-size brings every frame to one scale (recorded per frame); --dataset defines sets by query."
    out = tmp_path / 'res'
    rc, err = _run(generalize_cli, ['--metadata', repo / 'Dataset_metadata.csv', '--dataset', 'fine: pixel_size_nm=0.02',
                                    '--dataset', 'coarse: pixel_size_nm=0.042', '--pixel-size', '0.03', '-o', out] + TINY)
    assert rc == 0, err
    ds = pd.read_csv(out / 'datasets.csv')
    assert set(ds.dataset) == {'fine', 'coarse'}
    assert np.allclose(ds.patch_pixel_size_nm, 0.03, atol=3e-4)
    assert (pd.read_csv(out / 'matrix.csv').pixel_size == 0.03).all()


@pytest.mark.parametrize('extra, status, message', [
    (['--by', 'doze'], 1, "no column 'doze'"),
    (['--by', 'pixel_size_nm,dose', '--folds', '3'], 1, "data set 'pixel_size_nm=0.02, dose=80' has 2 image(s) but 3 folds"),
    (['--by', 'dose', '--where', 'material=Pt'], 1, "no frames meet {'material': 'Pt'}"),
    (['--by', 'dose', '--size', '40'], 2, 'multiple of 16'),
    (['--dataset', 'dose=80'], 2, "--dataset expects 'NAME: column=value"),
    ([], 2, '--by COLUMN'),
    (['--by', 'dose', '--method', 'zscore'], 2, 'method must be one of'),
    (['--by', 'dose', '--split-by', 'patch'], 2, '--split-by must be image or session'),
])
def test_cli_bad_arguments_and_metadata(repo, tmp_path, extra, status, message):
    "Bad metadata is exit 1, a bad argument exit 2, each one line naming the column/set; nothing is written."
    out = tmp_path / 'o'
    args = ['--metadata', repo / 'Dataset_metadata.csv', '-o', out] + TINY[2:] + extra
    if '--folds' not in extra: args += ['--folds', '2']
    rc, err = _run(generalize_cli, args)
    assert rc == status, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_missing_files_and_labels(repo, tmp_path):
    "A listed frame not on disk and a frame without its label are refused, naming the file."
    meta = pd.read_csv(repo / 'Dataset_metadata.csv')
    bad = meta.copy(); bad.loc[0, 'File name'] = 'not_there.tif'
    bad.to_csv(repo / 'bad_meta.csv', index=False)
    try:
        rc, err = _run(generalize_cli, ['--metadata', repo / 'bad_meta.csv', '--by', 'dose', '-o', tmp_path / 'o'] + TINY)
        assert rc == 1 and 'bad_meta.csv: 1 of 8 frames listed have no file' in err and 'not_there.tif' in err
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            assert len(load_frames(repo / 'bad_meta.csv', skip_missing=True)) == 7
    finally: (repo / 'bad_meta.csv').unlink()
    fr = load_frames(repo / 'Dataset_metadata.csv')
    lab = Path(fr.mask_path[0]); hidden = lab.with_name('hidden.bak')
    lab.rename(hidden)
    try:
        with pytest.raises(ValueError, match='no label file'): load_frames(repo / 'Dataset_metadata.csv')
    finally: hidden.rename(lab)
    (tmp_path / 'nofile.csv').write_text('a,b\n1,2\n')
    with pytest.raises(ValueError, match="nofile.csv: no 'File name' column"): load_frames(tmp_path / 'nofile.csv')


# ---------------------------------------------------------------- data sets and the per-image chain
def test_datasets_by_columns_and_queries(repo):
    fr = load_frames(repo / 'Dataset_metadata.csv')
    sets = metadata_datasets(fr, by=['dose'])
    assert list(sets) == ['dose=80', 'dose=884'] and all(len(v) == 4 for v in sets.values())
    assert list(metadata_datasets(fr, by='Pixel Scale (nm)')) == ['Pixel Scale (nm)=0.02', 'Pixel Scale (nm)=0.042']
    q = metadata_datasets(fr, queries={'a': {'dose': (0, 100), 'pixel_size_nm': 0.02}})
    assert len(q['a']) == 2
    with pytest.raises(ValueError, match="matches no frame"): metadata_datasets(fr, queries={'none': {'dose': 1}})
    with pytest.raises(ValueError, match="has 2 image"): check_fold_sizes(metadata_datasets(fr, by='pixel_size_nm,dose'), 3)
    assert parse_dataset('x: dose=80:90') == ('x', {'dose': (80.0, 90.0)})


def test_resampling_keeps_field_of_view_and_calibration(repo):
    "Through the data-set pipeline: frames read from disk, resampled to one pixel size, extent and calibration kept."
    fr = load_frames(repo / 'Dataset_metadata.csv')
    s = GeneralizeSettings(size=32, min_foreground=20, pixel_size=0.03)
    for ps_nm, sub in fr.groupby('pixel_size_nm'):
        ps = patch_set(f'{ps_nm}', sub, s)
        assert np.allclose(ps.frames.patch_pixel_size_nm, 0.03, atol=3e-4)
        img, mask, _ = hrtem_image('Au', 2.2, ps_nm, 884, size=128, seed=3)
        p = frame_patches(img, mask, s)
        assert np.allclose(np.array(p.shape) * np.array(p.pixel_size), img.extent_nm, rtol=1e-9)   # field of view
        assert p.shape == (round(128 * ps_nm / 0.03),) * 2
        assert np.isclose(p.pixel_size[0], 0.03, rtol=0.01) and p.tiles()[0].pixel_size == p.pixel_size
        assert p.masks.sum() > 0 and set(np.unique(p.masks)) <= {0, 1}


def test_uncalibrated_frames_take_the_metadata_pixel_size(tmp_path):
    "A PNG frame has no calibration: the metadata's pixel size is used, so --pixel-size works on it too."
    img, mask, _ = hrtem_image('Au', 2.2, 0.042, 884, size=128, seed=1)
    a = np.clip(img.data / img.data.max() * 255, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / 'f.png'); Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / 'f_label.png')
    fr = pd.DataFrame({'path': [str(tmp_path / 'f.png')], 'mask_path': [str(tmp_path / 'f_label.png')], 'group': ['f'],
                       'pixel_size_nm': [0.042]})
    ps = patch_set('png', fr, GeneralizeSettings(size=32, min_foreground=20, pixel_size=0.084, threshold=None, flat=False))
    assert np.isclose(ps.frames.patch_pixel_size_nm[0], 0.084, rtol=0.01)


def test_anscombe_stabilises_poisson_variance():
    rng = np.random.default_rng(1)
    sds = [anscombe(rng.poisson(lam, (200, 200)).astype(np.float32)).std() for lam in (3, 30, 3000)]
    assert np.allclose(sds, 1, atol=0.06)
    assert anscombe(np.full((4, 4), 8.0), gain=2.0)[0, 0] == pytest.approx(2 * np.sqrt(4.375))


# ---------------------------------------------------------------- folds by image
@st.composite
def frames_tables(draw):
    "Random data sets: 2-15 images with 0-6 patches each (groups = images; some images share a session)."
    n_img = draw(st.integers(2, 15))
    per = draw(st.lists(st.integers(0, 6), min_size=n_img, max_size=n_img))
    groups = np.repeat([f'img{i}' for i in range(n_img)], per)
    return groups, draw(st.integers(2, 5)), draw(st.sampled_from([0.0, 0.125, 0.3])), draw(st.integers(0, 2 ** 16))


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=frames_tables())
def test_no_image_on_both_sides_of_a_fold(case):
    "Property: every fold's train, valid and test hold disjoint images; every patch is tested exactly once."
    groups, n_folds, valid_frac, seed = case
    try: splits = fold_splits(groups, n_folds, valid_frac, seed)
    except ValueError as e:
        assert 'cannot make' in str(e) and len(set(groups)) < n_folds
        return
    tested = np.concatenate([te for *_, te in splits])
    assert sorted(tested) == list(range(len(groups)))
    for tr, va, te in splits:
        assert sorted(np.r_[tr, va, te]) == list(range(len(groups)))
        sides = [set(groups[i]) for i in (tr, va, te)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        if valid_frac and len(sides[0] | sides[1]) >= 2: assert len(va) > 0


def test_matrix_held_out_fold_is_image_disjoint(repo):
    "In the matrix, a network is tested on its own set only on images it never saw."
    fr = load_frames(repo / 'Dataset_metadata.csv')
    s = GeneralizeSettings(size=32, min_foreground=50, max_patches=3, folds=2, epochs=1, bs=4)
    ps = patch_set('all', fr, s)
    for tr, va, te in fold_splits(ps.groups, 2, s.valid_frac, s.seed):
        assert not set(ps.frame[te]) & set(ps.frame[np.r_[tr, va]])


# ---------------------------------------------------------------- summaries and studies
def test_matrix_table_and_hard_vs_easy():
    df = pd.DataFrame({'train': list('aaaabbbb'), 'test': list('aabbaabb'), 'fold': [0, 1] * 4,
                       'dice': [0.8, 0.6, 0.9, 0.9, 0.2, 0.4, 0.95, 0.85]})
    mean, std = matrix_table(df)
    assert mean.loc['a', 'a'] == pytest.approx(0.7) and std.loc['a', 'a'] == pytest.approx(0.1)
    assert matrix_table(df, text=True).loc['b', 'a'] == '0.30 ± 0.10'
    assert hard_vs_easy(df, ['a', 'b']).to_dict() == pytest.approx({'hard→easy': 0.9, 'easy→hard': 0.3})


def test_noise_study_trains_only_on_the_given_set():
    rng = np.random.default_rng(0)
    ims, ms = [], []
    for i in range(4):
        m = np.zeros((64, 64), np.uint8); m[10:40, 12:44] = 1
        ims.append(TEMImage(1000 - 300 * m.astype(np.float32) + rng.normal(0, 20, m.shape), 0.05)); ms.append(m)
    sets = {'a': images_table(ims[:2], ms[:2]), 'b': images_table(ims[2:], ms[2:])}
    s = GeneralizeSettings(size=32, min_foreground=50, folds=2, epochs=1, bs=2)
    res = noise_study(sets, 'b', s, rhos=(0, 0.5), uniform=True, progress=False)
    assert set(res.train) == {'b'} and set(res.test) == {'a', 'b'} and sorted(res.rho.unique()) == [0.0, 0.5]
    assert (res[res.rho == 0.5].noise_rho_max == 0.5).all() and res.noise_rho.isna().all()


def test_published_network_on_synthetic_frames():
    from temlearn.models import load_hrtem_generalization_model
    p = shared_data('hrtem-generalization', 'UNet_2p2nmAu330kX423eUTC_fold0_seed962_model.h5')
    if p is None: pytest.skip('shared data (hrtem-generalization) not found')
    res = score_published_network(load_hrtem_generalization_model(p), [dict(diameter_nm=2.2, pixel_size_nm=0.02, dose=423)],
                                  n=1, frame_size=512)
    assert len(res) == 1 and 0 <= res.dice[0] <= 1 and res.n_patches[0] == 1
