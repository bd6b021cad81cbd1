"""Synthetic nanowires (4 morphologies): SimCLR on native-scale tiles, probe on image-level features (issue 16).

    python benchmarks/pretrain_payoff_nanowires.py --seeds 0 1 2   # 512-px frames, 240 steps per seed (~4 min a seed)
    python benchmarks/pretrain_payoff_nanowires.py --steps 720     # longer pretraining (~8 min on 2 cores)
    python benchmarks/pretrain_payoff_nanowires.py --dense 1       # with the local VICReg term (LocalTerm)
    python benchmarks/pretrain_payoff_nanowires.py --invert 0.5    # views contrast-inverted with p = 0.5
    python benchmarks/pretrain_payoff_nanowires.py --bin 2         # frames binned 2x2 before tiling and probing
    python benchmarks/pretrain_payoff_nanowires.py --seeds 0 1 2 --dihedral --only-default   # + features averaged over 8 orientations

Unlabeled: 4 x 25 nanowire frames (`temlearn.synth.nanowire_image`, seeds 50000+) of --frame px; `tile_tensor` cuts
--tiles random --tile px tiles at native scale; SimCLR with the CPU recipe (`PretrainConfig.small`, views of tile/2 px
cut from the tiles, batch 64, lr 0.05) for --steps steps, once per --seeds seed. Labeled: 4 x 30 other frames (seeds
0+). Features, for the pretrained encoder and the same architecture at random init (same seed): pooled tiles of
tile/2 px (`tile_features`, by mean — the earlier default — or mean+std+max, of the raw or the `clean_frame`d frame)
and `frame_features` of the raw and of the clean frame (the latter is `image_features`, the package default); the
classical baseline is the grey-level histogram. Probe: per draw (20), k = 8 labeled frames per class at random, the
other 88 frames are the test set, standardised logistic regression (C = 0.1). Prints the median test accuracy per
pretraining seed and the median over seeds.
Variants: --dense W (local VICReg term), --invert P (a view's contrast inverted with probability P, for stain
polarity), --bin B (every frame binned B x B first: less noise and more field per tile, thinner wires); --dihedral adds
the row `image_features(..., dihedral=True)` (averaged over the frame's 8 rotations and mirrorings, 8x the time);
--only-default keeps only the `image_features` rows.
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
from temlearn.features import clean_frame, frame_features, histogram_features, image_features, tile_features
from temlearn.ssl import PretrainConfig, pretrain
from temlearn.synth import MORPHOLOGIES, nanowire_image

POOL3 = ('mean', 'std', 'max')


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


def feature_rows(e, imgs, tile, dihedral=False, only_default=False):
    "The image-level features compared here, as {row name: (n, d) array}."
    rows = {'frame features (`image_features` default)': image_features(e, imgs, progress=False)}
    if dihedral: rows['frame features averaged over 8 orientations (`dihedral=True`)'] = image_features(e, imgs, dihedral=True, progress=False)
    if only_default: return rows
    clean = [clean_frame(a) for a in imgs]
    return {f'{tile}-px tiles, mean (earlier `image_features` default)': tile_features(e, imgs, tile=tile, progress=False),
            f'{tile}-px tiles, mean+std+max': tile_features(e, imgs, tile=tile, pool=POOL3, progress=False),
            f'{tile}-px tiles of the clean frame, mean+std+max': tile_features(e, clean, tile=tile, pool=POOL3, progress=False),
            'frame features, raw frame (`clean=False`)': frame_features(e, imgs, clean=False, progress=False), **rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frame', type=int, default=512); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--steps', type=int, default=240); ap.add_argument('--tiles', type=int, default=512)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0], help='pretraining (and random-init) seeds')
    ap.add_argument('--dense', type=float, default=0.0); ap.add_argument('--invert', type=float, default=0.0)
    ap.add_argument('--bin', type=int, default=1)
    ap.add_argument('--dihedral', action='store_true'); ap.add_argument('--only-default', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time(); imgs, y = task(30, 0, a.frame); unl, _ = task(25, 50000, a.frame)
    print(f'synthetic frames: {time.time() - t0:.0f} s', flush=True)
    imgs, unl = binned(imgs, a.bin), binned(unl, a.bin)
    rows = {}
    for seed in a.seeds:
        x = tile_tensor(unl, a.tile, a.tiles, seed=seed)
        cfg = PretrainConfig.small(size=a.tile // 2, source_size=a.tile, bs=64, epochs=math.ceil(a.steps / (a.tiles // 64)),
                                   dense=a.dense, seed=seed)
        aug = None
        if a.invert: aug = InvertingAugment(cfg.size, cfg.crop, seed=cfg.seed); aug.invert_p = a.invert
        t0 = time.time(); enc = pretrain(x, cfg, aug=aug, progress=False)
        print(f'seed {seed}: pretraining {cfg.epochs} epochs x {a.tiles // 64} steps in {time.time() - t0:.0f} s', flush=True)
        torch.manual_seed(seed); rnd = create_encoder('resnet18', pretrained=False, input_size=a.tile // 2)
        for name, e in (('SimCLR on native tiles', enc), ('random init', rnd)):
            t0 = time.time()
            for row, F in feature_rows(e, imgs, a.tile // 2, a.dihedral, a.only_default).items():
                rows.setdefault((name, row), []).append(probe_k(F, y))
            print(f'seed {seed}: {name} features and probes in {time.time() - t0:.0f} s', flush=True)
    print(f"\n| encoder | features | median accuracy, k = 8, per pretraining seed ({', '.join(map(str, a.seeds))}) | median |\n|---|---|---|---|")
    print(f'| — | intensity histogram | {probe_k(histogram_features(imgs), y)} | |')
    for (name, row), v in rows.items():
        print(f"| {name} | {row} | {' / '.join(map(str, v))} | **{np.median(v):.3f}** |", flush=True)


if __name__ == '__main__': main()
