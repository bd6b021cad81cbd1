"""Does pretraining pay off at laptop scale on real micrographs? (issue 16) Whole frames shrunk vs tiles at native scale.

    python benchmarks/pretrain_payoff.py                       # ISBI 2012, k = 1 2 4 8, 5 seeds, 256-px crops
    python benchmarks/pretrain_payoff.py --shots 8 --seeds 0 1 2 3 4 --epoch-scale 0.5
    python benchmarks/pretrain_payoff.py --shots 8 --crop 128 --epoch-scale 0.25 --sources tiles --dense 1 --finetune 0.1
    python benchmarks/pretrain_payoff.py --shots 8 --epoch-scale 0.25 --sources tiles --finetune 0.1 --finetune-only

Unlabeled data: the 30 ISBI 2012 training images (512 px), labels not used. Two SimCLR runs with the package's CPU
recipe (`PretrainConfig.small`: ResNet18, 64-px views cut at random from 128-px sources, batch 64, lr 0.05), the same
number of optimisation steps (--ssl-steps; batch 64, or all 30 frames when there are fewer), differing only in what the 128-px sources are:
- `whole frames shrunk`: each 512-px frame shrunk to 128 px (`image_tensor`, 4x fewer pixels per membrane width);
- `tiles at native scale`: --tiles random 128-px tiles cut from the frames at their own resolution (`tile_tensor`).
Then paper 001's few-shot segmentation protocol (`temlearn.segment.few_shot_segmentation`: grouped test split, k
labeled images, U-Net on the frozen encoder, Dice + CE, --crop px training crops, scored on the held-out images at
full size) for both, for the same encoder at random init, and smoothed Otsu (polarity and smoothing chosen on the k
training images) - all in one run. --dense adds SimCLR runs with a local VICReg term (`LocalTerm`); --finetune adds
every encoder fine-tuned inside the U-Net at a lower learning rate (--finetune-only: only those). Prints the median (and quartiles) of the test Dice per (encoder, k).
"""
import argparse, math, time

import numpy as np
import pandas as pd
import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--shots', type=int, nargs='+', default=[1, 2, 4, 8])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--crop', type=int, default=256)
    ap.add_argument('--epoch-scale', type=float, default=0.5, help="times paper 001's epochs per k")
    ap.add_argument('--ssl-steps', type=int, default=240, help='SimCLR optimisation steps of each pretraining run')
    ap.add_argument('--tiles', type=int, default=512, help='native-scale tiles for the tile run')
    ap.add_argument('--sources', nargs='+', default=['whole', 'tiles'], choices=['whole', 'tiles'],
                    help='which SimCLR sources to pretrain on (whole frames shrunk, native tiles)')
    ap.add_argument('--dense', type=float, nargs='*', default=[],
                    help='also pretrain on native tiles with a local VICReg term of these weights (PretrainConfig.dense)')
    ap.add_argument('--finetune', type=float, default=None,
                    help='also run every encoder fine-tuned in the U-Net at this fraction of the decoder lr')
    ap.add_argument('--finetune-only', action='store_true',
                    help='with --finetune: run only the fine-tuned encoders (random init fine-tuned is then the paired baseline)')
    ap.add_argument('--csv', default=None, help='write the per-run table here')
    a = ap.parse_args(argv)
    if a.finetune_only and a.finetune is None: ap.error('--finetune-only needs --finetune')
    torch.set_num_threads(2)
    from temlearn.core import shared_data
    from temlearn.data import image_tensor, load_labeled, tile_tensor
    from temlearn.features import baseline_encoders
    from temlearn.segment import few_shot_segmentation
    from temlearn.ssl import PretrainConfig, pretrain
    from temlearn.workflow import _otsu_rows
    root = shared_data('isbi2012-membranes')
    if root is None: print('ISBI 2012 data not found (shared/data/isbi2012-membranes): nothing to do'); return 0
    ims, masks, _, _ = load_labeled(root)
    encs, t00 = {}, time.time()
    tiles = tile_tensor(ims, 128, a.tiles, seed=0)
    runs = ([('whole frames shrunk', image_tensor(ims, 128), 0.0)] if 'whole' in a.sources else []) + \
           ([('tiles at native scale', tiles, 0.0)] if 'tiles' in a.sources else []) + \
           [(f'tiles at native scale + local term {w:g}', tiles, w) for w in a.dense]
    for name, x, w in runs:
        bs = min(64, len(x))
        cfg = PretrainConfig.small(bs=bs, epochs=max(1, math.ceil(a.ssl_steps / (len(x) // bs))), dense=w)
        t0 = time.time(); encs[f'SimCLR, {name}'] = pretrain(x, cfg, progress=False)
        print(f'{name}: {len(x)} sources, {cfg.epochs} epochs, {time.time() - t0:.0f} s', flush=True)
    encs['random init'] = next(iter(baseline_encoders(next(iter(encs.values())), imagenet=False).values()))
    t0 = time.time()
    res = None if a.finetune_only else few_shot_segmentation(ims, masks, encs, shots=a.shots, seeds=a.seeds, crop=a.crop,
                                                             loss='dice+ce', epoch_scale=a.epoch_scale, progress=True)
    if a.finetune is not None:
        ft = few_shot_segmentation(ims, masks, encs, shots=a.shots, seeds=a.seeds, crop=a.crop, loss='dice+ce',
                                   epoch_scale=a.epoch_scale, progress=True, finetune=a.finetune)
        ft = ft.assign(encoder=ft.encoder + f', fine-tuned at {a.finetune:g} x lr')
        res = ft if res is None else pd.concat([res, ft], ignore_index=True)
    base = next(e for e in res.encoder.unique() if e.startswith('random init'))
    res = pd.concat([res, _otsu_rows(res, ims, masks)], ignore_index=True)
    print(f'few-shot segmentation: {len(res)} rows in {time.time() - t0:.0f} s; whole run {time.time() - t00:.0f} s')
    if a.csv: res.drop(columns=['train_idx', 'test_idx']).to_csv(a.csv, index=False)
    g = res.groupby(['encoder', 'k'], sort=False).dice
    t = pd.DataFrame({'median': g.median(), 'q25': g.quantile(0.25), 'q75': g.quantile(0.75), 'n': g.size()}).round(3).reset_index()
    print('| encoder | k | median Dice | q25 | q75 | seeds |\n|---|---|---|---|---|---|')
    for r in t.itertuples(index=False): print('| ' + ' | '.join(str(v) for v in r) + ' |')
    wide = res.pivot_table(index=['seed', 'k'], columns='encoder', values='dice')
    for e in wide.columns:
        if e != base:
            d = (wide[e] - wide[base]).groupby('k').median().round(3).to_dict()
            print(f'median paired difference {e} - {base} per k: {d}')


if __name__ == '__main__': main()
