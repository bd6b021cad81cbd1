"""Few-shot segmentation of the ISBI 2012 membranes: U-Net on a frozen self-supervised encoder vs a random-init encoder.

    python benchmarks/segment_fewshot_isbi.py                 # defaults: a few minutes on 2 CPU cores
    python benchmarks/segment_fewshot_isbi.py --arch resnet18 --size 256 --crop 128 --epoch-scale 1 --seeds 0 1 2 3 4

Protocol (paper 001, at CPU scale): per seed, an 8-image training pool is drawn from the 30 images and the
other 22 are the test set; k = 1, 2, 4, 8 images are drawn (nested) from the pool; a fastai DynamicUnet is trained on
the frozen encoder with Dice + CE (--loss), Adam lr 1e-3, the paper's epoch schedule times --epoch-scale; the mean per-image test
Dice/IoU of the membrane class is reported. The SSL encoder is Barlow Twins (temlearn.ssl.pretrain) on the 30 unlabeled
images. Prints the median Dice per (encoder, k) side by side.
"""
import argparse, sys, time
import numpy as np, pandas as pd, torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='test_resnet'); ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--crop', type=int, default=0, help='training crop (0: whole image)')
    ap.add_argument('--epoch-scale', type=float, default=0.25); ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--shots', type=int, nargs='+', default=[1, 2, 4, 8])
    ap.add_argument('--ssl-epochs', type=int, default=30); ap.add_argument('--ssl-size', type=int, default=128)
    ap.add_argument('--ssl-lr', type=float, default=0.02, help='SGD lr of the tiny SSL run (the paper\'s 0.2 is for '
                    'batch 64 x 200 epochs; with a few dozen steps at batch 16 it makes the encoder diverge)')
    ap.add_argument('--bs', type=int, default=4); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--loss', default='dice+ce', help="'dice' (paper 001), 'ce' or 'dice+ce' (default: pure 1 - Dice "
                    "stalls at the all-membrane solution in these short CPU schedules)")
    ap.add_argument('--csv', default=None, help='write the per-run table here')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from temlearn.segment import load_isbi2012, few_shot_segmentation, few_shot_table
    from temlearn.encoder import create_encoder
    data = load_isbi2012(size=a.size)
    if data is None: print('ISBI 2012 data not found (shared/data/isbi2012-membranes): nothing to do'); return 0
    ims, ms = data
    t0 = time.time()
    torch.manual_seed(0)
    encs = {'random init': create_encoder(a.arch, in_chans=1)}
    from temlearn import ssl
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        encs['SSL Barlow (ISBI unlabeled)'] = ssl.pretrain(ims, method='barlow', arch=a.arch, size=a.ssl_size, bs=16,
                                                           epochs=a.ssl_epochs, seed=0, progress=False, out=tmp,
                                                           lr=a.ssl_lr)
    t_ssl = time.time() - t0
    parts = []
    for seed in a.seeds:
        perm = np.random.default_rng(seed).permutation(len(ims))
        parts.append(few_shot_segmentation(ims, ms, encs, shots=a.shots, seeds=(seed,), test_idx=perm[8:],
                                           epoch_scale=a.epoch_scale, crop=a.crop or None, bs=a.bs, lr=1e-3,
                                           loss=a.loss, progress=False))
        print(f'seed {seed} done ({time.time() - t0:.0f} s)', file=sys.stderr, flush=True)
    res = pd.concat(parts, ignore_index=True)
    if a.csv: res.to_csv(a.csv, index=False)
    tab = few_shot_table(res)
    wide = tab.pivot(index='k', columns='encoder', values='median')
    wide['n runs'] = tab.groupby('k')['n'].min()
    print(f'\nISBI 2012 membranes, {a.size} px, arch {a.arch}, loss {a.loss}, epochs = schedule x {a.epoch_scale}, seeds {a.seeds}; '
          f'SSL pretraining {a.ssl_epochs} epochs lr {a.ssl_lr} ({t_ssl:.0f} s), total {time.time() - t0:.0f} s, '
          f'torch threads {a.threads}')
    print('median test Dice (membrane class) per k:')
    print(wide.round(3).to_string())
    print('\nall runs (mean per-image test Dice):')
    print(res.pivot_table(index=['k', 'seed'], columns='encoder', values='dice').round(3).to_string())
    return 0


if __name__ == '__main__':
    sys.exit(main())
