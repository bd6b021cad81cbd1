"""Synthetic nanowires (4 morphologies): SimCLR on native-scale tiles, probe on pooled tile features (issue 16).

    python benchmarks/pretrain_payoff_nanowires.py                 # 512-px frames, 128-px tiles, 240 steps (~4 min)
    python benchmarks/pretrain_payoff_nanowires.py --steps 720     # longer pretraining (~8 min on 2 cores)
    python benchmarks/pretrain_payoff_nanowires.py --dense 1       # with the local VICReg term (LocalTerm)
    python benchmarks/pretrain_payoff_nanowires.py --invert 0.5    # views contrast-inverted with p = 0.5
    python benchmarks/pretrain_payoff_nanowires.py --bin 2         # frames binned 2x2 before tiling and probing

Unlabeled: 4 x 25 nanowire frames (`temlearn.synth.nanowire_image`, seeds 50000+) of --frame px; `tile_tensor` cuts
--tiles random --tile px tiles at native scale; SimCLR with the CPU recipe (`PretrainConfig.small`, views of tile/2 px
cut from the tiles, batch 64, lr 0.05) for --steps steps. Labeled: 4 x 30 other frames (seeds 0+). Features: the
pretrained encoder and the same encoder at random init, as pooled tile features (`tile_features`, tiles of tile/2 and
tile px, pooled by mean or by mean+std+max) and as the whole frame shrunk to 256 px (`extract_features`); the classical
baseline is the grey-level histogram. Probe: per seed (20), k = 8 labeled frames per class drawn at random, the other
88 frames are the test set, standardised logistic regression (C = 0.1). Prints the median test accuracy.
Variants: --dense W (local VICReg term), --invert P (a view's contrast inverted with probability P, for stain
polarity), --bin B (every frame binned B x B first: less noise and more field per tile, thinner wires).
"""
import argparse, math, time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from temlearn.augment import EMAugment
from temlearn.data import tile_tensor
from temlearn.encoder import create_encoder
from temlearn.features import extract_features, histogram_features, tile_features
from temlearn.ssl import PretrainConfig, pretrain
from temlearn.synth import MORPHOLOGIES, nanowire_image


def task(n, seed0, frame):
    imgs, y = [], []
    for ci, m in enumerate(MORPHOLOGIES):
        for i in range(n):
            img, _ = nanowire_image(m, size=frame, seed=seed0 + 1000 * ci + i)
            imgs.append(np.asarray(img, np.float32)); y.append(ci)
    return imgs, np.array(y)


class InvertingAugment(EMAugment):
    "EMAugment, then each view's contrast inverted (1 - x) with probability `invert_p`."
    invert_p = 0.5
    def __call__(self, x, generator=None, return_params=False):
        out = super().__call__(x, generator, return_params)
        v = out[0] if return_params else out
        flip = torch.rand(len(v), generator=self.generator(v.device), device=v.device) < self.invert_p
        v = torch.where(flip.view(-1, 1, 1, 1), 1 - v, v)
        return (v, out[1]) if return_params else v


def binned(imgs, b):
    "Each frame averaged over b x b blocks."
    if b == 1: return imgs
    return [im[:im.shape[0] // b * b, :im.shape[1] // b * b].reshape(im.shape[0] // b, b, im.shape[1] // b, b).mean((1, 3)) for im in imgs]


def probe_k(F, y, k=8, seeds=20):
    "Median test accuracy of a standardised logistic regression on k random frames per class, over `seeds` draws."
    accs = []
    for s in range(seeds):
        r = np.random.default_rng(s)
        tr = np.concatenate([r.permutation(np.where(y == c)[0])[:k] for c in range(len(set(y)))])
        te = np.setdiff1d(np.arange(len(y)), tr)
        m = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(F[tr], y[tr])
        accs.append((m.predict(F[te]) == y[te]).mean())
    return round(float(np.median(accs)), 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frame', type=int, default=512); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--steps', type=int, default=240); ap.add_argument('--tiles', type=int, default=512)
    ap.add_argument('--dense', type=float, default=0.0); ap.add_argument('--invert', type=float, default=0.0)
    ap.add_argument('--bin', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time(); imgs, y = task(30, 0, a.frame); unl, _ = task(25, 50000, a.frame)
    print(f'synthetic frames: {time.time() - t0:.0f} s', flush=True)
    imgs, unl = binned(imgs, a.bin), binned(unl, a.bin)
    x = tile_tensor(unl, a.tile, a.tiles, seed=0)
    cfg = PretrainConfig.small(size=a.tile // 2, source_size=a.tile, bs=64, epochs=math.ceil(a.steps / (a.tiles // 64)), dense=a.dense)
    aug = None
    if a.invert: aug = InvertingAugment(cfg.size, cfg.crop, seed=cfg.seed); aug.invert_p = a.invert
    t0 = time.time(); enc = pretrain(x, cfg, aug=aug, progress=False)
    print(f'pretraining: {cfg.epochs} epochs x {a.tiles // 64} steps in {time.time() - t0:.0f} s', flush=True)
    torch.manual_seed(0); rnd = create_encoder('resnet18', pretrained=False, input_size=a.tile // 2)
    print('| features | median accuracy, k = 8 |\n|---|---|')
    print(f'| intensity histogram | {probe_k(histogram_features(imgs), y)} |', flush=True)
    for name, e in (('SimCLR on native tiles', enc), ('random init', rnd)):
        for t in (a.tile // 2, a.tile):
            for pool in (('mean',), ('mean', 'std', 'max')):
                F = tile_features(e, imgs, tile=t, pool=pool, progress=False)
                print(f'| {name}, {t}-px tiles, {"+".join(pool)} | {probe_k(F, y)} |', flush=True)
        print(f'| {name}, whole frame at 256 px | {probe_k(extract_features(e, imgs, size=256, progress=False), y)} |', flush=True)


if __name__ == '__main__': main()
