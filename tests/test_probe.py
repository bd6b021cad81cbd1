"Tests of temlearn.probe: no leakage, scores from the test side only, metrics, caching, CLI."
import json, warnings
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from temlearn.probe import (few_shot_splits, few_shot_protocol, train_linear_probes, predict_linear_probes, _metrics,
                            extract_features, encoder_fingerprint, items_fingerprint, summarize, median_ci,
                            anchor_analysis, save_results, read_results, probe_cli, baseline_encoders)


def nanowire_like(signal=1.0, D=32, seed=0):
    "400 images, 4 classes; class 0 = 25 originals x 4 rotated copies (groups)."
    r = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 100)
    X = (r.normal(0, 1, (400, D)) + signal * r.normal(0, 1, (4, D))[y]).astype(np.float32)
    groups = np.array([f"s{i // 4}" for i in range(100)] + [f"x{i}" for i in range(300)])
    return X, y, groups


@pytest.fixture(scope='module')
def toy(): return nanowire_like()


def test_splits_disjoint_and_grouped(toy):
    X, y, g = toy
    sp = few_shot_splits(y, g, shots=(1, 2, 4, 8, 16, 32, 80), seeds=range(10))
    assert len(sp) == 70
    for r in sp.itertuples():
        tr, va, te, pool = set(r.train_idx), set(r.val_idx), set(r.test_idx), set(r.pool_idx)
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert (tr | va) <= pool and not (pool & te)
        assert not set(g[list(pool)]) & set(g[list(te)])           # no group on two sides
        assert np.bincount(y[list(tr | va)], minlength=4).tolist() == [r.k_used] * 4
        assert np.bincount(y[list(te)], minlength=4).tolist() == [20] * 4
        if len(r.val_idx): assert not set(g[list(tr)]) & set(g[list(va)])


def test_splits_same_test_side_across_k(toy):
    X, y, g = toy
    sp = few_shot_splits(y, g, seeds=[3])
    assert all(np.array_equal(t, sp.test_idx[0]) for t in sp.test_idx)
    a = few_shot_splits(y, g, seeds=[3])
    assert a.train_idx.map(list).tolist() == sp.train_idx.map(list).tolist()      # seeded


def test_too_few_images(toy):
    X, y, g = toy
    with pytest.raises(ValueError, match=r"class '3' \(48\)"):
        few_shot_splits(y[:360], g[:360], shots=(80,), seeds=[0], on_short='error')
    with pytest.warns(UserWarning, match='capped'):
        res = few_shot_protocol(X[:360], y[:360], g[:360], shots=(80,), seeds=[0])
    assert res.k_used[0] == 48 and 'capped to 48' in res.warning[0]


def test_accuracy_comes_from_test_side():
    X, y, g = nanowire_like(signal=0.0, D=64, seed=1)
    pattern = np.random.default_rng(2).normal(0, 1, (4, 64)).astype(np.float32)[y]
    accs = []
    for s in range(6):
        te = np.array(few_shot_splits(y, g, seeds=[s]).test_idx[0])
        planted = X.copy(); planted[te] += pattern[te]
        r = few_shot_protocol({'planted': planted, 'clean': X}, y, g, shots=(16,), seeds=[s]).set_index('encoder')
        # identical training record: nothing of the test side reached training or early stopping
        assert r.loc['planted', ['epochs', 'best_epoch']].tolist() == r.loc['clean', ['epochs', 'best_epoch']].tolist()
        accs.append(r.loc['planted', 'accuracy'])
    assert np.mean(accs) < 0.4
    assert few_shot_protocol(X + pattern, y, g, shots=(16,), seeds=range(3)).accuracy.min() > 0.95


def test_group_split_prevents_copy_leakage():
    r = np.random.default_rng(5)
    X = np.repeat(r.normal(0, 1, (100, 256)), 4, 0).astype(np.float32) + r.normal(0, .05, (400, 256)).astype(np.float32)
    g = np.repeat(np.arange(100), 4); y = np.repeat(r.permutation(np.arange(100) % 4), 4)
    by_image = few_shot_protocol(X, y, None, shots=(60,), seeds=range(3)).accuracy.median()
    by_group = few_shot_protocol(X, y, g, shots=(60,), seeds=range(3)).accuracy.median()
    assert by_image > 0.6 and by_group < 0.45


def test_protocol_table(toy):
    X, y, g = toy
    res = few_shot_protocol({'a': X, 'b': X[:, :8]}, y, g, shots=(1, 2, 4, 8), seeds=range(3))
    assert len(res) == 2 * 3 * 4
    assert res.encoder.tolist()[:4] == ['a'] * 4
    for r in res.itertuples():
        cm = np.array(r.confusion)
        assert cm.sum() == r.n_test and cm.sum(1).tolist() == np.bincount(y[r.test_idx], minlength=4).tolist()
        assert r.early_stopping == (r.k >= 4) and r.epochs >= r.best_epoch
    assert res[res.encoder == 'a'].accuracy.median() > 0.9
    again = few_shot_protocol({'a': X, 'b': X[:, :8]}, y, g, shots=(1, 2, 4, 8), seeds=range(3))
    pd.testing.assert_frame_equal(res, again)                              # reproducible


def test_encoders_paired_and_independent(toy):
    "An encoder's rows do not depend on which other encoders run alongside."
    X, y, g = toy
    alone = few_shot_protocol({'a': X}, y, g, shots=(4, 16), seeds=range(3))
    both = few_shot_protocol({'a': X, 'b': X[:, ::-1].copy() * 2}, y, g, shots=(4, 16), seeds=range(3))
    pd.testing.assert_frame_equal(alone, both[both.encoder == 'a'].reset_index(drop=True), check_like=True)


def test_logreg_probe(toy):
    X, y, g = toy
    res = few_shot_protocol(X, y, g, shots=(1, 8), seeds=range(3), probe='logreg')
    assert res.accuracy.min() > 0.9 and not res.early_stopping.any() and (res.n_val == 0).all()


def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, confusion_matrix
    r = np.random.default_rng(0)
    for C in (2, 4):
        for _ in range(30):
            yt, yp = r.integers(0, C, 25), r.integers(0, C, 25)
            m = _metrics(yt, yp, C)
            assert np.isclose(m['accuracy'], accuracy_score(y_true=yt, y_pred=yp))
            assert np.isclose(m['balanced_accuracy'], balanced_accuracy_score(y_true=yt, y_pred=yp))
            assert np.isclose(m['macro_f1'], f1_score(y_true=yt, y_pred=yp, average='macro', labels=range(C),
                                                      zero_division=0))
            assert m['confusion'] == confusion_matrix(y_true=yt, y_pred=yp, labels=range(C)).tolist()


def test_batched_probes_match_single():
    "Training probes together gives the same result as training each one alone."
    X, y, g = nanowire_like(D=16)
    r = np.random.default_rng(0)
    fit = np.zeros((4, 400), bool); val = np.zeros((4, 400), bool)
    for p in range(4):
        i = r.permutation(400); fit[p, i[:20]] = True; val[p, i[20:28]] = True
    W, b, ep, be = train_linear_probes(X, fit, val, y, 4)
    for p in range(4):
        W1, b1, ep1, be1 = train_linear_probes(X, fit[p:p + 1], val[p:p + 1], y, 4)
        assert ep1[0] == ep[p] and be1[0] == be[p]
        assert torch.allclose(W1[0], W[p], atol=1e-5)


def test_bad_inputs(toy):
    X, y, g = toy
    with pytest.raises(ValueError, match='labels'): few_shot_protocol(X[:10], y)
    with pytest.raises(ValueError, match='NaN'): few_shot_protocol(np.full_like(X, np.nan), y)
    with pytest.raises(ValueError, match='more than one class'): few_shot_protocol(X, y, np.zeros(400))
    with pytest.raises(ValueError, match='shots'): few_shot_protocol(X, y, shots=(0, 1))


def test_summary_and_anchor():
    assert median_ci([1, 2, 3])[0] == 2
    X, y, g = nanowire_like()
    res = few_shot_protocol(X, y, g, shots=(1, 4), seeds=range(5))
    sm = summarize(res)
    assert sm.n.tolist() == [5, 5] and (sm.ci_low <= sm['median']).all()
    dens = np.random.default_rng(0).random(400)
    an = anchor_analysis(res, dens, y.astype(str), classes=('1', '2'))
    assert len(an) == 5 and set(an.side) <= {'opposite', 'same'}
    for r in an.itertuples():
        assert y[r.anchor_1] == 1 and y[r.anchor_2] == 2


def test_extract_features_eval_cache(tmp_path):
    from temlearn.ssl import create_encoder
    torch.manual_seed(0)
    enc = create_encoder('resnet18', in_chans=1, input_size=32).train()
    imgs = [np.random.default_rng(i).random((40, 40)).astype(np.float32) for i in range(6)]
    a = extract_features(enc, imgs, batch_size=6, cache_dir=tmp_path, progress=False)
    b = extract_features(enc, imgs, batch_size=1, progress=False)
    assert a.shape == (6, 512) and np.allclose(a, b, atol=1e-4) and enc.training
    assert len(list(tmp_path.glob('*.npy'))) == 1
    assert np.array_equal(extract_features(enc, imgs, cache_dir=tmp_path, progress=False), a)
    imgs2 = [im.copy() for im in imgs]; imgs2[3][0, 0] += 0.5
    assert items_fingerprint(imgs2) != items_fingerprint(imgs)
    extract_features(enc, imgs2, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob('*.npy'))) == 2


def test_results_roundtrip(tmp_path, toy):
    X, y, g = toy
    res = few_shot_protocol(X, y, g, shots=(2,), seeds=range(2))
    back = read_results(save_results(res, tmp_path / 'r.csv'))
    assert back.test_idx.tolist() == res.test_idx.tolist() and back.attrs['classes'] == ['0', '1', '2', '3']


def test_cli(tmp_path):
    from temlearn.ssl import create_encoder, save_encoder
    from temlearn.synth import write_nanowire_dataset
    write_nanowire_dataset(tmp_path / 'nw', n_per_class=12, size=48, seed=0, progress=False, n_jobs=1)
    torch.manual_seed(0)
    save_encoder(create_encoder('resnet18', in_chans=1, input_size=32), tmp_path / 'enc', method='test')
    rc = probe_cli(['--encoder', str(tmp_path / 'enc'), '--data', str(tmp_path / 'nw'), '--shots', '1,2',
                    '--seeds', '2', '--out', str(tmp_path / 'out'), '--no-progress', '--probe', 'logreg'])
    assert rc == 0
    res = read_results(tmp_path / 'out' / 'results.csv')
    assert len(res) == 2 * 2 * 2 and res.encoder.nunique() == 2
    assert 'temlearn thumbnails' in (tmp_path / 'out' / 'report.html').read_text()
    assert probe_cli(['--encoder', str(tmp_path / 'nope'), '--data', str(tmp_path / 'nw'), '--out',
                      str(tmp_path / 'o2')]) == 1
    assert probe_cli(['--encoder', str(tmp_path / 'enc'), '--data', str(tmp_path / 'nw'), '--out',
                      str(tmp_path / 'o3'), '--shots', '80', '--on-short', 'error', '--no-progress']) == 1
