"""Segmentation defaults (issue 17): `temlearn-segment train` + predict vs a smoothed-Otsu threshold on the same test images.

For each data set, 8 labeled images are written as a folder (`<name>.tif` + `<name>_label.png`, one group per image)
and the CLI is run on it exactly as a user would (`temlearn-segment train DIR --out M [variant flags]`; the CLI
holds out 20 % of the images for validation/keep-best). The saved model then segments 10 *other* images
(`temlearn.predict.sliding_window_predict`, the predict command's path) and the Dice of the foreground class is
scored against the exact masks. Baseline in the same run: a Gaussian-smoothed Otsu threshold whose polarity and
smoothing (sigma in 1, 2, 4, 8 px) are chosen on the 8 labeled images (`temlearn.segment.smoothed_otsu`).

Data sets: synthetic HRTEM frames (Au particles, `temlearn.hrtem.hrtem_image`, 256 px at 0.05 nm/px, x-rays removed
and flat-fielded by `temlearn.preprocess.preprocess`) at two doses; ISBI 2012 membranes (512 px, real EM) when
`../shared/data` is present (membrane = foreground).

Variants: `default` = the CLI's defaults; `paper002` = cross-entropy, Adam 1e-4, constant rate, 20 epochs, 256-px
crops (the defaults before issue 17); more with --variants.

Usage: python benchmarks/segment_defaults.py [--seeds 0,1,2 --variants default,paper002 --sets hrtem20,hrtem80,isbi]
"""
import argparse, io, os, tempfile, time, warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from temlearn.core import TEMImage, as_array, run_cli
from temlearn.io import write_tiff
from temlearn.losses import dice
from temlearn.masks import write_mask
from temlearn.models import load_segmenter
from temlearn.predict import sliding_window_predict
from temlearn.segment import load_isbi2012, otsu_foreground, segment_train, smoothed_otsu

VARIANTS = {
    'default': [],                                                              # the CLI's defaults
    'paper002': ['--loss', 'ce', '--lr', '1e-4', '--epochs', '20', '--schedule', 'constant', '--crop', '256'],
    'candidate': ['--loss', 'dice+ce', '--lr', '3e-3', '--steps', '300', '--schedule', 'one_cycle', '--crop', '128'],
    'ce one-cycle': ['--loss', 'ce', '--lr', '3e-3', '--steps', '300', '--schedule', 'one_cycle', '--crop', '128'],
}


def hrtem_set(dose, n=18):
    from temlearn.hrtem import hrtem_image
    from temlearn.preprocess import preprocess
    ims, ms = [], []
    for i in range(n):
        im, m, _ = hrtem_image(diameter_nm=3.0, pixel_size_nm=0.05, dose=dose, size=256, seed=[dose, i])
        ims.append(preprocess(im, method=None, size=None)); ms.append(m.astype(np.uint8))
    return ims, ms


def isbi_set():
    r = load_isbi2012()
    if r is None: return None
    ims, ms = r
    return [TEMImage(a) for a in ims[:8] + ims[20:30]], ms[:8] + ms[20:30]


def otsu_dice(train_ims, train_ms, test_ims, test_ms, sigmas=(1, 2, 4, 8)):
    tr = [as_array(a) for a in train_ims]
    def score(ims, ms, sg, fg): return np.mean([dice(smoothed_otsu(as_array(a), sg, fg), (m > 0).astype(np.uint8)) for a, m in zip(ims, ms)])
    sg, fg = max(((sg, otsu_foreground(tr, train_ms, sg)) for sg in sigmas), key=lambda c: score(tr, train_ms, *c))
    return [dice(smoothed_otsu(as_array(a), sg, fg), (m > 0).astype(np.uint8)) for a, m in zip(test_ims, test_ms)], sg, fg


def run(name, ims, ms, variant, seed, tmp):
    d = Path(tmp) / f'{name}-data'
    if not d.exists():
        for i in range(8):
            write_tiff(ims[i] if isinstance(ims[i], TEMImage) else TEMImage(ims[i]), d / f'im{i:02d}.tif')
            write_mask(ms[i], d / f'im{i:02d}_label.png')
    out = Path(tmp) / f'{name}-{variant}-{seed}'
    t0 = time.perf_counter()
    with redirect_stdout(io.StringIO()) as o, redirect_stderr(io.StringIO()) as e, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        rc = run_cli(segment_train, [str(d), '--out', str(out), '--seed', str(seed), '--quiet'] + VARIANTS[variant])
    dt = time.perf_counter() - t0
    if rc: raise RuntimeError(f'{name} {variant} seed {seed}: exit {rc}: {e.getvalue()[-500:]}')
    net = load_segmenter(out)
    d_test, shares = [], []
    for a, m in zip(ims[8:], ms[8:]):
        p = as_array(sliding_window_predict(net, a, tile=min(256, min(as_array(a).shape)) // 16 * 16, overlap=32))
        d_test.append(dice((p == 1).astype(np.uint8), (m > 0).astype(np.uint8))); shares.append((p == 1).mean())
    import json
    v = json.loads((out / 'model.json').read_text()).get('info', {}).get('verdict') or {}
    return dict(dice=float(np.median(d_test)), fg_share=float(np.mean(shares)), true_share=float(np.mean([(m > 0).mean() for m in ms[8:]])),
                warned=bool(v.get('warning')), seconds=dt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default='0,1,2')
    ap.add_argument('--variants', default='default,paper002')
    ap.add_argument('--sets', default='hrtem20,hrtem80,isbi')
    a = ap.parse_args()
    torch.set_num_threads(2)
    sets = {}
    for s in a.sets.split(','):
        if s.startswith('hrtem'): sets[f'HRTEM dose {s[5:]}'] = hrtem_set(int(s[5:]))
        elif s == 'isbi' and (r := isbi_set()) is not None: sets['ISBI 2012'] = r
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ims, ms) in sets.items():
            od, sg, fg = otsu_dice(ims[:8], ms[:8], ims[8:], ms[8:])
            key = name.replace(' ', '')
            for seed in [int(x) for x in a.seeds.split(',')]:
                rows.append(dict(data=name, variant=f'smoothed Otsu (sigma {sg}, {fg})', seed=seed, dice=float(np.median(od))))
                for v in a.variants.split(','):
                    r = run(key, ims, ms, v, seed, tmp)
                    rows.append(dict(data=name, variant=v, seed=seed, **r))
                    print(f"{name:12s} {v:20s} seed {seed}: median test Dice {r['dice']:.3f} (fg share {r['fg_share']:.2f} vs "
                          f"{r['true_share']:.2f}), {r['seconds']:.0f} s{' [warned]' if r['warned'] else ''}", flush=True)
    df = pd.DataFrame(rows)
    print('\n| data | variant | Dice per seed (median of 10 test images) | median over seeds | train s (mean) |\n|---|---|---|---|---|')
    for (dname, v), g in df.groupby(['data', 'variant'], sort=False):
        secs = f"{g.seconds.mean():.0f}" if 'seconds' in g and g.seconds.notna().any() else '—'
        print(f"| {dname} | {v} | {', '.join(f'{x:.3f}' for x in g.dice)} | {g.dice.median():.3f} | {secs} |")


if __name__ == '__main__': main()
