"""Paper 002's generalization study on synthetic HRTEM data at CPU scale: prints the cross-dataset matrices.

    python benchmarks/generalize_matrix.py dose                  # one study, default CPU-scale settings
    python benchmarks/generalize_matrix.py magnification --seeds 0 1 2
    python benchmarks/generalize_matrix.py all --csv results.csv

Studies (each a set of synthetic data sets written with temlearn.hrtem.write_hrtem_dataset, 5 nm Au unless said):
  dose           80 / 423 / 884 e/Å² at 0.02 nm/px
  magnification  0.02 / 0.042 nm/px at 423 e/Å², frames of equal field of view (--frame px at 0.042 nm/px),
                 native and resampled to one pixel size (--resample-to)
  size           2.2 / 5 / 10 nm Au at 0.042 nm/px, 423 e/Å²
  noise          the dose matrix at --noise-epochs, and the 884 e/Å² set trained with Gaussian noise (ρ fixed and
                 ρ ~ U(0, ρmax), --rhos) at the same schedule, tested on all doses
  anscombe       the dose matrix with the Anscombe transform of the counts before rescaling
  flatfield      three sessions (5 nm Au, 0.02 nm/px, 423 e/Å²) with 5 %, 40 % and 80 % illumination
                 non-uniformity, flat field off and on
  rescale        one data set, minmax / standardize / histogram: training vs test Dice

Protocol: per seed, new frames (seed-dependent) and new folds; every network is a fresh residual U-Net trained with
paper 002's recipe (CE, Adam, dihedral + 50 % rotation, best validation epoch) at CPU scale: --patch px patches,
--epochs epochs, lr --lr, at most --max-patches patches per frame. Prints mean ± std over folds per seed and the
mean over seeds; --csv writes every row.
"""
import argparse, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch

STUDIES = ('dose', 'magnification', 'size', 'noise', 'anscombe', 'flatfield', 'rescale')


def write_sets(root, seed, a, frame=None, **grid):
    "Synthetic data sets (one per combination of `grid`), frames as files in the real layout; the frames table."
    from temlearn.hrtem import write_hrtem_dataset
    from temlearn.generalize import load_frames
    kw = dict(materials=('Au',), diameters=(a.diameter,), pixel_sizes=(0.02,), doses=(423,))
    extra = grid.pop('extra', {})
    kw.update(grid)
    n = a.n * int(np.prod([len(v) for v in kw.values()]))
    write_hrtem_dataset(root, n, seed=seed, size=frame or a.frame, frames_per_session=a.n, progress=False, **kw, **extra)
    return load_frames(Path(root) / 'Dataset_metadata.csv')


def session_sets(root, seed, a, levels=(0.05, 0.4, 0.8)):
    "Three sessions of nominally identical frames that differ in their illumination non-uniformity."
    from temlearn.generalize import metadata_datasets
    parts = []
    for j, ill in enumerate(levels):
        f = write_sets(Path(root) / f's{j}', seed * 10 + j, a, extra={'illumination': ill})
        parts.append(f.assign(illumination=ill))          # one session per illumination level
    return metadata_datasets(pd.concat(parts, ignore_index=True), by='illumination')


def run_study(study, seed, a, settings, tmp):
    from temlearn.generalize import (metadata_datasets, cross_dataset_matrix, compare_settings, noise_study, rescale_study)
    root = Path(tmp) / f'{study}_{seed}'
    s = settings.with_(seed=seed)
    if study in ('dose', 'anscombe', 'noise'):
        sets = metadata_datasets(write_sets(root, seed, a, doses=(80, 423, 884), pixel_sizes=(a.dose_pixel_size,)), by='dose')
        if study == 'dose': return cross_dataset_matrix(sets, s, progress=False).assign(variant='standardize')
        if study == 'anscombe': return compare_settings(sets, s, {'standardize': {}, 'anscombe + standardize': {'anscombe': True}}, progress=False)
        # noise: the dose matrix (every set trained without noise) and the high-dose set trained with noise, all with
        # the same (longer) schedule: noise augmentation needs more epochs than a clean set to pay off
        s = s.with_(epochs=a.noise_epochs)
        parts = [cross_dataset_matrix(sets, s, progress=False).assign(variant='no noise')]
        for uniform in (False, True):
            parts.append(noise_study(sets, 'dose=884', s, rhos=[r for r in a.rhos if r], uniform=uniform, progress=False))
        return pd.concat(parts, ignore_index=True)
    if study == 'magnification':
        # equal fields of view (a.frame px at 0.042 nm/px): the frames of both sets hold the same number of particles,
        # so resampling to one pixel size leaves both with the same amount of data
        fine = int(round(a.frame * 0.042 / 0.02 / 16)) * 16
        frames = pd.concat([write_sets(root / 'fine', seed, a, frame=fine, pixel_sizes=(0.02,)),
                            write_sets(root / 'coarse', seed + 500, a, pixel_sizes=(0.042,))], ignore_index=True)
        variants = {'native': {}, **{f'resampled to {r:g} nm/px': {'pixel_size': r} for r in a.resample_to}}
        return compare_settings(metadata_datasets(frames, by='pixel_size_nm'), s, variants, progress=False)
    if study == 'size':
        sets = metadata_datasets(write_sets(root, seed, a, diameters=(2.2, 5.0, 10.0), pixel_sizes=(0.042,)), by='size_nm')
        return cross_dataset_matrix(sets, s, progress=False).assign(variant='standardize')
    if study == 'flatfield':
        return compare_settings(session_sets(root, seed, a), s, {'flat field off': {'flat': False}, 'flat field on': {}},
                                progress=False)
    if study == 'rescale':
        frames = write_sets(root, seed, a)
        return rescale_study(frames, s, progress=False)
    raise ValueError(study)


def report(study, df):
    from temlearn.generalize import matrix_table, generalization_gap, hard_vs_easy
    if study == 'rescale':
        for seed, d in df.groupby('seed'): print(f'seed {seed}:\n{generalization_gap(d).round(3).to_string()}\n')
        print('mean over seeds:\n' + generalization_gap(df).round(3).to_string()); return
    if study == 'noise':
        df = df.assign(row=[f'{t} / {v}' for t, v in zip(df.train, df.variant)])
        for seed, d in df.groupby('seed'):
            print(f'--- noise / seed {seed}: rows = trained on / augmentation, mean ± std over folds')
            print(matrix_table(d.assign(train=d.row), text=True).to_string())
        print('=== noise: mean over seeds of the fold means')
        m = df.groupby(['seed', 'row', 'test'], sort=False).dice.mean().groupby(['row', 'test'], sort=False).mean()
        print(m.unstack('test').round(3).to_string(), '\n'); return
    for v, dv in df.groupby('variant', sort=False):
        for seed, d in dv.groupby('seed'):
            print(f'--- {study} / {v} / seed {seed}: mean ± std over folds (rows: trained on, columns: tested on)')
            print(matrix_table(d, text=True).to_string())
            if study in ('dose', 'size', 'anscombe', 'magnification') and d.train.nunique() > 1:
                print('   ' + ', '.join(f'{k} {x:.3f}' for k, x in hard_vs_easy(d, list(matrix_table(d)[0].index)).items()))
        print(f'=== {study} / {v}: mean over seeds of the fold means')
        means = dv.groupby(['seed', 'train', 'test'], sort=False).dice.mean().groupby(['train', 'test'], sort=False).agg(['mean', 'std'])
        print(means['mean'].unstack('test').round(3).to_string(), '\n')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('study', choices=STUDIES + ('all',))
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--n', type=int, default=6, help='frames per data set')
    ap.add_argument('--frame', type=int, default=512, help='frame side (px)')
    ap.add_argument('--patch', type=int, default=64, help='patch side (px)')
    ap.add_argument('--min-foreground', type=int, default=40, help='the paper\'s 400 px of a 512² patch is 0.15 %%; '
                    'at 64 px, 400 would keep only particle-heavy patches')
    ap.add_argument('--diameter', type=float, default=5.0, help='particle diameter (nm) of the dose/magnification/noise sets')
    ap.add_argument('--dose-pixel-size', type=float, default=0.02, help='pixel size (nm) of the dose/noise/anscombe sets')
    ap.add_argument('--final-relu', action='store_true', help="keep the published network's last ReLU (at CPU scale it "
                    "leaves some networks predicting background for every epoch)")
    ap.add_argument('--max-patches', type=int, default=16, help='patches per frame at most')
    ap.add_argument('--folds', type=int, default=3); ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--lr', type=float, default=3e-3); ap.add_argument('--bs', type=int, default=4)
    ap.add_argument('--resample-to', type=float, nargs='+', default=[0.042, 0.03],
                    help='pixel size(s) (nm) of the resampled magnification runs')
    ap.add_argument('--rhos', type=float, nargs='+', default=[2.0], help='noise levels: fixed ρ and ρ ~ U(0, ρ) each')
    ap.add_argument('--noise-epochs', type=int, default=30, help='epochs of every network of the noise study')
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--csv', default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.simplefilter('ignore')
    from temlearn.generalize import GeneralizeSettings
    s = GeneralizeSettings(size=a.patch, min_foreground=a.min_foreground, max_patches=a.max_patches, folds=a.folds,
                           epochs=a.epochs, lr=a.lr, bs=a.bs, final_relu=a.final_relu).check()
    studies = STUDIES if a.study == 'all' else (a.study,)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for study in studies:
            t0, parts = time.time(), []
            for seed in a.seeds:
                parts.append(run_study(study, seed, a, s, tmp).assign(seed=seed, study=study))
                print(f'{study} seed {seed} done ({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
            df = pd.concat(parts, ignore_index=True)
            print(f'\n##### {study}: {a.n} frames of {a.frame} px per set, {a.patch} px patches (≤ {a.max_patches}/frame, '
                  f'> {a.min_foreground} particle px), {a.folds} folds, {a.noise_epochs if study == "noise" else a.epochs} epochs, lr {a.lr}, bs {a.bs}, seeds {a.seeds}, '
                  f'{time.time() - t0:.0f} s, torch threads {a.threads}')
            report(study, df)
            out.append(df)
    if a.csv: pd.concat(out, ignore_index=True).to_csv(a.csv, index=False)
    return 0


if __name__ == '__main__':
    sys.exit(main())
