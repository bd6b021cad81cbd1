"""Suggested vs random anchors (issue 15): does `temlearn.label.suggest_labels` pick better images to label?

For each seed, the probe protocol's split (`temlearn.probe.few_shot_splits`) gives a training side (`pool_idx`) and a
test side. Three ways to choose n = k x classes images to label from the training side, all with the same features:
- `random (per class)`: k random images of each class, the probe protocol's own draw (it knows the labels: a person
  choosing images to label does not);
- `random (blind)`: n random images of the training side, as a person without a tool would pick;
- `kmedoids` / `kcenter`: `suggest_labels(features[pool], n, method, seed)` (never sees a label);
- `all labels (ceiling)`: the whole training side labeled, to show how much class information the features hold.
The chosen images get their true labels and the same linear probe (`temlearn.label.probe_on`) is trained on them and
scored on the test side. Printed: median and 10th percentile of test accuracy over the seeds, per task, features, k.

Tasks: synthetic nanowires (4 classes, `temlearn.synth.nanowire_image`), and an ISBI-2012-derived task (256-px
tiles of the 30 training images, label = membrane fraction above/below the median: 2 classes) when
`../shared/data` is present. Features: a frozen random-init ResNet18 (tile features at native scale,
`temlearn.features.image_features`, and the whole image at 256 px), the classical intensity histogram
(`histogram_features`), and with --pretrain a SimCLR-pretrained ResNet18 (whole image at 256 px).

Usage: python benchmarks/label_suggest.py [--n 30 --size 256 --seeds 20]
"""
import argparse, time

import numpy as np
import pandas as pd
import torch

from temlearn.core import shared_data
from temlearn.encoder import create_encoder
from temlearn.features import extract_features, histogram_features, image_features
from temlearn.label import probe_on, probe_proba, suggest_labels
from temlearn.probe import few_shot_splits
from temlearn.synth import MORPHOLOGIES, nanowire_image


def nanowire_task(n, size):
    imgs, labels = [], []
    for ci, m in enumerate(MORPHOLOGIES):
        for i in range(n):
            img, _ = nanowire_image(m, size=size, seed=1000 * ci + i)
            imgs.append(np.asarray(img, np.float32)); labels.append(m)
    return imgs, np.array(labels)


def isbi_task(tile=256):
    root = shared_data('isbi2012-membranes')
    if root is None: return None
    from temlearn.data import load_labeled
    images, masks, _, _ = load_labeled(root)
    imgs, fracs = [], []
    for img, mask in zip(images, masks):
        a, m = np.asarray(img, np.float32), np.asarray(mask)
        for y in range(0, a.shape[0] - tile + 1, tile):
            for x in range(0, a.shape[1] - tile + 1, tile):
                imgs.append(a[y:y + tile, x:x + tile]); fracs.append((m[y:y + tile, x:x + tile] == 0).mean())
    fracs = np.array(fracs)
    return imgs, np.where(fracs > np.median(fracs), 'dense', 'sparse')


def choose(method, F, pool, y, k, C, seed):
    n = k * C
    if method == 'all labels (ceiling)': return pool
    if method == 'random (per class)':
        r = np.random.default_rng(seed)
        return np.concatenate([r.permutation(pool[y[pool] == c])[:k] for c in range(C)])
    if method == 'random (blind)': return pool[suggest_labels(F[pool], n, 'random', seed=seed)]
    return pool[suggest_labels(F[pool], n, method, seed=seed)]


def evaluate(F, y, C, shots, seeds):
    rows = []
    splits = few_shot_splits(y, shots=(1,), seeds=seeds, val_frac=0)
    for sp in splits.itertuples():
        pool, test = np.asarray(sp.pool_idx), np.asarray(sp.test_idx)
        for k in shots:
            for method in ('random (per class)', 'random (blind)', 'kmedoids', 'kcenter') + (('all labels (ceiling)',) if k == shots[-1] else ()):
                pick = choose(method, F, pool, y, k, C, sp.seed)
                W, b, mu, sd = probe_on(F, pick, y[pick], C, pool_idx=pool, seed=sp.seed)
                acc = (probe_proba(F[test], W, b, mu, sd).argmax(1) == y[test]).mean()
                rows.append(dict(seed=sp.seed, k=k, method=method, acc=acc, classes_hit=len(set(y[pick]))))
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=30, help='nanowire images per class')
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--seeds', type=int, default=20)
    ap.add_argument('--shots', default='1,2,4')
    ap.add_argument('--csv', default=None, help='write the per-seed table here')
    ap.add_argument('--pretrain', action='store_true', help='also a SimCLR encoder pretrained with PretrainConfig.small() on '
                    '768 synthetic generic images (BENCHMARKS §3 recipe, ~4 min on 2 cores), features at 256 px')
    a = ap.parse_args()
    torch.manual_seed(0); torch.set_num_threads(2)
    shots, seeds = [int(s) for s in a.shots.split(',')], range(a.seeds)
    enc = create_encoder('resnet18', pretrained=False, input_size=128)
    torch.manual_seed(0); enc256 = create_encoder('resnet18', pretrained=False, input_size=256)
    ssl_enc = None
    if a.pretrain:
        from temlearn.ssl import PretrainConfig, pretrain
        from temlearn.synth import generic_em_image
        t0 = time.time()
        ssl_enc = pretrain([generic_em_image(128, seed=s) for s in range(768)], PretrainConfig.small(), progress=False)
        print(f'pretrained in {time.time() - t0:.0f} s', flush=True)
    tasks = {'nanowires (4 classes)': nanowire_task(a.n, a.size)}
    isbi = isbi_task()
    if isbi is not None: tasks['ISBI tiles dense/sparse (2 classes)'] = isbi
    out = []
    for task, (imgs, labels) in tasks.items():
        classes = sorted(set(labels)); y = np.array([classes.index(l) for l in labels])
        t0 = time.time()
        feats = {'random-init ResNet18 tiles': image_features(enc, imgs, progress=False),
                 'random-init ResNet18 at 256 px': extract_features(enc256, imgs, size=256, progress=False),
                 'intensity histogram': histogram_features(imgs)}
        if ssl_enc is not None: feats['SimCLR-pretrained ResNet18 at 256 px'] = extract_features(ssl_enc, imgs, size=256, progress=False)
        print(f'{task}: {len(imgs)} images, features in {time.time() - t0:.0f} s', flush=True)
        for fname, F in feats.items():
            df = evaluate(F, y, len(classes), shots, seeds).assign(task=task, features=fname)
            out.append(df)
    df = pd.concat(out)
    summ = (df.groupby(['task', 'features', 'k', 'method'], sort=False)
              .agg(median=('acc', 'median'), p10=('acc', lambda a: np.percentile(a, 10)),
                   classes_hit=('classes_hit', 'mean'), seeds=('acc', 'size')).round(3).reset_index())
    print('| ' + ' | '.join(summ.columns) + ' |\n|' + '---|' * len(summ.columns))
    for r in summ.itertuples(index=False): print('| ' + ' | '.join(str(v) for v in r) + ' |')
    # paired by seed (same split, same test side): suggestion minus the probe protocol's random anchors
    wide = df.pivot_table(index=['task', 'features', 'k', 'seed'], columns='method', values='acc')
    print('\n| task | features | k | method | median paired difference vs random (per class) | seeds better / equal / worse |\n|---|---|---|---|---|---|')
    for (task, fname, k), w in wide.groupby(level=[0, 1, 2], sort=False):
        for m in ('kmedoids', 'kcenter'):
            d = (w[m] - w['random (per class)']).to_numpy()
            print(f'| {task} | {fname} | {k} | {m} | {np.median(d):+.3f} | {(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()} |')
    if a.csv: df.to_csv(a.csv, index=False)


if __name__ == '__main__': main()
