"Tests of segmentation (temlearn.models, .segment, .predict): metrics, networks, published-model loading, training, sliding window, particle statistics, CLI."
import math, pickle, zipfile

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from temlearn.core import TEMImage, shared_data, run_cli
from temlearn.losses import dice, iou, seg_loss
from temlearn.augment import rotate_pair, gaussian_noise, dihedral
from temlearn.data import SegDataset, STANDARDIZE, normalize
from temlearn.encoder import create_encoder
from temlearn.models import (ResidualUNet, n_params, load_hrtem_generalization_model, unet_from_encoder, save_segmenter,
                             load_segmenter, model_normalization)
from temlearn.segment import (fit_segmenter, evaluate_segmenter, few_shot_segmentation, EPOCH_SCHEDULE, train_segmenter,
                              segment_settings, segmenter_verdict, SegmenterWarning)
from temlearn.predict import sliding_window_predict, predict_mask, particle_stats, segment_cli

torch.set_num_threads(1)
MODEL = 'UNet_2p2nmAu330kX423eUTC_fold0_seed962_model.h5'


def _blobs(n, size=64, seed=0):
    "Noisy images of three bright disks and their masks (the shared test scene of temlearn.reference)."
    from temlearn.reference import blobs
    return blobs(n, size, seed)


# ---------------------------------------------------------------- metrics
def test_dice_iou_hand_computed():
    T = np.zeros((5, 5), int); T[1:4, 1:4] = 1                 # 9 px
    P = np.zeros((5, 5), int); P[1:4, 2:5] = 1                 # 9 px, 6 overlap
    assert dice(P, T) == pytest.approx(2 * 6 / 18)
    assert iou(P, T) == pytest.approx(6 / 12)
    assert dice(P, P) == 1.0 and iou(1 - T, T) == 0.0


def test_empty_mask_convention():
    Z = np.zeros((3, 3), int); O = np.ones((3, 3), int)
    assert dice(Z, Z) == 1.0 and iou(Z, Z) == 1.0
    assert dice(Z, Z, empty=0.0) == 0.0
    assert dice(O, Z) == 0.0 and dice(Z, O) == 0.0


def test_per_image_and_mean_from_logits():
    t = torch.zeros(3, 4, 4, dtype=torch.long); t[:, :2] = 1
    logits = torch.zeros(3, 2, 4, 4)
    logits[0, 1, :2] = 5; logits[0, 1, 2:] = -5                # perfect
    logits[1, 1] = -5                                          # predicts nothing: dice 0
    logits[2, 1] = 5                                           # predicts everything: 2*8/(16+8)
    per = dice(logits, t, reduction='none')
    assert torch.allclose(per, torch.tensor([1.0, 0.0, 16 / 24]))
    assert float(dice(logits, t)) == pytest.approx((1 + 0 + 16 / 24) / 3)
    assert torch.allclose(iou(logits, t, reduction='none'), torch.tensor([1.0, 0.0, 0.5]))
    soft = dice(logits, t, hard=False, reduction='none')
    s = 1 / (1 + math.exp(5))
    assert soft[1] == pytest.approx(2 * 8 * s / (16 * s + 8), rel=1e-4) and soft[0] > 0.99


def test_metric_bad_shapes():
    with pytest.raises(ValueError, match='does not match'):
        dice(np.zeros((2, 3)), np.zeros((3, 3)))


def test_losses_order_predictions():
    t = torch.zeros(2, 8, 8, dtype=torch.long); t[:, 2:6, 2:6] = 1
    good = torch.stack([1 - t, t], 1).float() * 10
    for name in ('dice', 'ce', 'dice+ce'):
        lf = seg_loss(name)
        assert lf(good, t) < lf(-good, t)
        assert lf(good, t) < 0.05
    with pytest.raises(ValueError, match='must be one of'):
        seg_loss('nope')


# ---------------------------------------------------------------- networks
def test_residual_unet_parameter_count_and_keys():
    net = ResidualUNet()
    assert n_params(net) == 130_682
    keys = set(net.state_dict())
    assert {'downs.0.conv_add.weight', 'ups.3.bn2.running_var', 'bottleneck.conv1.weight', 'final_conv.bias'} <= keys
    assert net(torch.randn(1, 1, 32, 48)).shape == (1, 2, 32, 48)


def test_published_model_loads_strictly():
    p = shared_data('hrtem-generalization', MODEL)
    if p is None: pytest.skip('shared data (hrtem-generalization) not available')
    net = load_hrtem_generalization_model(p)
    assert isinstance(net, ResidualUNet) and n_params(net) == 130_682
    assert all(t.device.type == 'cpu' for t in net.state_dict().values())
    with torch.no_grad(): out = net(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 2, 64, 64) and torch.isfinite(out).all()


def test_restricted_unpickler_refuses_foreign_objects(tmp_path):
    import datetime
    bad = tmp_path / 'evil_model.h5'
    torch.save({'when': datetime.date(2020, 1, 1)}, bad)
    with pytest.raises(ValueError, match='refusing to load datetime'):
        load_hrtem_generalization_model(bad)
    ok = tmp_path / 'sd.h5'
    torch.save(ResidualUNet((4, 8, 16)).state_dict(), ok)
    assert load_hrtem_generalization_model(ok).filters == (4, 8, 16)
    notzip = tmp_path / 'x.h5'; notzip.write_bytes(b'\x89HDF\r\n')
    with pytest.raises(ValueError, match='not a torch.save zip'):
        load_hrtem_generalization_model(notzip)


def test_frozen_encoder_weights_and_bn_stats_do_not_change():
    torch.manual_seed(0)
    enc = create_encoder('test_resnet')
    seg = unet_from_encoder(enc, img_size=(64, 64))
    before = {k: v.clone() for k, v in seg.encoder.state_dict().items()}
    ds = SegDataset(*_blobs(4), seed=0)
    fit_segmenter(seg, ds, None, loss='dice', epochs=2, lr=1e-2, bs=2, progress=False)
    after = seg.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)          # weights and running stats
    assert all(p.requires_grad for p in enc.parameters())                  # caller's encoder untouched
    seg.unfreeze()
    fit_segmenter(seg, ds, None, loss='dice', epochs=1, lr=1e-2, bs=2, progress=False)
    assert any(not torch.equal(before[k], seg.encoder.state_dict()[k]) for k in before)


def test_encoder_unet_uses_encoder_normalisation():
    enc = create_encoder('test_resnet')
    seg = unet_from_encoder(enc, img_size=(64, 64))
    meta = enc.temlearn_meta
    x = np.random.default_rng(0).uniform(0, 100, (32, 32)).astype(np.float32)
    y = normalize(x, model_normalization(seg))
    assert y.min() == pytest.approx((0 - np.mean(meta['mean'])) / np.mean(meta['std']), abs=1e-5)
    assert model_normalization(ResidualUNet()) == STANDARDIZE


def test_best_validation_checkpoint_is_restored():
    torch.manual_seed(0)
    tr, va = SegDataset(*_blobs(6, seed=1), seed=0), SegDataset(*_blobs(3, seed=2), dihedral=False)
    net = ResidualUNet()
    h = fit_segmenter(net, tr, va, loss='ce', epochs=4, lr=1e-2, bs=3, progress=False)
    assert evaluate_segmenter(net, va)['loss'] == pytest.approx(h.valid_loss[~h.degenerate].min(), rel=1e-4)
    assert h.best.sum() == 1


# ---------------------------------------------------------------- augmentation
def test_augmentations():
    a = np.arange(12).reshape(3, 4)
    outs = {(dihedral(a, k).shape, dihedral(a, k).tobytes()) for k in range(8)}
    assert len(outs) == 8
    disk = ((np.mgrid[:80, :80] - 39.5) ** 2).sum(0) < 15 ** 2
    img = np.where(disk, -1.0, 1.0); img_copy = img.copy()
    _, rm = rotate_pair(img, disk.astype(np.uint8), 47)
    assert set(np.unique(rm)) <= {0, 1} and abs(rm.sum() / disk.sum() - 1) < 0.03
    np.testing.assert_array_equal(img, img_copy)
    z = np.random.default_rng(0).normal(size=(200, 200))
    assert gaussian_noise(z, rho=2.0, rng=7).std() == pytest.approx(1.0, abs=0.03)
    stds = [gaussian_noise(z, rho_max=3.0, rng=s + 10).std() for s in range(5)]
    assert np.allclose(stds, 1.0, atol=0.05)


# ---------------------------------------------------------------- sliding window
def test_sliding_window_equals_whole_image_for_pointwise_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    img = TEMImage(np.random.default_rng(1).normal(size=(200, 170)).astype(np.float32), pixel_size=(0.1, 0.2))
    for blend in ('gaussian', 'linear', 'none'):
        m1, p1 = sliding_window_predict(net, img, tile=64, overlap=16, blend=blend, return_proba=True)
        m2, p2 = predict_mask(net, img, return_proba=True)
        np.testing.assert_allclose(p1.data, p2.data, atol=1e-5)
    assert m1.pixel_size == (0.1, 0.2) and m1.shape == img.shape


def test_sliding_window_matches_whole_image_for_published_model():
    p = shared_data('hrtem-generalization', MODEL)
    if p is None: pytest.skip('shared data (hrtem-generalization) not available')
    net = load_hrtem_generalization_model(p)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    m = ((yy - 100) ** 2 + (xx - 120) ** 2 < 40 ** 2) | ((yy - 200) ** 2 + (xx - 60) ** 2 < 25 ** 2)
    from scipy import ndimage as ndi
    img = ndi.gaussian_filter(rng.normal(0, 1, m.shape) - m * (1.5 + np.cos(2 * np.pi * (0.6 * yy + 0.8 * xx) / 12)), 1)
    sw = sliding_window_predict(net, img, tile=128, overlap=32)
    wh = predict_mask(net, img)
    assert (sw == wh).mean() > 0.98


def test_published_model_segments_painted_real_label():
    p = shared_data('hrtem-generalization', MODEL)
    lp = shared_data('hrtem-generalization', '20221109_Au_UTC_330kx_2640e_0p1596s_03_label.png')
    if p is None or lp is None: pytest.skip('shared data (hrtem-generalization) not available')
    from PIL import Image
    from scipy import ndimage as ndi
    m = (np.asarray(Image.open(lp)) > 0)[1000:1512, 1400:1912]
    yy, xx = np.mgrid[:512, :512]
    img = ndi.gaussian_filter(np.random.default_rng(3).normal(0, 1, m.shape)
                              - m * (1.5 + np.cos(2 * np.pi * (0.6 * yy + 0.8 * xx) / 12)), 1)
    net = load_hrtem_generalization_model(p)
    assert dice(sliding_window_predict(net, img, tile=256, overlap=64), m) > 0.8


def test_sliding_window_bad_input():
    net = nn.Conv2d(1, 2, 1)
    with pytest.raises(ValueError, match='frame.tif: overlap'):
        sliding_window_predict(net, TEMImage(np.zeros((64, 64)) + np.arange(64), metadata={'source': 'frame.tif'}), tile=32, overlap=40)
    with pytest.raises(ValueError, match='constant'):
        sliding_window_predict(net, np.ones((64, 64)), tile=32, overlap=8)


# ---------------------------------------------------------------- particle statistics
def test_particle_stats_hand_case():
    m = np.zeros((50, 60), bool)
    m[10:20, 10:20] = True               # 100 px
    m[30:34, 40:45] = True               # 20 px
    m[0:2, 55:60] = True                 # 10 px, on the border
    st = particle_stats(TEMImage(m, pixel_size=0.5))
    assert sorted(st.area_px) == [10, 20, 100]
    big = st[st.area_px == 100].iloc[0]
    assert big.area_nm2 == pytest.approx(25.0)
    assert big.equivalent_diameter_nm == pytest.approx(2 * math.sqrt(25 / math.pi))
    assert (big.centroid_y_px, big.centroid_x_px) == pytest.approx((14.5, 14.5))
    assert st.touches_border.sum() == 1
    assert len(particle_stats(m, pixel_size=0.5, exclude_border=True, min_area_px=15)) == 2


def test_particle_stats_real_label():
    p = shared_data('hrtem-generalization', '20221109_Au_UTC_330kx_2640e_0p1596s_03_label.png')
    if p is None: pytest.skip('shared data (hrtem-generalization) not available')
    from PIL import Image
    st = particle_stats(TEMImage(np.asarray(Image.open(p)) > 0, pixel_size=0.02))
    assert len(st) == 8
    assert 4 < st.equivalent_diameter_nm.median() < 7


# ---------------------------------------------------------------- protocol, save/load, CLI
def test_few_shot_protocol_small():
    ims, ms = _blobs(6)
    res = few_shot_segmentation(ims, ms, {'r': create_encoder('test_resnet')}, shots=(1, 2), seeds=(0, 1),
                                test_idx=[4, 5], epochs=1, progress=False)
    assert len(res) == 4 and set(res.k) == {1, 2} and res.dice.between(0, 1).all()
    assert all(sorted(r.train_idx + r.test_idx) == sorted(set(r.train_idx + r.test_idx)) for r in res.itertuples())
    assert EPOCH_SCHEDULE[8] == 60
    with pytest.raises(ValueError, match='fewer training images than shots'):
        few_shot_segmentation(ims, ms, {'r': create_encoder('test_resnet')}, shots=(5,), test_idx=[4, 5],
                              epochs=1, progress=False)


def test_save_load_roundtrip(tmp_path):
    net = ResidualUNet((4, 8, 16))
    save_segmenter(net, tmp_path / 'm', note='x')
    back = load_segmenter(tmp_path / 'm')
    x = torch.randn(1, 1, 16, 16); net.eval()
    assert torch.allclose(back(x), net(x))
    with pytest.raises(TypeError):
        save_segmenter(nn.Conv2d(1, 2, 1), tmp_path / 'c')
    assert not (tmp_path / 'c').exists()


def _write_folder(root, n=4):
    from PIL import Image
    from temlearn.io import write_tiff
    root.mkdir(parents=True)
    for i, (im, m) in enumerate(zip(*_blobs(n, seed=5))):
        write_tiff(TEMImage(im, pixel_size=0.25), root / f'f{i}.tif')
        Image.fromarray((m * 255).astype(np.uint8)).save(root / f'f{i}_label.png')


def _quiet_run(argv):
    import warnings, contextlib, io
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter('ignore', SegmenterWarning)
        return run_cli(segment_cli, [str(a) for a in argv])


def test_cli_train_and_predict_folder(tmp_path):
    _write_folder(tmp_path / 'data')
    assert _quiet_run(['train', str(tmp_path / 'data'), '--out', str(tmp_path / 'model'), '--epochs', '2',
                        '--crop', '48', '--bs', '2']) == 0
    assert (tmp_path / 'model' / 'model.json').exists() and (tmp_path / 'model' / 'history.csv').exists()
    assert _quiet_run(['predict', str(tmp_path / 'model'), str(tmp_path / 'data'), '--out', str(tmp_path / 'pred'),
                        '--tile', '32', '--overlap', '8']) == 0
    from temlearn.io import read_image
    mask = read_image(tmp_path / 'pred' / 'f0_mask.tif')
    assert mask.pixel_size == pytest.approx((0.25, 0.25)) and mask.shape == (64, 64)
    assert 'equivalent_diameter_nm' in pd.read_csv(tmp_path / 'pred' / 'particles.csv').columns


def test_cli_train_hdf5_and_errors(tmp_path):
    import h5py
    ims, ms = _blobs(6, seed=3)
    with h5py.File(tmp_path / 'd.h5', 'w') as h:
        h['images'] = np.stack(ims); h['labels'] = np.stack(ms).astype(np.uint8)
        h.create_dataset('group', data=np.array(['a', 'a', 'b', 'c', 'd', 'e'], dtype=object), dtype=h5py.string_dtype())
        h.create_dataset('split', data=np.array(['train'] * 5 + ['test'], dtype=object), dtype=h5py.string_dtype())
    assert _quiet_run(['train', str(tmp_path / 'd.h5'), '--out', str(tmp_path / 'm'), '--epochs', '1', '--crop', '32',
                        '--noise-rho-max', '0.5']) == 0
    assert _quiet_run(['train', str(tmp_path / 'missing'), '--out', str(tmp_path / 'm2')]) == 1       # bad data: exit 1
    assert _quiet_run(['predict', str(tmp_path / 'nomodel'), str(tmp_path), '--out', str(tmp_path / 'p')]) == 1
    assert _quiet_run(['train', str(tmp_path / 'd.h5'), '--out', str(tmp_path / 'm3'), '--epochs', '0']) == 2   # bad argument


def test_cli_predict_with_published_model(tmp_path):
    p = shared_data('hrtem-generalization', MODEL)
    if p is None: pytest.skip('shared data (hrtem-generalization) not available')
    from temlearn.io import write_tiff
    img = np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32)
    write_tiff(TEMImage(img, pixel_size=0.02), tmp_path / 'frame.tif')
    assert _quiet_run(['predict', str(p), str(tmp_path / 'frame.tif'), '--out', str(tmp_path / 'o'), '--tile', '64']) == 0
    assert (tmp_path / 'o' / 'frame_mask.tif').exists()
    raw = np.random.default_rng(1).poisson(100, (128, 128)).astype(np.float32); raw[5, 7] = 1e5   # an x-ray spike
    write_tiff(TEMImage(raw, pixel_size=0.02), tmp_path / 'raw.tif')
    assert _quiet_run(['predict', str(p), str(tmp_path / 'raw.tif'), '--out', str(tmp_path / 'o2'), '--tile', '64',
                        '--preprocess']) == 0
    assert (tmp_path / 'o2' / 'raw_mask.tif').exists()


# ---------------------------------------------------------------- multi-class training, guard and verdict (issue 17)
def _three_class():
    from temlearn.reference import blobs
    return blobs(10, n_classes=3, n_blobs=4, seed=5)


def _eval3(net, ims, ms):
    return evaluate_segmenter(net, SegDataset(ims[8:], ms[8:], dihedral=False, normalize=model_normalization(net)))


def test_residual_unet_three_classes(recwarn):
    "With the paper's ReLU before the classifier the middle class is never predicted; without it (default for C > 2) it is."
    ims, ms = _three_class()
    s = segment_settings('residual', lr=1e-2, epochs=20, crop=64, bs=2)
    torch.manual_seed(0)
    net = ResidualUNet(n_classes=3)
    assert net.final_relu is False
    h, v = train_segmenter(net, ims, ms, range(8), [8, 9], settings=s, progress=False)
    r = _eval3(net, ims, ms)
    assert r['dice_1'] > 0.8 and r['dice_2'] > 0.8 and not v['degenerate']
    torch.manual_seed(0)
    old = ResidualUNet(n_classes=3, final_relu=True)                   # the published architecture
    h, v = train_segmenter(old, ims, ms, range(8), [8, 9], settings={**s, 'epochs': 10}, progress=False)
    assert _eval3(old, ims, ms)['dice_1'] == 0.0
    assert v['degenerate'] and v['missing_classes'] == [1] and h.degenerate.all() and not h.best.any()
    assert any(issubclass(w.category, SegmenterWarning) for w in recwarn)


def test_encoder_unet_three_classes():
    ims, ms = _three_class()
    torch.manual_seed(0)
    net = unet_from_encoder(create_encoder('test_resnet'), n_classes=3, img_size=64)
    s = segment_settings('unet', loss='dice+ce', lr=1e-3, epochs=10, crop=64, bs=2)
    h, v = train_segmenter(net, ims, ms, range(8), [8, 9], settings=s, progress=False)
    r = _eval3(net, ims, ms)
    assert r['dice_1'] > 0.6 and r['dice_2'] > 0.6 and not v['degenerate']


def test_verdict_model_vs_otsu_on_uneven_illumination():
    "A strong illumination ramp defeats a global threshold, not the network; the verdict says which is better."
    from temlearn.reference import blobs
    ims, ms = blobs(8, seed=11)
    ramp = np.linspace(0, 6, 64, dtype=np.float32)[None, :]
    ims = [im + ramp for im in ims]
    torch.manual_seed(0)
    net = ResidualUNet()
    h, v = train_segmenter(net, ims, ms, range(6), [6, 7], progress=False,
                           settings=segment_settings('residual', lr=1e-2, epochs=20, crop=64, bs=2))
    assert v['model_dice'] > v['otsu_dice'] + 0.1 and v['warning'] is None and not v['below_otsu']


def test_degenerate_model_gets_a_warning():
    from temlearn.reference import blobs
    from temlearn.segment import report_verdict
    ims, ms = blobs(4, seed=1)
    ds = SegDataset(ims, ms, dihedral=False)
    net = ResidualUNet().eval()
    with torch.no_grad():
        net.final_conv.weight.zero_(); net.final_conv.bias.copy_(torch.tensor([5.0, 0.0]))   # all background
    v = segmenter_verdict(net, ds, ds)
    assert v['degenerate'] and v['missing_classes'] == [1] and 'degenerate' in v['warning']
    with pytest.warns(SegmenterWarning, match='degenerate'):
        report_verdict(v)


class _Scripted(nn.Module):
    "Epoch 0: a noisy threshold of the image; epoch 1: all background (a lower loss on rare foreground, but degenerate)."
    def __init__(self):
        super().__init__(); self.w = nn.Parameter(torch.zeros(1)); self.epoch = -1; self.n_classes = 2
    def train(self, mode=True):
        if mode: self.epoch += 1
        return super().train(mode)
    def forward(self, x):
        if self.epoch <= 0: return torch.cat([torch.zeros_like(x), 0.7 * (x - 0.5)], 1) + self.w
        return torch.cat([torch.full_like(x, 5.0), torch.zeros_like(x)], 1) + self.w


def test_keep_best_never_keeps_a_degenerate_epoch():
    rng = np.random.default_rng(0)
    ms = [np.zeros((32, 32), np.uint8) for _ in range(4)]
    for m in ms: m[10:13, 10:13] = 1                                    # 0.9 % foreground
    ims = [m * 3.0 + rng.normal(0, 1, m.shape) for m in ms]
    ds = SegDataset(ims, ms, dihedral=False)
    h = fit_segmenter(_Scripted(), ds, ds, loss='ce', epochs=2, lr=0.0, bs=4, progress=False)
    assert h.valid_loss[1] < h.valid_loss[0]                            # plain keep-best would pick epoch 1
    assert h.degenerate.tolist() == [False, True] and h.best.tolist() == [True, False]


def test_settings_live_in_one_dict(monkeypatch):
    from temlearn import segment
    monkeypatch.setitem(segment.SEGMENT_DEFAULTS['residual'], 'epochs', 7)
    assert segment_settings('residual')['epochs'] == 7 and segment_settings('residual', epochs=3)['epochs'] == 3
    with pytest.raises(ValueError, match='valid_frac'):
        segment_settings('unet', valid_frac=1.5)


def test_cli_train_unet_on_saved_encoder_records_its_normalization(tmp_path):
    from temlearn.encoder import save_encoder
    _write_folder(tmp_path / 'data')
    enc = save_encoder(create_encoder('test_resnet'), tmp_path / 'enc')
    assert _quiet_run(['train', tmp_path / 'data', '-o', tmp_path / 'm', '--model', 'unet', '--encoder', enc,
                       '--epochs', '1', '--crop', '32', '--bs', '2', '--quiet']) == 0
    import json
    meta = json.loads((tmp_path / 'm' / 'model.json').read_text())
    assert meta['kind'] == 'encoder_unet' and meta['normalization']['method'] == 'unit' and meta['frozen'] is True
    assert model_normalization(load_segmenter(tmp_path / 'm')) == meta['normalization']
    assert _quiet_run(['predict', tmp_path / 'm', tmp_path / 'data', '-o', tmp_path / 'p', '--tile', '64']) == 0
    assert (tmp_path / 'p' / 'f3_mask.tif').exists()
