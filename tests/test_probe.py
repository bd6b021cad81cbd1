"Tests of temlearn.probe (+ temlearn.features): no leakage, scores from the test side only, metrics, caching, baselines, CLI."
import io, json, warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from temlearn.core import run_cli
from temlearn.probe import (few_shot_splits, few_shot_protocol, train_linear_probes, predict_linear_probes,
                            classification_metrics, extract_features, encoder_fingerprint, items_fingerprint, summarize,
                            median_ci, anchor_analysis, save_results, read_results, probe_cli, baseline_encoders,
                            write_report, best_device)
from temlearn.features import histogram_features, histogram_baseline, density_auc


def class_folder(root, n_per_class=8, size=32, classes=('a', 'b', 'c'), seed=0):
    "A folder with one sub-folder of PNG images per class (class c: brighter, with c+1 bright squares)."
    from PIL import Image
    r = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (Path(root) / c).mkdir(parents=True)
        for i in range(n_per_class):
            a = r.normal(80 + 30 * ci, 20, (size, size))
            for _ in range(ci + 1):
                y, x = r.integers(0, size - 6, 2); a[y:y + 6, x:x + 6] += 80
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(Path(root) / c / f"{c}{i:02d}.png")
    return Path(root)


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
            m = classification_metrics(yt, yp, C)
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
    with pytest.raises(ValueError, match=r'in 1 group\(s\): too few'): few_shot_protocol(X, y, np.zeros(400))   # one group: no test side
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
    from temlearn.encoder import create_encoder
    torch.manual_seed(0)
    enc = create_encoder('resnet18', in_chans=1, input_size=32).train()
    imgs = [np.random.default_rng(i).random((40, 40)).astype(np.float32) for i in range(6)]
    a = extract_features(enc, imgs, bs=6, cache_dir=tmp_path, progress=False)
    b = extract_features(enc, imgs, bs=1, progress=False)
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
    from temlearn.encoder import create_encoder, save_encoder
    class_folder(tmp_path / 'cls', n_per_class=8)
    torch.manual_seed(0)
    save_encoder(create_encoder('resnet18', in_chans=1, input_size=32), tmp_path / 'enc', method='test')
    base = ['--encoder', tmp_path / 'enc', '--data', tmp_path / 'cls', '--no-progress', '--no-imagenet']
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()) as err:
        assert run_cli(probe_cli, base + ['--shots', '1,2', '--seeds', '2', '--out', tmp_path / 'out', '--probe', 'logreg']) == 0
        res = read_results(tmp_path / 'out' / 'results.csv')
        assert len(res) == 3 * 2 * 2
        assert res.encoder.unique().tolist()[1:] == ['resnet18 random init', 'histogram + logreg']
        assert 'temlearn thumbnails' in (tmp_path / 'out' / 'report.html').read_text()
        assert run_cli(probe_cli, ['--encoder', tmp_path / 'nope', '--data', tmp_path / 'cls', '--out', tmp_path / 'o2']) == 1
        assert run_cli(probe_cli, base + ['--out', tmp_path / 'o3', '--shots', '80', '--on-short', 'error']) == 1
        assert run_cli(probe_cli, base + ['--out', tmp_path / 'o4', '--seeds', '0']) == 2
        assert run_cli(probe_cli, base + ['--out', tmp_path / 'o4', '--probe', 'svm']) == 2
        assert run_cli(probe_cli, ['--data', tmp_path / 'cls', '--out', tmp_path / 'o4']) == 2
    assert 'fewer training-side images' in err.getvalue() and 'nope' in err.getvalue()


def test_cli_baselines_side_by_side(tmp_path):
    "The histogram baseline is a row of the protocol on the same test sides and shots, and the report shows it beside the encoders."
    from temlearn.encoder import create_encoder, save_encoder
    class_folder(tmp_path / 'cls', n_per_class=10)
    save_encoder(create_encoder('resnet18', in_chans=1, input_size=32), tmp_path / 'enc', method='test')
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()):
        assert run_cli(probe_cli, ['--encoder', tmp_path / 'enc', '--data', tmp_path / 'cls', '--shots', '1,4', '--seeds', '3',
                                   '--out', tmp_path / 'out', '--no-progress', '--no-imagenet']) == 0
    res = read_results(tmp_path / 'out' / 'results.csv')
    assert res.encoder.nunique() == 3
    by = {e: g.sort_values(['seed', 'k']) for e, g in res.groupby('encoder')}
    hist, enc = by['histogram + logreg'], by[res.encoder.iloc[0]]
    assert (hist.probe == 'logreg').all() and (enc.probe == 'linear').all()
    assert hist.test_idx.tolist() == enc.test_idx.tolist()
    assert [sorted(a) for a in hist.train_idx] == [sorted(a + b) for a, b in zip(enc.train_idx, enc.val_idx)]
    assert hist.accuracy.median() > 0.6                       # the classes differ in brightness: the histogram sees it
    page = (tmp_path / 'out' / 'report.html').read_text()
    assert 'side by side' in page and 'histogram + logreg' in page and 'resnet18 random init' in page
    assert 'histogram + logreg' in out.getvalue()


def test_mixed_class_groups_never_leak():
    r = np.random.default_rng(0)
    y, g = r.choice(['a', 'b', 'c'], 300), np.repeat(np.arange(30), 10)
    X = r.normal(0, 1, (300, 8)).astype(np.float32)
    res = few_shot_protocol(X, y, g, shots=(2, 8), seeds=range(3))
    for row in res.itertuples():
        sides = [set(g[row.train_idx]), set(g[row.val_idx]), set(g[row.test_idx])]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])


def test_histogram_baseline_and_density():
    r = np.random.default_rng(0)
    imgs = [r.normal(0, 1, (16, 16)) ** (1 + i % 2) for i in range(12)]
    labs = ['even', 'odd'] * 6
    X = histogram_features(imgs, bins=8)
    assert X.shape == (12, 8) and np.allclose(X.sum(1), 1)
    res = histogram_baseline(imgs, labs, bins=8, folds=3)
    assert res['chance'] == 0.5 and res['classes'] == ['even', 'odd'] and res['confusion'].sum() == 12
    grouped = histogram_baseline(imgs, labs, bins=8, folds=3, groups=np.arange(12) // 2 * 2 + np.arange(12) % 2)
    assert 0 <= grouped['accuracy'] <= 1
    assert density_auc([0.1, 0.3, 0.2, 0.4], ['dispersed', 'dispersed', 'network', 'network']) == 0.75
    with pytest.raises(ValueError, match='at least 2'): histogram_baseline(imgs[:3], ['a', 'a', 'b'])


def test_old_names_still_work():
    import temlearn.features as F, temlearn.probe as P
    assert P.extract_features is F.extract_features and P.train_linear_probes is F.train_linear_probes
    assert best_device().type in ('cpu', 'cuda', 'mps')


def test_report_small_test_side(tmp_path):
    X = np.random.default_rng(0).normal(0, 1, (12, 4)).astype(np.float32)
    y = np.arange(12) % 2
    res = few_shot_protocol(X, y, shots=(1,), seeds=[0])
    with pytest.warns(UserWarning, match='t-SNE skipped'):
        page = write_report(res, tmp_path / 'r.html', X, y).read_text()
    assert 't-SNE skipped' in page
