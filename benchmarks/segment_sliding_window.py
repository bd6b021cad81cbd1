"""Large-frame inference: sliding-window (overlap + Gaussian blending) vs one whole-image forward pass.

    python benchmarks/segment_sliding_window.py            # 2048² and 4096² frames, residual U-Net of paper 002
    python benchmarks/segment_sliding_window.py --sizes 2048 --threads 2

Each configuration runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own. The network is
the published HRTEM-generalization model when shared data is present (else a random-init ResidualUNet of the same
shape); the frame is a synthetic HRTEM-like image painted on the real 4096² hand-drawn label (or random disks).
Reported: wall time, peak RSS, agreement of the sliding-window mask with the whole-image mask, Dice against the truth.
"""
import argparse, json, subprocess, sys, time, resource
import numpy as np


def _frame(size):
    from temlearn.core import shared_data
    from scipy import ndimage as ndi
    lp = shared_data('hrtem-generalization', '20221109_Au_UTC_330kx_2640e_0p1596s_03_label.png')
    if lp is not None:
        from PIL import Image
        m = np.asarray(Image.open(lp)) > 0
        o = min(768, m.shape[0] - size) if size <= m.shape[0] else 0      # a crop holding several particles
        m = m[o:o + size, o:o + size] if size <= m.shape[0] else np.tile(m, (size // m.shape[0] + 1,) * 2)[:size, :size]
    else:
        rng = np.random.default_rng(1); m = np.zeros((size, size), bool)
        yy, xx = np.ogrid[:size, :size]
        for cy, cx in rng.uniform(0, size, (size * size // 60000, 2)): m |= (yy - cy) ** 2 + (xx - cx) ** 2 < 110 ** 2
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    rng = np.random.default_rng(0)
    # substrate noise strong enough that frame-level standardization puts particles at a realistic contrast
    img = rng.normal(0, 3, m.shape).astype(np.float32) - m * (1.5 + np.cos(2 * np.pi * (0.6 * yy + 0.8 * xx) / 12))
    return ndi.gaussian_filter(img, 1.0).astype(np.float32), m


def _model():
    from temlearn.core import shared_data
    from temlearn.models import load_hrtem_generalization_model, ResidualUNet
    p = shared_data('hrtem-generalization', 'UNet_2p2nmAu330kX423eUTC_fold0_seed962_model.h5')
    return (load_hrtem_generalization_model(p), 'published') if p else (ResidualUNet().eval(), 'random-init')


def run_one(mode, size, tile, overlap, threads):
    import torch
    torch.set_num_threads(threads)
    from temlearn.core import TEMImage
    from temlearn.predict import sliding_window_predict, predict_mask
    from temlearn.losses import dice
    img, truth = _frame(size)
    net, which = _model()
    frame = TEMImage(img, pixel_size=0.02)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == 'whole': mask = predict_mask(net, frame)
    else: mask = sliding_window_predict(net, frame, tile=tile, overlap=overlap, bs=4)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(f'/tmp/_segbench_{mode}_{size}.npy', mask.data)
    return dict(mode=mode, size=size, tile=tile if mode != 'whole' else size, overlap=overlap if mode != 'whole' else 0,
                seconds=round(dt, 2), peak_rss_gb=round(peak / 2 ** 20, 2), rss_before_gb=round(base / 2 ** 20, 2),
                dice_vs_truth=round(float(dice(mask.data, truth)), 4), model=which,
                calibrated=mask.pixel_size == (0.02, 0.02))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--sizes', type=int, nargs='+', default=[2048, 4096])
    ap.add_argument('--tile', type=int, default=512); ap.add_argument('--overlap', type=int, default=64)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--skip-whole-above', type=int, default=4096, help='skip whole-image runs for frames larger than this')
    ap.add_argument('--one', nargs=2, metavar=('MODE', 'SIZE'), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), a.tile, a.overlap, a.threads))); return 0
    rows = []
    for size in a.sizes:
        for mode in ('whole', 'sliding'):
            if mode == 'whole' and size > a.skip_whole_above: continue
            cmd = [sys.executable, __file__, '--one', mode, str(size), '--tile', str(a.tile), '--overlap', str(a.overlap),
                   '--threads', str(a.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                rows.append(dict(mode=mode, size=size, error=r.stderr.strip().splitlines()[-1][:80])); continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        w, s = (f'/tmp/_segbench_{m}_{size}.npy' for m in ('whole', 'sliding'))
        import os
        if os.path.exists(w) and os.path.exists(s):
            agree = float((np.load(w) == np.load(s)).mean())
            for r in rows:
                if r.get('size') == size and r.get('mode') == 'sliding': r['agreement_with_whole'] = round(agree, 5)
        for f in (w, s):
            if os.path.exists(f): os.remove(f)
    import pandas as pd
    df = pd.DataFrame(rows)
    print(f"torch threads {a.threads}; tile {a.tile}, overlap {a.overlap}, Gaussian blending")
    print(df.to_string(index=False))
    return 0


if __name__ == '__main__':
    sys.exit(main())
