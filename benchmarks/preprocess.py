"""Benchmark: paper 002's preprocessing chain on one 4096² frame with 200 x-ray hits.

Ours (`temlearn.preprocess.preprocess`: vectorised x-ray removal with an exact bracketed median, IRLS flat field
fitted on the 4× down-sampled frame and evaluated separably in bands, in-place standardisation, patching) against
a straightforward implementation of the published algorithm (temlearn.reference), written from its description:
float64 throughout, `np.median`, a per-hot-pixel Python loop, the 9 Bernstein basis images materialised at the
fitting resolution for `lstsq` and at full resolution (4096² × 9 float64 ≈ 1.2 GB) to evaluate the surface,
and a Python loop over tiles.

    python benchmarks/preprocess.py                 # 4096², 200 hits, 7 repeats of ours, 2 of the reference
    python benchmarks/preprocess.py --size 2048 --ref-repeats 1

Time: median wall-clock seconds over the repeats. Memory: peak of the Python/NumPy allocations made during one
call (tracemalloc, measured in a separate call so that tracing does not slow the timed runs), not counting the
input frame (64 MB as float32).
"""
import argparse, gc, math, platform, statistics, sys, time, tracemalloc
import numpy as np


def make_frame(n=4096, n_spikes=200, seed=0, dose=1000):
    "Known illumination × Poisson substrate, dark particles (their mask returned), `n_spikes` x-ray hits."
    rng = np.random.default_rng(seed)
    y = (np.arange(n, dtype=np.float32) + 0.5) / n
    illum = (1 + 0.15 * y[None, :] + 0.5 * y[:, None] * y[None, :] - 0.25 * (y[:, None] - 0.4) ** 2).astype(np.float32)
    mask = np.zeros((n, n), bool)
    for _ in range(40):                                                 # ~5 nm particles at 0.02 nm/px: r ≈ 125 px
        cy, cx = rng.uniform(0, n, 2); r = rng.uniform(80, 170) * n / 4096
        y0, y1, x0, x1 = (max(0, int(cy - r)), min(n, int(cy + r) + 1), max(0, int(cx - r)), min(n, int(cx + r) + 1))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    lam = illum * dose
    lam[mask] *= 0.6
    frame = rng.poisson(lam).astype(np.float32)
    ys, xs = rng.integers(0, n, n_spikes), rng.integers(0, n, n_spikes)
    frame[ys, xs] += rng.uniform(3000, 40000, n_spikes).astype(np.float32)
    return frame, mask, illum


# ------------------------------------------------------------------------------------------ the reference
def reference(frame, mask):
    "Paper 002's chain written straightforwardly (`temlearn.reference`: per-pixel x-ray loop, full-basis flat field)."
    from temlearn.reference import preprocess_loop
    return preprocess_loop(frame, mask, size=512, min_foreground=400)


def ours(frame, mask):
    from temlearn.preprocess import preprocess
    p = preprocess(frame, mask, size=512, min_foreground=400)
    return p.images, p.masks, p.origins


# ------------------------------------------------------------------------------------------ measuring
def timed(fn, frame, mask, repeats):
    ts = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter(); out = fn(frame, mask); ts.append(time.perf_counter() - t0)
        del out
    return ts


def peak_mb(fn, frame, mask):
    gc.collect()
    tracemalloc.start(); tracemalloc.reset_peak()
    out = fn(frame, mask)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, default=4096)
    ap.add_argument('--spikes', type=int, default=200)
    ap.add_argument('--repeats', type=int, default=7, help='timed runs of ours')
    ap.add_argument('--ref-repeats', type=int, default=2, help='timed runs of the reference')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--ref-blas-threads', type=int, default=None,
                    help='limit BLAS threads of the reference (default: as installed, like the original code)')
    a = ap.parse_args(argv)
    ref = reference
    if a.ref_blas_threads:
        from threadpoolctl import threadpool_limits
        def ref(frame, mask):
            with threadpool_limits(a.ref_blas_threads, user_api='blas'): return reference(frame, mask)
    import os, scipy
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable); "
          f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    try: print(f"load average at start: {os.getloadavg()}")
    except OSError: pass
    t0 = time.perf_counter()
    frame, mask, illum = make_frame(a.size, a.spikes, a.seed)
    print(f"frame {frame.shape} float32 with {a.spikes} x-ray hits, {mask.mean():.1%} particle pixels "
          f"(made in {time.perf_counter() - t0:.1f} s)")

    ours(frame, mask)                                                    # warm-up (imports, first-touch)
    t_ours = timed(ours, frame, mask, a.repeats)
    m_ours, out_o = peak_mb(ours, frame, mask)
    t_ref = timed(ref, frame, mask, a.ref_repeats)
    m_ref, out_r = peak_mb(ref, frame, mask)

    same_tiles = out_o[2].shape == out_r[2].shape and (out_o[2] == out_r[2]).all()
    diff = float(np.abs(out_o[0] - out_r[0]).max()) if same_tiles and len(out_o[0]) else float('nan')
    med_o, med_r = statistics.median(t_ours), statistics.median(t_ref)
    print()
    print(f"{'':34s}{'ours':>14s}{'reference':>14s}{'ratio':>10s}")
    print(f"{'median time per frame (s)':34s}{med_o:14.3f}{med_r:14.2f}{med_r / med_o:9.1f}×")
    print(f"{'min / max time (s)':34s}{min(t_ours):6.3f}/{max(t_ours):<7.3f}{min(t_ref):6.2f}/{max(t_ref):<7.2f}")
    print(f"{'peak memory during the call (MB)':34s}{m_ours:14.0f}{m_ref:14.0f}{m_ref / m_ours:9.1f}×")
    print(f"{'runs':34s}{a.repeats:14d}{a.ref_repeats:14d}")
    print(f"{'BLAS threads':34s}{'1':>14s}{str(a.ref_blas_threads or 'default'):>14s}")
    print(f"{f'patches kept (of {(a.size // 512) ** 2})':34s}{len(out_o[0]):14d}{len(out_r[0]):14d}")
    print(f"\nsame tiles kept: {same_tiles}; max |ours − reference| over all patch pixels (standardised units): {diff:.2e}")
    targets = {'≤ 0.5 s': med_o <= 0.5, '≤ 600 MB': m_ours <= 600, '≥ 15× faster': med_r / med_o >= 15}
    print('targets: ' + ', '.join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    try: print(f"load average at end: {os.getloadavg()}")
    except OSError: pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
