"Tests of temlearn.data: indexing, metadata selection, group splits, HDF5 datasets, DataLoaders."
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from hypothesis import given, settings, strategies as st
from temlearn.core import TEMImage, shared_data
from temlearn.data import (index_folder, original_name, read_metadata_csv, select, group_split, group_folds,
                           read_hdf5_dataset, seg_dataloaders, cls_dataloaders)
from temlearn.masks import read_mask
from temlearn.patches import build_hdf5_dataset


def make_tree(root, classes=None, size=48, seed=0):
    rng = np.random.default_rng(seed)
    classes = classes or {'dispersed': ['d1', 'd2', 'd3', 'd4'], 'network': ['n1', 'n2', 'n3'],
                          'singular': ['s1', 's1_rot90', 's1_rot180', 's1_rot270', 's2', 's2_rot90', 's3']}
    for cls, names in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for n in names:
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / cls / f"{n}.png")
            if cls != 'singular':
                Image.fromarray((rng.random((size, size)) > 0.7).astype(np.uint8) * 255).save(root / cls / f"{n}_label.png")
    return root


def test_index_folder(tmp_path):
    df = index_folder(make_tree(tmp_path))
    assert list(df.columns) == ['path', 'label', 'mask_path', 'group']
    assert len(df) == 14 and df.label.value_counts().to_dict() == {'singular': 7, 'dispersed': 4, 'network': 3}
    sing = df[df.label == 'singular']
    assert sing.group.nunique() == 3                                     # s1 + 3 rotations, s2 + 1, s3
    assert df.mask_path.notna().sum() == 7
    assert all(str(m).endswith('_label.png') for m in df.mask_path.dropna())
    assert not df.path.str.contains('_label').any()
    assert original_name('a_rot90_fliplr') == 'a' and original_name('rotation_study') == 'rotation_study'


def test_index_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a folder'): index_folder(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no image files'): index_folder(tmp_path / 'empty')


@pytest.fixture
def meta():
    p = shared_data('hrtem-generalization', 'Dataset_metadata.csv')
    if p is None: pytest.skip('shared data (hrtem-generalization/Dataset_metadata.csv) not found')
    return read_metadata_csv(p)


def test_metadata_real_table(meta):
    assert len(meta) == 407
    for c in ('material', 'size_nm', 'dose', 'pixel_size_nm', 'date', 'session', 'relpath'):
        assert c in meta.columns
    assert meta.dose.dtype.kind == 'f' and meta.pixel_size_nm.dtype.kind == 'f'
    assert select(meta, material='CdSe').shape[0] == 11
    assert select(meta, material=['Ag', 'CdSe']).shape[0] == 51
    s = select(meta, material='Au', size_nm=5, pixel_size_nm=0.02, dose=(400, 450))
    assert len(s) > 0 and set(s.material) == {'Au'} and s.dose.between(400, 450).all()
    assert (s.pixel_size_nm == 0.02).all()
    oct21 = select(meta, date=('2021-10-01', '2021-10-31'))
    assert len(oct21) >= 163 and all(str(d).startswith('2021-10') for d in oct21.date)
    assert len(oct21) == sum(str(d).startswith('2021-10') for d in meta.date)
    assert len(select(meta, session=lambda c: c.str.contains('SiN'))) == 68
    with pytest.raises(KeyError, match='no column'): select(meta, colour='red')
    assert meta.relpath.nunique() == len(meta)                           # file names repeat; folder/file does not


def test_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError): read_metadata_csv(tmp_path / 'none.csv')
    (tmp_path / 'bad.csv').write_text('a,b\n1,2\n')
    with pytest.raises(ValueError, match='File name'): read_metadata_csv(tmp_path / 'bad.csv')


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=80), st.integers(0, 10_000),
       st.floats(0.05, 0.6), st.integers(1, 3))
def test_group_split_never_leaks(groups, seed, frac, n_classes):
    df = pd.DataFrame({'group': [f"g{g}" for g in groups], 'label': [g % n_classes for g in groups]})
    tr, te = group_split(df, frac, seed)
    assert sorted(np.r_[tr, te].tolist()) == list(range(len(df)))
    assert not set(df.group.iloc[tr]) & set(df.group.iloc[te])
    for lab, sub in df.groupby('label'):                                  # each class with ≥2 groups: some test, some train
        if sub.group.nunique() >= 2:
            assert 0 < sub.index.isin(te).sum() < len(sub)


def test_group_split_reproducible_and_stratified():
    df = pd.DataFrame({'group': np.repeat(np.arange(40), 3), 'label': np.repeat(np.arange(40) % 4, 3)})
    a = group_split(df, 0.2, 7); b = group_split(df, 0.2, 7); c = group_split(df, 0.2, 8)
    assert all((x == y).all() for x, y in zip(a, b)) and not (a[1].shape == c[1].shape and (a[1] == c[1]).all())
    assert df.label.iloc[a[1]].value_counts().to_dict() == {0: 6, 1: 6, 2: 6, 3: 6}
    with pytest.raises(ValueError): group_split(df, 1.0)


def test_group_folds_partition():
    df = pd.DataFrame({'group': np.repeat(np.arange(23), 5)})
    folds = group_folds(df, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(df)))
    for i in range(5):
        for j in range(i + 1, 5): assert not set(df.group.iloc[folds[i]]) & set(df.group.iloc[folds[j]])
    with pytest.raises(ValueError, match='folds'): group_folds(df.iloc[:10], 5)


def write_frames(root, n=4, size=192, seed=0, rotated=True):
    from temlearn.io import write_tiff
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(8):
            cy, cx = rng.uniform(0, size, 2); r = rng.uniform(6, 16)
            m |= (yy * size - cy) ** 2 + (xx * size - cx) ** 2 < r * r
        f = rng.poisson(700 * (1 + 0.4 * xx) * np.where(m, 0.6, 1)).astype(np.float32)
        f.flat[rng.integers(0, f.size, 15)] += 12000
        for suf, k in ((('', 0), ('_rot90', 1)) if rotated and i % 2 == 0 else (('', 0),)):
            write_tiff(TEMImage(np.rot90(f, k).copy(), 0.025), root / f"f{i}{suf}.tif")
            Image.fromarray(np.rot90(m, k).astype(np.uint8) * 255).save(root / f"f{i}{suf}_label.png")


def test_build_hdf5_dataset_roundtrip(tmp_path):
    write_frames(tmp_path / 'raw')
    items = index_folder(tmp_path / 'raw')
    assert len(items) == 6 and items.group.nunique() == 4
    out = tmp_path / 'd.h5'
    table = build_hdf5_dataset(items, out, size=64, min_foreground=150, test_frac=0.25, seed=1, workers=2,
                               progress=False)
    imgs, labs, tab = read_hdf5_dataset(out)
    assert imgs.shape == (len(table), 64, 64) and labs.shape == imgs.shape and labs.dtype == np.uint8
    assert (labs.reshape(len(labs), -1) > 0).sum(1).min() > 150
    assert not set(tab.group[tab.split == 'train']) & set(tab.group[tab.split == 'test'])
    assert set(tab.split) == {'train', 'test'}
    np.testing.assert_allclose(tab[['pixel_size_y', 'pixel_size_x']].to_numpy(), 0.025)
    # every patch equals the preprocessed frame at its origin
    from temlearn.io import read_image
    from temlearn.preprocess import preprocess
    src = tab.source.iloc[0]
    full = preprocess(read_image(src), size=None)
    for k in np.flatnonzero(tab.source == src):
        y, x = tab.y[k], tab.x[k]
        np.testing.assert_allclose(imgs[k], full.data[y:y + 64, x:x + 64], atol=1e-5)
        np.testing.assert_array_equal(labs[k] > 0, read_mask(src.replace('.tif', '_label.png'))[y:y + 64, x:x + 64] > 0)
    # rotated copies share a split
    g = tab.groupby('group').split.nunique()
    assert (g == 1).all()


def test_build_hdf5_errors(tmp_path):
    write_frames(tmp_path / 'raw', n=2, rotated=False)
    items = index_folder(tmp_path / 'raw')
    bad = items.copy(); bad.loc[0, 'path'] = str(tmp_path / 'missing.tif')
    with pytest.raises(FileNotFoundError, match='not found'): build_hdf5_dataset(bad, tmp_path / 'x.h5', progress=False)
    part = items.copy(); part.loc[0, 'mask_path'] = None
    with pytest.raises(ValueError, match='no label'): build_hdf5_dataset(part, tmp_path / 'x.h5', progress=False)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(items.mask_path[0])
    # one frame with a label of the wrong size: skipped and reported, the other frame is still written
    table = build_hdf5_dataset(items, tmp_path / 'x.h5', size=64, min_foreground=10, workers=1, progress=False)
    assert [e['file'] for e in table.attrs['errors']] == [items.path[0]]
    assert 'does not match' in table.attrs['errors'][0]['error'] and set(table.source) == {items.path[1]}
    # every frame unusable: an error, and no file left behind
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(items.mask_path[1])
    with pytest.raises(ValueError, match='does not match'):
        build_hdf5_dataset(items, tmp_path / 'y.h5', size=64, workers=1, progress=False)
    assert not (tmp_path / 'y.h5').exists() and not (tmp_path / 'y.h5.partial').exists()


def test_dataloaders(tmp_path):
    root = make_tree(tmp_path / 'tree')
    dls = cls_dataloaders(root, size=32, bs=4, valid_frac=0.3, seed=0)
    assert dls.vocab == ['dispersed', 'network', 'singular']
    xb, yb = dls.train.one_batch()
    assert tuple(xb.shape) == (4, 1, 32, 32) and yb.max() < 3
    assert not set(dls.train.dataset.df.group) & set(dls.valid.dataset.df.group)
    sdl = seg_dataloaders(root, size=32, bs=2, valid_frac=0.3)
    xb, yb = sdl.one_batch()
    assert tuple(yb.shape) == (2, 32, 32) and set(yb.unique().tolist()) <= {0, 1}
    write_frames(tmp_path / 'raw')
    build_hdf5_dataset(index_folder(tmp_path / 'raw'), tmp_path / 'd.h5', size=64, min_foreground=100,
                       test_frac=0.25, workers=1, progress=False)
    hdl = seg_dataloaders(tmp_path / 'd.h5', bs=3)
    xb, yb = hdl.train.one_batch()
    assert tuple(xb.shape) == (3, 1, 64, 64) and yb.dtype.is_floating_point is False
    with pytest.raises(ValueError, match='2 classes'):
        cls_dataloaders(make_tree(tmp_path / 'one', {'a': ['x', 'y']}), size=16)
