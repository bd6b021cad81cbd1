"Tests for temlearn.augment: per-image independent draws, reproducibility, exactness of each component."
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from temlearn.augment import EMAugment, CROP_MODES, to_unit_range, show_views
from temlearn.core import TEMImage

OFF = dict(hflip=0, vflip=0, rot90=0, jitter_p=0, gamma_p=0, blur_p=0, noise_p=0, poisson_p=0)


def _img(size=48, seed=0):
    r = np.random.default_rng(seed)
    return torch.from_numpy(to_unit_range(r.normal(size=(size, size)).cumsum(0).cumsum(1)))


def test_independent_draw_per_image():
    "The original code drew one augmentation per batch; every image must get its own."
    x = _img().expand(64, 1, 48, 48)
    for kw in ({}, dict(OFF, hflip=0.5, crop='nocrop'), dict(OFF, jitter_p=1.0, crop='nocrop'), dict(OFF, noise_p=1.0, crop='nocrop')):
        v = EMAugment(seed=3, **kw)(x)
        flat = v.flatten(1)
        d = torch.cdist(flat, flat) + torch.eye(64) * 1e9
        if kw.get('hflip') == 0.5:        # only two outcomes possible: both must occur
            n_flipped = int(torch.isclose(v[:, 0], x[0, 0].flip(-1), atol=1e-5).flatten(1).all(1).sum())
            assert 10 < n_flipped < 54
        else:
            assert d.min() > 1e-4, kw


def test_params_vary_and_stay_in_range():
    x = _img().expand(200, 1, 48, 48)
    for mode, (lo, hi) in CROP_MODES.items():
        _, p = EMAugment(crop=mode, seed=1)(x, return_params=True)
        f = p['crop_frac']
        assert (f >= lo - 1e-6).all() and (f <= hi + 1e-6).all()
        if lo < hi: assert f.std() > 0.05
    _, p = EMAugment(seed=2)(x, return_params=True)
    assert 0.3 < p['flip_x'].float().mean() < 0.7
    assert set(p['rot90'].tolist()) == {0, 1, 2, 3}
    jit = p['contrast'] != 1
    assert 0.65 < jit.float().mean() < 0.95          # p=0.8
    assert ((p['contrast'][jit] >= 0.6) & (p['contrast'][jit] <= 1.4)).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 9), size=st.sampled_from([16, 24, 33]))
def test_reproducible_and_output_contract(seed, b, size):
    x = torch.rand(b, 1, 40, 40, generator=torch.Generator().manual_seed(seed))
    x0 = x.clone()
    v1 = EMAugment(size=size, seed=seed)(x)
    v2 = EMAugment(size=size, seed=seed)(x)
    assert torch.equal(v1, v2)
    assert torch.equal(x, x0)
    assert v1.shape == (b, 1, size, size) and v1.dtype == torch.float32
    assert v1.min() >= 0 and v1.max() <= 1 and torch.isfinite(v1).all()


def test_two_views_differ_and_state_roundtrip():
    x = _img().expand(8, 1, 48, 48)
    a = EMAugment(seed=0)
    v1, v2 = a.two_views(x)
    assert not torch.equal(v1, v2)
    st_ = a.get_state()
    nxt = a(x)
    assert torch.equal(EMAugment(seed=99).set_state(st_)(x), nxt)


def test_geometry_exact():
    img = _img(32)
    x = img.expand(4, 1, 32, 32)
    torch.testing.assert_close(EMAugment(crop='nocrop', **OFF)(x)[0, 0], img, atol=1e-5, rtol=0)
    v = EMAugment(crop='nocrop', **dict(OFF, vflip=1))(x)
    torch.testing.assert_close(v[0, 0], img.flip(0), atol=1e-5, rtol=0)
    # crop50 of a smooth ramp keeps the local slope ×0.5 per output pixel
    ramp = torch.linspace(0, 1, 64).expand(64, 64)
    c = EMAugment(crop='crop50', **OFF)(ramp.expand(2, 1, 64, 64))
    slope = c[0, 0].diff(dim=-1).mean()
    assert abs(slope - ramp.diff(dim=-1).mean() * 0.5) < 1e-3


def test_intensity_components():
    half = torch.full((400, 1, 16, 16), 0.5)
    b = EMAugment(crop='nocrop', **dict(OFF, jitter_p=1, contrast=0, brightness=0.2))(half)
    m = b.mean(dim=(1, 2, 3))
    assert m.min() >= 0.3 - 1e-6 and m.max() <= 0.7 + 1e-6 and m.std() > 0.08
    ramp = torch.linspace(0.1, 0.9, 16).expand(8, 1, 16, 16)
    g = EMAugment(crop='nocrop', **dict(OFF, gamma_p=1, gamma=0.5))(ramp)
    assert ((g - ramp).abs().flatten(1).max(1).values > 1e-3).all()           # gamma applied to every image
    assert (g[..., 1:] >= g[..., :-1] - 1e-6).all()                             # and monotone
    # Poisson: variance ≈ mean / dose
    p = EMAugment(crop='nocrop', **dict(OFF, poisson_p=1, poisson_dose=(50, 50)))(torch.full((128, 1, 32, 32), 0.4))
    assert abs(p.var().item() - 0.4 / 50) < 8e-4


def test_runs_on_batch_device_and_errors():
    x = torch.rand(3, 48, 48)                        # (B, H, W) accepted
    v = EMAugment(seed=0)(x)
    assert v.device == x.device and v.shape == (3, 1, 48, 48)
    with pytest.raises(ValueError, match='crop must be one of'): EMAugment(crop='crop10')
    with pytest.raises(ValueError, match='probability'): EMAugment(hflip=1.5)
    with pytest.raises(ValueError, match='poisson_dose'): EMAugment(poisson_dose=(0, 5))
    with pytest.raises(ValueError, match='floating-point'): EMAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU')
def test_cuda_device():
    x = torch.rand(4, 1, 32, 32, device='cuda')
    v = EMAugment(seed=0)(x)
    assert v.is_cuda and torch.equal(v, EMAugment(seed=0)(x))


def test_to_unit_range_and_show_views():
    a = np.random.default_rng(0).normal(5, 2, (40, 50))
    img = TEMImage(a, pixel_size=0.3)
    u = to_unit_range(img)
    assert u.shape == (40, 50) and u.min() == 0 and u.max() == 1
    with pytest.raises(ValueError, match='NaN'): to_unit_range(np.full((4, 4), np.nan))
    import matplotlib; matplotlib.use('Agg')
    fig = show_views([img, a[:30, :30]], EMAugment(seed=0), n=2)
    assert len(fig.axes) == 6
