"""Training throughput (images/s) of self-supervised pretraining: temlearn vs the `lightly` package.

Same encoder (timm), same projector, same loss formula, equivalent augmentations, same precision; what differs is
the pipeline: temlearn augments whole batches on the device with per-image random draws and runs both views in
one forward pass through a fastai Learner; the lightly baseline follows lightly's documented PyTorch recipe
(per-image torchvision transforms in DataLoader workers via `MultiViewTransform`, lightly's loss classes, one
forward pass per view).

    python benchmarks/ssl_throughput.py                      # GPU if present (ResNet50, 224 px, batch 64 and 256)
    python benchmarks/ssl_throughput.py --device cpu         # small CPU run (defaults shrink, see --help)
    python benchmarks/ssl_throughput.py --install-lightly    # pip-install lightly if it is missing

An image is counted once per step (two views of it are processed): images/s = batch size × steps / seconds.
"""
from __future__ import annotations
import argparse, importlib, platform, subprocess, sys, time
import numpy as np
import torch
import torch.nn as nn


def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def _lightly(install: bool):
    "Import lightly (pip-installing it first if asked); returns the module or None, with a reason."
    try:
        return importlib.import_module('lightly'), None
    except Exception as e:
        if not install: return None, f"lightly not importable ({type(e).__name__}: {e}); use --install-lightly"
    try:
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'lightly'], check=True, timeout=900)
        importlib.invalidate_caches()
        return importlib.import_module('lightly'), None
    except Exception as e:
        return None, f"could not install/import lightly ({type(e).__name__}: {e})"


# ----------------------------------------------------------------------------------------------- ours
def run_ours(method, arch, size, bs, steps, warm, dev, precision, compile_, crop, channels_last):
    from fastai.callback.core import Callback
    from temlearn.ssl import pretrain, PretrainConfig
    times = []

    class Timer(Callback):
        order = 100
        def before_batch(self):
            _sync(dev); times.append(time.perf_counter())
        def after_fit(self):
            _sync(dev); times.append(time.perf_counter())

    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs * (steps + warm), 1, size, size, generator=g)
    cfg = PretrainConfig(method=method, arch=arch, size=size, bs=bs, epochs=1, device=str(dev), precision=precision,
                         compile=compile_, crop=crop, channels_last=channels_last)
    pretrain(x, cfg, progress=False, cbs=[Timer()])
    t = np.diff(times)[warm:]
    return bs * len(t) / t.sum()


# -------------------------------------------------------------------------------------------- lightly
class _Poisson:
    def __init__(self, p, lo, hi): self.p, self.lo, self.hi = p, lo, hi
    def __call__(self, x):
        if torch.rand(()) >= self.p: return x
        d = float(np.exp(np.random.uniform(np.log(self.lo), np.log(self.hi))))
        return torch.poisson(x.clamp_min(0) * d) / d


class _Gauss:
    def __init__(self, p, lo, hi): self.p, self.lo, self.hi = p, lo, hi
    def __call__(self, x):
        if torch.rand(()) >= self.p: return x
        return x + float(np.random.uniform(self.lo, self.hi)) * torch.randn_like(x)


class _Gamma:
    def __init__(self, p, g): self.p, self.g = p, g
    def __call__(self, x):
        if torch.rand(()) >= self.p: return x
        return x.clamp(1e-6, 1) ** float(np.exp(np.random.uniform(-self.g, self.g)))


class _Rot90:
    def __init__(self, p): self.p = p
    def __call__(self, x):
        if torch.rand(()) >= self.p: return x
        return torch.rot90(x, int(torch.randint(1, 4, ())), dims=(-2, -1))


def em_torchvision_transform(size, crop, aug):
    "Per-image torchvision equivalent of temlearn's EMAugment (same probabilities and ranges)."
    import torchvision.transforms as T
    from temlearn.augment import CROP_MODES
    lo, hi = CROP_MODES[crop]
    blur_k = 2 * int(np.ceil(3 * aug.blur_sigma[1])) + 1
    return T.Compose([
        T.ToTensor(),
        T.RandomResizedCrop(size, scale=(lo ** 2, hi ** 2), ratio=(1.0, 1.0), antialias=True),
        T.RandomHorizontalFlip(aug.hflip), T.RandomVerticalFlip(aug.vflip), _Rot90(aug.rot90),
        T.RandomApply([T.ColorJitter(brightness=aug.brightness, contrast=aug.contrast)], p=aug.jitter_p),
        _Gamma(aug.gamma_p, aug.gamma),
        T.RandomApply([T.GaussianBlur(blur_k, sigma=aug.blur_sigma)], p=aug.blur_p),
        _Gauss(aug.noise_p, *aug.noise_std), _Poisson(aug.poisson_p, *aug.poisson_dose),
        T.Lambda(lambda t: t.clamp(0, 1)),
    ])


def run_lightly(method, arch, size, bs, steps, warm, dev, precision, compile_, crop, channels_last, workers):
    from PIL import Image
    from lightly.transforms.multi_view_transform import MultiViewTransform
    from lightly.loss import BarlowTwinsLoss, NTXentLoss
    from temlearn.augment import EMAugment
    from temlearn.ssl import create_encoder, Projector, normalize_batch
    n = bs * (steps + warm)
    rng = np.random.default_rng(0)
    pil = [Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)) for _ in range(min(n, 512))]

    class DS(torch.utils.data.Dataset):
        def __init__(self, tf): self.tf = tf
        def __len__(self): return n
        def __getitem__(self, i): return self.tf(pil[i % len(pil)])

    tf = MultiViewTransform([em_torchvision_transform(size, crop, EMAugment(crop=crop))] * 2)
    dl = torch.utils.data.DataLoader(DS(tf), batch_size=bs, shuffle=True, drop_last=True, num_workers=workers,
                                     pin_memory=dev.type == 'cuda', persistent_workers=workers > 0)
    torch.manual_seed(0)
    enc = create_encoder(arch, input_size=size)
    meta = enc.temlearn_meta
    model = nn.Sequential(enc, Projector(enc.num_features)).to(dev)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    if compile_: model = torch.compile(model)
    crit = BarlowTwinsLoss(lambda_param=0.005) if method == 'barlow' else NTXentLoss(temperature=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-6)
    use_bf16 = precision == 'bf16'
    times = []
    for x0, x1 in dl:
        _sync(dev); times.append(time.perf_counter())
        x0, x1 = (normalize_batch(v.to(dev, non_blocking=True), meta) for v in (x0, x1))
        if channels_last: x0, x1 = (v.contiguous(memory_format=torch.channels_last) for v in (x0, x1))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            z0, z1 = model(x0), model(x1)
        loss = crit(z0.float(), z1.float())
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    _sync(dev); times.append(time.perf_counter())
    t = np.diff(times)[warm:]
    return bs * len(t) / t.sum()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--arch', default=None, help='timm encoder (default resnet50 on GPU, resnet18 on CPU)')
    ap.add_argument('--size', type=int, default=None, help='image size (default 224 on GPU, 64 on CPU)')
    ap.add_argument('--batch', type=int, nargs='+', default=None, help='batch sizes (default 64 256 on GPU, 16 32 on CPU)')
    ap.add_argument('--steps', type=int, default=None, help='timed steps (default 30 on GPU, 8 on CPU)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed first steps (default 5 on GPU, 2 on CPU)')
    ap.add_argument('--methods', nargs='+', default=['barlow', 'simclr'], choices=['barlow', 'simclr'])
    ap.add_argument('--crop', default='randcrop')
    ap.add_argument('--precision', default='auto', choices=['auto', 'bf16', 'fp32'])
    ap.add_argument('--compile', default='auto', choices=['auto', 'yes', 'no'], help='torch.compile (auto: on GPU)')
    ap.add_argument('--workers', type=int, default=None, help='DataLoader workers for lightly (default 8 GPU / 2 CPU)')
    ap.add_argument('--no-lightly', action='store_true', help='measure ours only')
    ap.add_argument('--install-lightly', action='store_true', help='pip install lightly if it is missing')
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    gpu = dev.type == 'cuda'
    arch = a.arch or ('resnet50' if gpu else 'resnet18')
    size = a.size or (224 if gpu else 64)
    batches = a.batch or ([64, 256] if gpu else [16, 32])
    steps = a.steps or (30 if gpu else 8)
    warm = a.warmup if a.warmup is not None else (5 if gpu else 2)
    prec = a.precision if a.precision != 'auto' else ('bf16' if gpu and torch.cuda.is_bf16_supported() else 'fp32')
    comp = a.compile == 'yes' or (a.compile == 'auto' and gpu)
    cl = gpu
    workers = a.workers if a.workers is not None else (8 if gpu else 2)
    lightly, why = (None, 'skipped (--no-lightly)') if a.no_lightly else _lightly(a.install_lightly)
    import timm, fastai
    dname = torch.cuda.get_device_name(dev) if gpu else (platform.processor() or platform.machine())
    print(f"device: {dev} ({dname}), torch {torch.__version__}, timm {timm.__version__}, fastai {fastai.__version__}, "
          f"lightly {getattr(lightly, '__version__', '-')}; threads {torch.get_num_threads()}")
    print(f"{arch}, {size} px, precision {prec}, channels_last {cl}, compile {comp}, {steps} timed steps after {warm} warm-up")
    if lightly is None: print(f"lightly: {why} — printing temlearn only")
    print(f"\n{'method':8} {'batch':>5} {'temlearn img/s':>15} {'lightly img/s':>14} {'speed-up':>9}")
    for method in a.methods:
        for bs in batches:
            ours = run_ours(method, arch, size, bs, steps, warm, dev, prec, comp, a.crop, cl)
            if lightly is not None:
                try: theirs = run_lightly(method, arch, size, bs, steps, warm, dev, prec, comp, a.crop, cl, workers)
                except Exception as e:
                    print(f"  lightly run failed: {type(e).__name__}: {e}"); theirs = float('nan')
                print(f"{method:8} {bs:5d} {ours:15.1f} {theirs:14.1f} {ours / theirs:8.2f}×", flush=True)
            else:
                print(f"{method:8} {bs:5d} {ours:15.1f} {'-':>14} {'-':>9}", flush=True)
            if gpu: torch.cuda.empty_cache()
    return 0


if __name__ == '__main__':
    sys.exit(main())
