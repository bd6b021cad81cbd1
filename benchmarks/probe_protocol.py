"""Benchmark: the full few-shot protocol (paper 001) with the linear-layer probe.

5 encoders x 20 seeds x 7 values of k = 700 probes on 400 cached 2048-d feature vectors (4 classes x 100 images,
one class made of 25 originals x 4 rotated copies = groups). Target: <= 60 s on a 2-core CPU.

Compared side by side:
* ours        -- temlearn.probe.few_shot_protocol: all seeds of one (encoder, k) trained together, full-batch Adam,
                 early stopping per probe with masks (num_threads=1, the default, and num_threads=2);
* reference A -- the same algorithm written the straightforward way: one nn.Linear + torch.optim.Adam + DataLoader
                 training loop per probe (full batch), on the same index sets; timed on a subset and extrapolated
                 to 700 probes; its test accuracies must equal ours (checks that batching changes nothing);
* reference B -- the paper's Keras-style loop (mini-batches of 32) per probe, timed on the same subset.

    python benchmarks/probe_protocol.py [--ref-probes 35] [--features path.npz]
"""
import argparse, copy, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from temlearn.probe import few_shot_protocol, few_shot_splits, feature_stats, classification_metrics

SHOTS, SEEDS, N_ENC = (1, 2, 4, 8, 16, 32, 80), range(20), 5


def make_features(path):
    "5 encoders' 2048-d features of 400 images (ReLU'd class clusters of different quality), cached in `path`."
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in z.files if k not in ('labels', 'groups')}, z['labels'], z['groups']
    r = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    groups = np.array([f"s{i // 4}" for i in range(100)] + [f"x{i}" for i in range(300)])
    feats = {}
    for e in range(N_ENC):
        base = r.normal(0, 1, (25, 2048))
        X = r.normal(0, 1, (400, 2048))
        X[:100] = np.repeat(base, 4, 0) + 0.3 * r.normal(0, 1, (100, 2048))   # rotated copies look alike
        X += (0.05 + 0.05 * e) * r.normal(0, 1, (4, 2048))[y]
        feats[f"encoder{e}"] = np.maximum(X, 0).astype(np.float32)                  # post-ReLU pooled features
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, labels=y, groups=groups, **feats)
    return feats, y, groups


def reference_probe(X, y, p, stats, batch_size=None, max_epochs=200, patience=10, fixed_epochs=100, lr=1e-3):
    "One probe, the straightforward way: nn.Linear, torch.optim.Adam, a DataLoader, early stopping on val accuracy."
    mu, sd = (torch.from_numpy(s) for s in stats)
    Z = (torch.from_numpy(X) - mu) / sd
    yt = torch.from_numpy(y)
    fit, val, te = (torch.as_tensor(np.asarray(p[k]), dtype=torch.long) for k in ('train_idx', 'val_idx', 'test_idx'))
    model = nn.Linear(X.shape[1], int(y.max()) + 1)
    nn.init.zeros_(model.weight); nn.init.zeros_(model.bias)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    dl = DataLoader(TensorDataset(Z[fit], yt[fit]), batch_size=batch_size or len(fit), shuffle=True,
                    generator=torch.Generator().manual_seed(int(p['seed'])))
    use_val = len(val) > 0
    best, wait, best_state = -1.0, 0, None
    for epoch in range(1, (max_epochs if use_val else fixed_epochs) + 1):
        model.train()
        for xb, yb in dl:
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(); loss.backward(); opt.step()
        if use_val:
            model.eval()
            with torch.no_grad(): acc = (model(Z[val]).argmax(1) == yt[val]).float().mean().item()
            if acc > best: best, wait, best_state = acc, 0, copy.deepcopy(model.state_dict())
            else:
                wait += 1
                if wait >= patience: break
    if best_state is not None: model.load_state_dict(best_state)
    with torch.no_grad(): pred = model(Z[te]).argmax(1).numpy()
    return classification_metrics(y[te.numpy()], pred, int(y.max()) + 1)['accuracy']


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--features', default=str(Path(tempfile.gettempdir()) / 'temlearn_bench' / 'probe_features.npz'),
                    help='feature cache (created on the first run)')
    ap.add_argument('--ref-probes', type=int, default=35, help='probes timed for each reference (5 seeds x 7 k)')
    a = ap.parse_args(argv)
    feats, y, groups = make_features(Path(a.features))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} (shared with other jobs: timings are upper bounds)")
    print(f"data: {len(feats)} encoders x {len(y)} images x {next(iter(feats.values())).shape[1]} features; "
          f"{len(SHOTS)} values of k x {len(SEEDS)} seeds = {len(feats) * len(SHOTS) * len(SEEDS)} probes\n")

    times = {}
    for th in (1, 2):
        t0 = time.perf_counter()
        res = few_shot_protocol(feats, y, groups, shots=SHOTS, seeds=SEEDS, num_threads=th)
        times[th] = time.perf_counter() - t0
        if th == 1: ours = res

    # references on a subset: encoder0, seeds 0..n/7-1, all k
    n_seeds = max(1, a.ref_probes // len(SHOTS))
    plans = few_shot_splits(y, groups, shots=SHOTS, seeds=range(n_seeds)).to_dict('records')
    X0 = feats['encoder0']
    torch.set_num_threads(1)
    ref = {}
    for name, bs in (('A', None), ('B', 32)):
        t0 = time.perf_counter()
        accs = [reference_probe(X0, y, p, feature_stats(X0, p['pool_idx'], True), batch_size=bs) for p in plans]
        ref[name] = (time.perf_counter() - t0, accs)
    n_ref = len(plans)
    sub = ours[(ours.encoder == 'encoder0') & (ours.seed < n_seeds)].set_index(['seed', 'k']).accuracy
    ours_sub = np.array([sub[(p['seed'], p['k'])] for p in plans])
    same = np.mean(np.isclose(ours_sub, ref['A'][1]))

    n_all = len(ours)
    print(f"{'method':58s} {'probes':>7s} {'time (s)':>9s} {'700 probes (s)':>15s}")
    print(f"{'ours: batched, full-batch Adam, 1 thread':58s} {n_all:7d} {times[1]:9.1f} {times[1]:15.1f}")
    print(f"{'ours: batched, full-batch Adam, 2 threads':58s} {n_all:7d} {times[2]:9.1f} {times[2]:15.1f}")
    for name, label in (('A', 'reference A: per-probe loop, same algorithm (full batch)'),
                        ('B', 'reference B: per-probe loop, mini-batches of 32 (Keras)')):
        t, _ = ref[name]
        print(f"{label:58s} {n_ref:7d} {t:9.1f} {t / n_ref * n_all:15.1f} (extrapolated)")
    print(f"\nspeed-up vs reference A: {ref['A'][0] / n_ref * n_all / times[1]:.0f}x; "
          f"vs reference B: {ref['B'][0] / n_ref * n_all / times[1]:.0f}x; target <= 60 s: "
          f"{'met' if min(times.values()) <= 60 else 'NOT met'}")
    print(f"agreement with reference A on its {n_ref} probes: {same:.0%} identical test accuracies "
          f"(max |diff| {np.max(np.abs(ours_sub - ref['A'][1])):.3f})")
    med = ours.groupby(['encoder', 'k']).accuracy.median().unstack()
    print("\nmedian test accuracy (ours):\n" + med.round(3).to_string())
    return 0


if __name__ == '__main__':
    sys.exit(main())
