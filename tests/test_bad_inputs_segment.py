"""Issue 11 cases of segmentation (models, segment, predict): each test uses the exact failing input and fails on the
code before the fix. The before/after table is in the note on issue 11."""
import contextlib, io, json, pickle, warnings, zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st

from temlearn.core import TEMImage, run_cli
from temlearn.io import write_tiff, read_image
from temlearn.reference import blobs

torch.set_num_threads(1)


def _run(argv):
    "Run `temlearn-segment argv`: (exit status, stderr)."
    from temlearn.predict import segment_cli
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        warnings.simplefilter('ignore')
        return run_cli(segment_cli, [str(a) for a in argv]), err.getvalue()


def _labeled(root, n=4, n_classes=2, seed=5, size=64):
    from PIL import Image
    root.mkdir(parents=True, exist_ok=True)
    for i, (im, m) in enumerate(zip(*blobs(n, size=size, seed=seed, n_classes=n_classes, n_blobs=3))):
        write_tiff(TEMImage(im, pixel_size=0.25), root / f'f{i}.tif')
        Image.fromarray(np.asarray(m, np.uint8) * (255 if n_classes == 2 else 1)).save(root / f'f{i}_label.png')
    return root


TRAIN = ['--epochs', '1', '--crop', '32', '--bs', '2', '--quiet']


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('seg')
    code, err = _run(['train', _labeled(d / 'data'), '--out', d / 'model'] + TRAIN)
    assert code == 0, err
    return d / 'model'


# ---------------------------------------------------------------- item 1: no code from files
def _torchscript_h5(path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.jit.save(torch.jit.trace(nn.Conv2d(1, 2, 1), torch.zeros(1, 1, 4, 4)), str(path))
    return path


def test_torchscript_archive_named_h5_is_refused_without_jit_load(tmp_path, monkeypatch):
    from temlearn.models import load_hrtem_generalization_model
    calls = []
    monkeypatch.setattr(torch.jit, 'load', lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError('jit.load')))
    f = _torchscript_h5(tmp_path / 'UNet_fold0_model.h5')
    with pytest.raises(ValueError, match='TorchScript archive'):
        load_hrtem_generalization_model(f)
    assert calls == []
    code, err = _run(['predict', f, tmp_path, '--out', tmp_path / 'o'])
    assert code == 1 and 'TorchScript' in err and calls == []


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Evil.target}",))


def test_malicious_pickle_in_h5_runs_nothing(tmp_path):
    from temlearn.models import load_hrtem_generalization_model
    _Evil.target = str(tmp_path / 'pwned')
    f = tmp_path / 'evil_model.h5'
    with zipfile.ZipFile(f, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps({'w': _Evil()}, protocol=2))
        z.writestr('archive/version', '3\n')
    with pytest.raises(ValueError, match='refusing to load'):
        load_hrtem_generalization_model(f)
    assert not (tmp_path / 'pwned').exists()


def test_no_unrestricted_unpickling_in_segmentation_modules():
    import temlearn.models, temlearn.segment, temlearn.predict
    for m in (temlearn.models, temlearn.segment, temlearn.predict):
        src = Path(m.__file__).read_text()
        for bad in ('torch.load(', 'jit.load(', 'pickle.load(', 'allow_pickle=True', 'weights_only=False', 'learn.load('):
            assert bad not in src, f"{m.__name__} uses {bad}"


# ---------------------------------------------------------------- item 2: no group on both sides
@settings(max_examples=200, deadline=None)
@given(st.integers(4, 40).flatmap(lambda n: st.tuples(st.lists(st.integers(0, 2), min_size=n, max_size=n),
                                                     st.lists(st.integers(0, 7), min_size=n, max_size=n))),
       st.integers(0, 10_000), st.sampled_from([0.2, 0.34, 0.5]))
def test_few_shot_split_never_puts_a_group_on_both_sides(lg, seed, test_frac):
    from temlearn.segment import few_shot_split
    labels, groups = map(np.array, lg)
    pool, test = few_shot_split(labels, groups, test_frac, seed)
    assert not set(groups[pool]) & set(groups[test])
    assert sorted(np.r_[pool, test].tolist()) == list(range(len(labels)))


def test_few_shot_rows_carry_indices_and_never_leak(tmp_path):
    "The case that leaked: groups that span both classes (old per-class choice put group 1 on both sides)."
    from temlearn.segment import few_shot_segmentation
    from temlearn.encoder import create_encoder
    ims, ms = blobs(6, seed=3)
    labels, groups = np.array([0, 1, 0, 1, 0, 1]), np.array([0, 0, 1, 1, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = few_shot_segmentation(ims, ms, {'r': create_encoder('test_resnet')}, shots=(1,), seeds=(0, 1, 2, 3),
                                    labels=labels, groups=groups, test_frac=0.34, epochs=1, progress=False)
    for r in res.itertuples():
        assert not set(groups[r.train_idx]) & set(groups[r.test_idx])
    with pytest.warns(UserWarning, match='share a group'):                # a given test set: the pool leaves its groups out
        res = few_shot_segmentation(ims, ms, {'r': create_encoder('test_resnet')}, shots=(1,), groups=groups, test_idx=[1],
                                    epochs=1, progress=False)
    assert 0 not in res.train_idx[0]


# ---------------------------------------------------------------- item 3: predict and train lose or mix nothing
def test_same_stem_different_extension_get_different_masks(tmp_path, model_dir):
    from PIL import Image
    d = tmp_path / 'frames'; d.mkdir()
    im = blobs(1, seed=8)[0][0]
    write_tiff(TEMImage(im, pixel_size=0.25), d / 'frame.tif')
    Image.fromarray(np.clip(im * 40 + 100, 0, 255).astype(np.uint8)).save(d / 'frame.png')
    code, err = _run(['predict', model_dir, d, '--out', tmp_path / 'o', '--tile', '32'])
    assert code == 0, err
    masks = sorted(p.name for p in (tmp_path / 'o').glob('*_mask.tif'))
    assert masks == ['frame_png_mask.tif', 'frame_tif_mask.tif']


def test_second_predict_into_same_folder_is_refused_unless_overwrite(tmp_path, model_dir):
    d = _labeled(tmp_path / 'frames', n=2)
    assert _run(['predict', model_dir, d, '--out', tmp_path / 'o', '--tile', '32'])[0] == 0
    (d / 'f1.tif').unlink(); (d / 'f1_label.png').unlink()
    code, err = _run(['predict', model_dir, d, '--out', tmp_path / 'o', '--tile', '32'])
    assert code == 1 and 'not empty' in err
    assert _run(['predict', model_dir, d, '--out', tmp_path / 'o', '--tile', '32', '--overwrite'])[0] == 0
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == ['f0_mask.tif', 'particles.csv']   # no stale f1 mask


def test_train_into_non_empty_folder_is_refused(tmp_path, model_dir):
    before = (model_dir / 'model.safetensors').read_bytes()
    code, err = _run(['train', model_dir.parent / 'data', '--out', model_dir] + TRAIN)
    assert code == 1 and 'not empty' in err
    assert (model_dir / 'model.safetensors').read_bytes() == before


BAD_FRAMES = {                                       # name: (writer, what the error says)
    'unreadable.tif': (lambda p: p.write_bytes(b'II*\x00garbage'), ''),
    'nan.tif': (lambda p: write_tiff(TEMImage(np.full((64, 64), np.nan, np.float32)), p), 'NaN'),
    'constant.tif': (lambda p: write_tiff(TEMImage(np.full((64, 64), 7, np.float32)), p), 'constant'),
    'tiny.tif': (lambda p: write_tiff(TEMImage(np.arange(12, dtype=np.float32).reshape(3, 4)), p), 'too small'),
}


@pytest.mark.parametrize('bad', list(BAD_FRAMES))
def test_one_bad_frame_does_not_abort_a_folder_run(tmp_path, model_dir, bad):
    d = _labeled(tmp_path / 'frames', n=2)
    BAD_FRAMES[bad][0](d / bad)
    code, err = _run(['predict', model_dir, d, '--out', tmp_path / 'o', '--tile', '32'])
    assert code == 1 and bad in err
    assert sorted(p.name for p in (tmp_path / 'o').glob('*_mask.tif')) == ['f0_mask.tif', 'f1_mask.tif']
    e = pd.read_csv(tmp_path / 'o' / 'errors.csv')
    assert e.file.tolist() == [bad] and BAD_FRAMES[bad][1] in e.error[0]


# ---------------------------------------------------------------- item 4: half-written saves
def test_killed_save_keeps_the_previous_model(tmp_path, monkeypatch):
    import safetensors.torch
    from temlearn.models import ResidualUNet, save_segmenter, load_segmenter
    old = ResidualUNet((4, 8, 16)); save_segmenter(old, tmp_path / 'm')
    def killed(*a, **k): raise KeyboardInterrupt('killed during the save')
    monkeypatch.setattr(safetensors.torch, 'save_file', killed)
    with pytest.raises(KeyboardInterrupt):
        save_segmenter(ResidualUNet((4, 8, 16, 32)), tmp_path / 'm')
    monkeypatch.undo()
    assert load_segmenter(tmp_path / 'm').filters == (4, 8, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m']


def test_flipped_byte_in_weights_is_refused_naming_the_file(tmp_path, model_dir):
    import shutil
    from temlearn.models import load_segmenter
    m = tmp_path / 'm'; shutil.copytree(model_dir, m)
    raw = bytearray((m / 'model.safetensors').read_bytes()); raw[-7] ^= 0x01
    (m / 'model.safetensors').write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r'model\.safetensors: the weights file does not match the SHA-256'):
        load_segmenter(m)
    code, err = _run(['predict', m, model_dir.parent / 'data', '--out', tmp_path / 'o'])
    assert code == 1 and 'SHA-256' in err


def test_new_weights_beside_an_old_description_are_refused(tmp_path):
    from safetensors.torch import save_file
    from temlearn.models import ResidualUNet, save_segmenter, load_segmenter
    save_segmenter(ResidualUNet((4, 8, 16)), tmp_path / 'm')
    new = ResidualUNet((4, 8, 16)); torch.nn.init.ones_(new.final_conv.weight)
    save_file({k: v.contiguous() for k, v in new.state_dict().items()}, str(tmp_path / 'm' / 'model.safetensors'))
    with pytest.raises(ValueError, match='SHA-256'):
        load_segmenter(tmp_path / 'm')


# ---------------------------------------------------------------- item 5: C classes end to end
def test_three_class_masks_train_and_predict_three_classes(tmp_path):
    d = _labeled(tmp_path / 'data', n=4, n_classes=3)
    code, err = _run(['train', d, '--out', tmp_path / 'model'] + TRAIN)
    assert code == 0, err
    meta = json.loads((tmp_path / 'model' / 'model.json').read_text())
    assert meta['n_classes'] == 3 and meta['final_relu'] is False
    h = pd.read_csv(tmp_path / 'model' / 'history.csv')
    assert {'valid_dice_1', 'valid_dice_2'} <= set(h.columns)
    assert _run(['predict', tmp_path / 'model', d, '--out', tmp_path / 'o', '--tile', '32'])[0] == 0
    assert read_image(tmp_path / 'o' / 'f0_mask.tif').data.max() <= 2
    assert 'class' in pd.read_csv(tmp_path / 'o' / 'particles.csv').columns
    code, err = _run(['train', d, '--out', tmp_path / 'bin', '--binarize'] + TRAIN)
    assert code == 0 and json.loads((tmp_path / 'bin' / 'model.json').read_text())['n_classes'] == 2


def test_particle_stats_per_class():
    from temlearn.predict import particle_stats
    m = np.zeros((40, 40), np.uint8); m[2:8, 2:8] = 1; m[20:30, 20:30] = 2; m[12:14, 30:34] = 2
    st = particle_stats(TEMImage(m, pixel_size=0.5))
    assert st.groupby('class').area_px.apply(sorted).to_dict() == {1: [36], 2: [8, 100]}


def test_stray_mask_values_are_an_error_naming_the_file(tmp_path):
    from PIL import Image
    d = _labeled(tmp_path / 'data', n=4)
    a = np.zeros((64, 64), np.uint8); a[10:20, 10:20] = 255; a[10, 10:20] = 128      # anti-aliased edge
    Image.fromarray(a).save(d / 'f2_label.png')
    code, err = _run(['train', d, '--out', tmp_path / 'm'] + TRAIN)
    assert code == 1 and 'f2_label.png' in err and 'mask values' in err


# ---------------------------------------------------------------- items 6 and 7: errors that say which file / argument
def test_image_and_mask_of_different_shapes_name_the_file(tmp_path):
    from PIL import Image
    d = _labeled(tmp_path / 'data', n=4)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(d / 'f2_label.png')
    code, err = _run(['train', d, '--out', tmp_path / 'm'] + TRAIN)
    assert code == 1 and 'f2.tif' in err and 'shape' in err


def test_tiny_frame_with_default_tile_is_segmented(tmp_path, model_dir):
    "A 10×10 frame used to give 'overlap must be in [0, tile), got overlap=0, tile=0'."
    write_tiff(TEMImage(np.random.default_rng(0).normal(size=(10, 10)).astype(np.float32), pixel_size=0.25),
               tmp_path / 'small.tif')
    code, err = _run(['predict', model_dir, tmp_path / 'small.tif', '--out', tmp_path / 'o'])
    assert code == 0, err
    assert read_image(tmp_path / 'o' / 'small_mask.tif').shape == (10, 10)


def test_model_json_of_unknown_kind_names_the_file(tmp_path, model_dir):
    import shutil
    m = tmp_path / 'm'; shutil.copytree(model_dir, m)
    meta = json.loads((m / 'model.json').read_text()); meta['kind'] = 'transformer'
    (m / 'model.json').write_text(json.dumps(meta))
    code, err = _run(['predict', m, model_dir.parent / 'data', '--out', tmp_path / 'o'])
    assert code == 1 and 'model.json' in err and "unknown model kind 'transformer'" in err


@pytest.mark.parametrize('argv, says', [
    (['--crop', '16', '--bs', '1'], 'batch-norm'),                 # item 7: the bottleneck holds one value per channel
    (['--epochs', '0'], 'epochs'), (['--lr', 'nan'], 'lr'), (['--loss', 'focal'], 'loss'),
    (['--model', 'vit'], 'model kind'), (['--device', 'cuda:7'], 'cuda:7'), (['--val-frac', '1'], 'valid_frac'),
])
def test_bad_train_arguments_exit_2_with_one_line(tmp_path, argv, says):
    d = _labeled(tmp_path / 'data', n=4)
    code, err = _run(['train', d, '--out', tmp_path / 'm', '--epochs', '1', '--quiet'] + argv)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize('argv', [['--tile', '0'], ['--overlap', '-1'], ['--blend', 'cubic'], ['--pixel-size', '-1']])
def test_bad_predict_arguments_exit_2(tmp_path, model_dir, argv):
    code, err = _run(['predict', model_dir, model_dir.parent / 'data', '--out', tmp_path / 'o'] + argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
