"""Synthetic nanowires: SimCLR on *sets of tiles* - a variant of issue 16 that did not pay off (kept to reproduce it).

    python benchmarks/pretrain_sets_nanowires.py             # 150 steps, ~3.5 min of training on 2 cores

The two views of a frame are two random sets of 8 native 64-px tiles of it (each tile augmented by `EMAugment`,
no crop), encoded by a ResNet18 and pooled by mean+std+max over the set; a projector and NT-Xent over 16 frames per
step make the *pooled* descriptor identify its frame - the image-level feature the probe uses. Unlabeled and
labeled frames, features and probe exactly as `benchmarks/pretrain_payoff_nanowires.py` (k = 8, 20 draws).
"""
import argparse, time

import numpy as np
import torch

from pretrain_payoff_nanowires import probe_k, task
from temlearn.augment import EMAugment
from temlearn.encoder import create_encoder, normalize_batch
from temlearn.features import tile_features
from temlearn.losses import NTXentLoss
from temlearn.preprocess import to_unit_range
from temlearn.ssl import Projector, warmup_cosine


def pool(f): return torch.cat([f.mean(1), f.std(1), f.max(1).values], 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=150); ap.add_argument('--frames', type=int, default=16)
    ap.add_argument('--set', type=int, default=8); ap.add_argument('--tile', type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(2); torch.manual_seed(0)
    B, T, S = a.frames, a.set, a.tile
    imgs, y = task(30, 0, 512); unl, _ = task(25, 50000, 512)
    X = torch.from_numpy(np.stack([to_unit_range(u) for u in unl]).astype(np.float32))[:, None]
    enc = create_encoder('resnet18', pretrained=False, input_size=S)
    proj = Projector(3 * enc.num_features, (512, 128))
    aug, lossf, g = EMAugment(S, 'nocrop', seed=0), NTXentLoss(0.1), torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(list(enc.parameters()) + list(proj.parameters()), lr=0.05, momentum=0.9, weight_decay=1e-6)
    t0 = time.time()
    for step in range(a.steps):
        for pg in opt.param_groups: pg['lr'] = warmup_cosine(step, a.steps, 0.05)
        fr = torch.randperm(len(X), generator=g)[:B]
        ij = torch.randint(0, X.shape[-1] - S + 1, (B, 2, T, 2), generator=g)
        tiles = torch.stack([X[fr[b], :, i:i + S, j:j + S] for b in range(B) for v in range(2) for (i, j) in ij[b, v].tolist()])
        f = enc(normalize_batch(aug(tiles), enc.temlearn_meta)).view(B, 2, T, -1)
        loss = lossf(proj(pool(f[:, 0])), proj(pool(f[:, 1])))
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 25 == 0: print(f'step {step}: loss {loss.item():.3f}, {time.time() - t0:.0f} s', flush=True)
    print(f'training: {a.steps} steps in {time.time() - t0:.0f} s')
    enc.eval()
    for name, p in (('mean+std+max', ('mean', 'std', 'max')), ('mean', ('mean',))):
        print(f'| SimCLR on tile sets, {S}-px tiles, {name} | {probe_k(tile_features(enc, imgs, tile=S, pool=p, progress=False), y)} |')


if __name__ == '__main__': main()
