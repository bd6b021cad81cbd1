"""Label suggestion (temlearn.label) and the labeling widgets (temlearn.labelgrid.LabelGrid, temlearn.paint.MaskPainter).

The widgets are driven through the same comm messages a browser sends (`frontend_msg` / `frontend_set` below deliver
them exactly as ipywidgets does); state round-trips through files. The real-browser test is tests/test_label_browser.py."""
import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from temlearn.label import SUGGEST_METHODS, prepare_features, suggest_labels, probe_on, probe_proba, least_confident, _dist_matrix
from temlearn.labelgrid import LabelGrid, contrast_stretch, thumbnail, read_labels_csv, check_classes
from temlearn.paint import MaskPainter, decode_mask, encode_mask, fill_region, label_path_for, stroke_footprint
from temlearn.masks import read_mask


def frontend_msg(widget, content):
    "Deliver `content` as a browser's `model.send(content)` arrives in the kernel (comm method 'custom')."
    widget._handle_msg({'content': {'data': {'method': 'custom', 'content': content}}, 'buffers': []})


def frontend_set(widget, **state):
    "Deliver a browser-side `model.set(...); model.save_changes()` (comm method 'update')."
    widget._handle_msg({'content': {'data': {'method': 'update', 'state': state, 'buffer_paths': []}}, 'buffers': []})


# ---- suggest_labels ---------------------------------------------------------------------------------------------------

def blobs(n_per=30, centers=((0, 0), (10, 0), (0, 10), (10, 10)), sd=0.5, seed=0, extra_dims=3):
    "Well-separated Gaussian clusters (plus noise dimensions), and each row's cluster."
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, sd, (n_per, len(c))) for c in centers])
    X = np.c_[X, rng.normal(0, sd, (len(X), extra_dims))]
    return X, np.repeat(np.arange(len(centers)), n_per)


def cover_cost(X, picks):
    "Sum over all rows of the distance to the nearest pick (the k-medoids objective) in z-scored space."
    Z = prepare_features(X, 'zscore')
    return np.sqrt(((Z[:, None, :] - Z[None, picks, :]) ** 2).sum(-1)).min(1).sum()


@pytest.mark.parametrize('method', SUGGEST_METHODS)
def test_returns_n_unique_valid_indices_and_is_seeded(method):
    X, _ = blobs()
    a = suggest_labels(X, 7, method, seed=3)
    assert a.dtype == np.int64 and a.shape == (7,)
    assert len(set(a.tolist())) == 7 and a.min() >= 0 and a.max() < len(X)
    assert np.array_equal(a, suggest_labels(X, 7, method, seed=3))


@pytest.mark.parametrize('method', SUGGEST_METHODS)
def test_never_returns_excluded_rows(method):
    X, _ = blobs()
    ex = list(range(0, len(X), 2))
    a = suggest_labels(X, 20, method, exclude=ex)
    assert not set(a.tolist()) & set(ex)


@pytest.mark.parametrize('seed', range(5))
def test_kmedoids_takes_one_image_per_cluster(seed):
    X, c = blobs(seed=seed)
    assert sorted(c[suggest_labels(X, 4, 'kmedoids', seed=seed)]) == [0, 1, 2, 3]


def test_kmedoids_with_labeled_rows_covers_the_other_clusters():
    X, c = blobs()
    a = suggest_labels(X, 3, 'kmedoids', exclude=[np.flatnonzero(c == 2)[0]])
    assert sorted(c[a]) == [0, 1, 3]


def test_kmedoids_orders_biggest_cluster_first():
    X, c = blobs()
    keep = np.r_[np.flatnonzero(c == 0), np.flatnonzero(c == 1)[:5]]   # cluster 0: 30 images, cluster 1: 5
    X, c = X[keep], c[keep]
    assert c[suggest_labels(X, 2, 'kmedoids', normalize='none')].tolist() == [0, 1]


def test_kmedoids_is_near_optimal_on_small_problems():
    "On tiny sets (3 of 11 images) the restarted swap search should mostly reach the exhaustive optimum."
    ratios = []
    for seed in range(40):
        X = np.random.default_rng(seed).normal(size=(11, 3))
        best = min(cover_cost(X, list(p)) for p in itertools.combinations(range(11), 3))
        ratios.append(cover_cost(X, suggest_labels(X, 3, 'kmedoids', seed=0, normalize='zscore')) / best)
    ratios = np.array(ratios)
    assert ratios.min() >= 1 - 1e-9                         # sanity of the brute force
    assert (ratios < 1 + 1e-9).sum() >= 35 and ratios.max() < 1.1, ratios.round(3)


@settings(max_examples=25, deadline=None)
@given(st.integers(12, 40), st.integers(1, 5), st.integers(0, 10_000), st.integers(0, 3))
def test_kmedoids_result_is_swap_optimal(N, n, seed, n_ex):
    "Property: no single swap of a returned medoid for another allowed image lowers the objective."
    X = np.random.default_rng(seed).normal(size=(N, 4))
    ex = list(range(n_ex))
    a = list(suggest_labels(X, n, 'kmedoids', seed=seed, exclude=ex))
    D = _dist_matrix(prepare_features(X)).astype(np.float64)         # the default space
    cost = lambda med: D[med].min(0).sum()
    c0 = cost(ex + a)
    for i in range(n):
        for cand in set(range(N)) - set(a) - set(ex):
            trial = a[:i] + [cand] + a[i + 1:]
            assert cost(ex + trial) >= c0 - 1e-6 * max(c0, 1)


def test_kcenter_picks_the_farthest_point_from_the_labeled_ones():
    X = np.array([[0.], [1.], [2.], [3.], [10.], [4.]])
    assert suggest_labels(X, 1, 'kcenter', exclude=[0], normalize='none').tolist() == [4]
    assert suggest_labels(X, 2, 'kcenter', exclude=[0], normalize='none').tolist() == [4, 5]   # 4 is 4 from 0, 6 from 10


def test_kcenter_starts_near_the_centroid_without_labels():
    X = np.array([[0.], [4.9], [5.2], [10.]])
    assert suggest_labels(X, 1, 'kcenter', normalize='none').tolist() == [1]


def test_random_is_uniform_over_the_pool():
    X, _ = blobs(n_per=5)                                   # 20 rows
    counts = np.bincount(np.concatenate([suggest_labels(X, 5, 'random', seed=s) for s in range(400)]), minlength=20)
    assert counts.min() > 60 and counts.max() < 140         # expected 100 each


def test_large_inputs_cluster_a_subset():
    X, c = blobs(n_per=200)                                 # 800 rows > max_points
    a = suggest_labels(X, 4, 'kmedoids', max_points=100, exclude=[5])
    assert len(set(a.tolist())) == 4 and 5 not in a
    assert len(set(c[a].tolist()) | {0}) == 4               # with row 5 (cluster 0) labeled, the rest are covered


def test_prepare_features():
    X = np.c_[np.arange(10.), np.full(10, 7.), np.arange(10.) ** 2]
    Z = prepare_features(X, 'zscore')
    assert np.allclose(Z[:, [0, 2]].mean(0), 0) and np.allclose(Z[:, [0, 2]].std(0), 1)
    assert np.all(Z[:, 1] == 0)                             # a constant column carries no distance
    L = prepare_features(X, 'zscore+l2')
    n = np.linalg.norm(L, axis=1)
    assert np.allclose(n[n > 0], 1)
    assert np.array_equal(prepare_features(X, 'none'), X)


def test_n_zero_gives_empty():
    assert suggest_labels(np.ones((3, 2)), 0).shape == (0,)


def test_torch_features_are_accepted():
    torch = pytest.importorskip('torch')
    X, c = blobs()
    assert np.array_equal(suggest_labels(torch.from_numpy(X), 4), suggest_labels(X, 4))


@pytest.mark.parametrize('features, n, kw, match', [
    (np.ones((5, 2)), 6, {}, 'only 5 of the 5 images are available'),
    (np.ones((5, 2)), 4, {'exclude': [0, 1]}, 'only 3 of the 5 images'),
    (np.array([[1., np.nan], [0, 0], [1, 1]]), 1, {}, r'NaN or inf in 1 row\(s\), first row 0'),
    (np.ones(5), 1, {}, 'must be a 2-D'),
    (np.ones((2, 3, 4)), 1, {}, 'must be a 2-D'),
    (np.ones((0, 3)), 1, {}, 'is empty'),
    (np.ones((5, 2)), 1, {'method': 'kmeans'}, 'method must be one of'),
    (np.ones((5, 2)), 1, {'exclude': [7]}, 'index 7 is out of range'),
    (np.ones((5, 2)), 1, {'exclude': np.ones(5, bool)}, 'not a boolean mask'),
    (np.ones((5, 2)), 1, {'exclude': [1.5]}, 'integer row indices'),
    (np.ones((5, 2)), -1, {}, 'must be >= 0'),
    (np.ones((5, 2)), 2.5, {}, 'whole number'),
    (np.ones((5, 2)), 1, {'normalize': 'minmax'}, 'normalize must be one of'),
    (np.ones((5, 2)), 1, {'n_init': 0}, 'n_init must be >= 1'),
    (np.array([['a', 'b']]), 1, {}, 'must be numeric'),
])
def test_clear_errors(features, n, kw, match):
    with pytest.raises(ValueError, match=match):
        suggest_labels(features, n, **kw)


@pytest.mark.parametrize('method', SUGGEST_METHODS)
def test_identical_features_still_give_distinct_rows(method):
    a = suggest_labels(np.ones((6, 3)), 6, method)
    assert sorted(a.tolist()) == list(range(6))


def test_l2_merges_clusters_along_a_ray_through_the_mean():
    "The documented trade-off of the default: unit rows discard the distance from the mean."
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.3, (50, 5)) for c in range(4)])    # 4 clusters on the diagonal
    c = np.repeat(np.arange(4), 50)
    assert sorted(c[suggest_labels(X, 4, normalize='zscore')]) == [0, 1, 2, 3]
    assert len(set(c[suggest_labels(X, 4)].tolist())) < 4


def test_probe_and_least_confident():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    X = (rng.normal(0, 1, (100, 8)) + 1.5 * y[:, None]).astype(np.float32)                 # every feature shifted by class
    W, b, mu, sd = probe_on(X, [0, 1, 50, 51], y[[0, 1, 50, 51]], 2)
    P = probe_proba(X, W, b, mu, sd)
    assert P.shape == (100, 2) and np.allclose(P.sum(1), 1)
    assert (P.argmax(1) == y).mean() > 0.75
    unsure = least_confident(P, 10, exclude=[0, 1])
    assert len(set(unsure)) == 10 and not {0, 1} & set(unsure)
    margin = np.abs(P[:, 1] - P[:, 0])
    assert margin[unsure].max() <= np.sort(np.delete(margin, [0, 1]))[9] + 1e-12   # exactly the 10 smallest margins
    with pytest.raises(ValueError, match='only 98 of the 100'):
        least_confident(P, 99, exclude=[0, 1])


# ---- LabelGrid ---------------------------------------------------------------------------------------------------------

CLASSES = ['singular', 'dispersed', 'network', 'bundle']


class CountingImages:
    "A lazy image sequence that records which images were read."
    def __init__(self, n, shape=(40, 60), seed=0):
        self.n, self.shape, self.seed, self.reads = n, shape, seed, []
    def __len__(self): return self.n
    def __getitem__(self, i):
        if not 0 <= i < self.n: raise IndexError(i)
        self.reads.append(i)
        return np.random.default_rng([self.seed, i]).normal(i, 1, self.shape).astype(np.float32)


def decode(uri):
    import base64, io
    assert uri.startswith('data:image/png;base64,')
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(',', 1)[1]))))


def test_suggested_first_then_the_rest_in_order():
    g = LabelGrid(CountingImages(10), CLASSES, suggested=[7, 2, 7, 9], page_size=4)
    assert g.order.tolist() == [7, 2, 9, 0, 1, 3, 4, 5, 6, 8]
    assert [it['index'] for it in g._items] == [7, 2, 9, 0]
    assert [it['rank'] for it in g._items] == [1, 2, 3, 0]
    assert g.n_pages == 3


def test_suggest_again_reorders_the_grid_on_screen():
    g = LabelGrid(CountingImages(10), CLASSES, suggested=[7], page_size=4)
    frontend_set(g, page=2)
    g.suggest([3, 8])
    assert g.page == 0 and [it['index'] for it in g._items] == [3, 8, 0, 1]
    assert [it['rank'] for it in g._items] == [1, 2, 0, 0]
    with pytest.raises(ValueError, match='suggested index 10 is out of range'):
        g.suggest([10])


def test_only_the_current_page_is_read_and_sent():
    imgs = CountingImages(3000)
    t0 = time.perf_counter()
    g = LabelGrid(imgs, CLASSES, page_size=24, thumb_size=32)
    assert time.perf_counter() - t0 < 5
    assert sorted(set(imgs.reads)) == list(range(24)) and len(g._items) == 24
    frontend_set(g, page=100)                                # the browser's page buttons
    assert [it['index'] for it in g._items] == list(range(2400, 2424))
    assert len(set(imgs.reads)) == 48


def test_thumbnails_are_small_pngs_of_the_stretched_image():
    a = np.random.default_rng(0).normal(size=(200, 100)).astype(np.float32)
    g = LabelGrid([a], CLASSES, thumb_size=50, low=2, high=98)
    t = decode(g._items[0]['uri'])
    assert t.shape == (50, 25) and t.dtype == np.uint8
    assert np.array_equal(t, thumbnail(a, 50, 2, 98))
    full = contrast_stretch(a, 2, 98)
    assert abs(float(full.mean()) - float(t.mean())) < 3


def test_contrast_change_from_the_browser_regenerates_the_page():
    g = LabelGrid(CountingImages(3), CLASSES)
    before = [it['uri'] for it in g._items]
    frontend_set(g, low=20.0)
    assert all(a != b for a, b in zip(before, [it['uri'] for it in g._items]))
    assert np.array_equal(decode(g._items[1]['uri']), thumbnail(CountingImages(3)[1], 96, 20, 99))


def test_invalid_contrast_or_page_from_the_browser_is_reverted():
    g = LabelGrid(CountingImages(5), CLASSES, page_size=2)
    frontend_set(g, low=99.5)
    assert g.low == 1.0 and 'invalid low' in g.error
    frontend_set(g, page=7)
    assert g.page == 2 and 'invalid page 7' in g.error
    frontend_set(g, page_size=4)
    assert g.n_pages == 2 and g.page == 1 and [it['index'] for it in g._items] == [4]


def test_label_messages_from_the_browser():
    g = LabelGrid(CountingImages(6), CLASSES)
    frontend_msg(g, {'type': 'label', 'index': 3, 'class': 'network'})
    frontend_msg(g, {'type': 'label', 'index': 0, 'class': 'bundle'})
    frontend_msg(g, {'type': 'label', 'index': 3, 'class': 'singular'})     # relabel
    assert g.labels == {0: 'bundle', 3: 'singular'}
    frontend_msg(g, {'type': 'unlabel', 'index': 0})
    assert g.labels == {3: 'singular'}
    assert g._labels == {'3': 'singular'}                                    # what the browser sees


def test_bad_messages_are_reported_and_change_nothing():
    g = LabelGrid(CountingImages(6), CLASSES)
    g.set_label(1, 'network')
    for bad, msg in [({'type': 'label', 'index': 2, 'class': 'rods'}, "'rods' is not one of"),
                     ({'type': 'label', 'index': 6, 'class': 'network'}, 'out of range for 6'),
                     ({'type': 'label', 'index': True, 'class': 'network'}, 'must be an image index'),
                     ({'type': 'label', 'index': 2}, "needs 'index' and 'class'"),
                     ({'type': 'explode'}, 'unknown message type')]:
        with pytest.warns(UserWarning):
            frontend_msg(g, bad)
        assert msg in g.error
        assert g.labels == {1: 'network'}
    frontend_msg(g, {'type': 'label', 'index': 2, 'class': 1})              # class by position
    assert g.labels == {1: 'network', 2: 'dispersed'} and g.error == ''
    frontend_msg(g, {'kind': 'anywidget-command'})                           # not ours: ignored
    assert g.error == ''
    with pytest.raises(ValueError, match="'rods' is not one of"):           # called directly: raises
        g.handle_message({'type': 'label', 'index': 2, 'class': 'rods'})


def test_csv_round_trip(tmp_path):
    imgs = CountingImages(8)
    g = LabelGrid(imgs, CLASSES)
    for i, c in [(5, 'bundle'), (0, 'network'), (7, 'network')]: g.set_label(i, c)
    p = g.to_csv(tmp_path / 'labels.csv')
    assert p.read_text().splitlines() == ['index,label,image', '0,network,', '5,bundle,', '7,network,']
    with pytest.raises(FileExistsError, match='overwrite=True'):
        g.to_csv(p)
    h = LabelGrid.from_csv(p, imgs, CLASSES)                                 # "after a kernel restart"
    assert h.labels == g.labels and h._labels == g._labels
    h2 = LabelGrid(imgs, CLASSES).load_csv(p)
    assert h2.labels == g.labels
    h3 = LabelGrid(imgs, CLASSES, labels={1: 'singular'}).load_csv(p, replace=False)
    assert h3.labels == {**g.labels, 1: 'singular'}


def test_csv_keeps_image_names_and_detects_reordering(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((np.arange(64).reshape(8, 8) * (i + 1) % 256).astype(np.uint8)).save(p)
        paths.append(p)
    g = LabelGrid(paths, ['a', 'b'])
    g.set_label(2, 'b')
    csvp = g.to_csv(tmp_path / 'l.csv')
    assert csvp.read_text().splitlines()[1] == '2,b,img2.png'
    assert [it['name'] for it in g._items] == ['img0.png', 'img1.png', 'img2.png']
    assert all(it['uri'] for it in g._items)
    with pytest.raises(ValueError, match=r"l.csv: line 2: image 2 was 'img2.png' when labeled but is 'img0.png'"):
        LabelGrid.from_csv(csvp, paths[::-1], ['a', 'b'])


@pytest.mark.parametrize('body, match', [
    ('index,label\n0,rods\n', "line 2: label 'rods' is not one of"),
    ('index,label\nx,a\n', "line 2: index 'x' is not a whole number"),
    ('index,label\n9,a\n', 'line 2: index 9 is out of range for 3'),
    ('index,label\n0,a\n0,b\n', 'line 3: image 0 is labeled twice'),
    ('idx,lab\n', "expected a header 'index,label"),
    ('', "expected a header 'index,label"),
])
def test_bad_csv_files_name_the_file_and_line(tmp_path, body, match):
    p = tmp_path / 'bad.csv'
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        LabelGrid.from_csv(p, CountingImages(3), ['a', 'b'])
    with pytest.raises(FileNotFoundError, match='label CSV not found'):
        read_labels_csv(tmp_path / 'missing.csv', ['a'], ['x'])


def test_autosave_writes_every_change_and_never_clobbers(tmp_path):
    p = tmp_path / 'auto.csv'
    g = LabelGrid(CountingImages(5), ['a', 'b'], autosave=p)
    assert not p.exists()                                                    # nothing to save yet
    frontend_msg(g, {'type': 'label', 'index': 4, 'class': 'b'})
    assert p.read_text().splitlines() == ['index,label,image', '4,b,']
    with pytest.raises(FileExistsError, match='from_csv'):
        LabelGrid(CountingImages(5), ['a', 'b'], autosave=p)
    h = LabelGrid.from_csv(p, CountingImages(5), ['a', 'b'], autosave=True)
    frontend_msg(h, {'type': 'label', 'index': 1, 'class': 'a'})
    assert p.read_text().splitlines() == ['index,label,image', '1,a,', '4,b,']
    assert [q.name for q in tmp_path.iterdir()] == ['auto.csv']              # no temporary files left


def test_on_change_callbacks():
    g = LabelGrid(CountingImages(5), ['a', 'b'])
    seen = []
    g.on_change(lambda w: seen.append(dict(w.labels)))
    frontend_msg(g, {'type': 'label', 'index': 2, 'class': 'a'})
    frontend_msg(g, {'type': 'label', 'index': 2, 'class': 'a'})            # no change: no call
    frontend_msg(g, {'type': 'unlabel', 'index': 2})
    assert seen == [{2: 'a'}, {}]
    with pytest.raises(TypeError, match='callable'):
        g.on_change(3)


def test_goto_and_selection():
    g = LabelGrid(CountingImages(10), ['a', 'b'], suggested=[9], page_size=3)
    g.goto(5)
    assert g.page == 2 and g.selected == 5 and 5 in [it['index'] for it in g._items]
    frontend_set(g, selected=42)                                             # not an image: ignored
    assert g.selected == 5


def test_accepts_stacks_tensors_and_survives_unreadable_images():
    torch = pytest.importorskip('torch')
    stack = np.random.default_rng(0).normal(size=(4, 16, 16))
    assert all(it['uri'] for it in LabelGrid(stack, ['a', 'b'])._items)
    g = LabelGrid([torch.rand(8, 8), np.zeros((8, 8, 3)), np.full((8, 8), np.nan), '/nonexistent/x.tif'], ['a', 'b'])
    assert [bool(it['uri']) for it in g._items] == [True, False, False, False]
    assert 'expected a 2-D image' in g._items[1]['error'] and 'NaN' in g._items[2]['error']
    assert 'x.tif' in g._items[3]['error'] and g._items[3]['name'] == 'x.tif'
    g.set_label(1, 'b')                                                      # still labelable
    assert g.labels == {1: 'b'}


@pytest.mark.parametrize('kw, exc, match', [
    (dict(images=[], classes=['a']), ValueError, 'images is empty'),
    (dict(images=[np.zeros((4, 4))], classes=['a', 'a']), ValueError, 'must be unique'),
    (dict(images=[np.zeros((4, 4))], classes='ab'), ValueError, 'got the string'),
    (dict(images=[np.zeros((4, 4))], classes=['a,b']), ValueError, "no ','"),
    (dict(images=[np.zeros((4, 4))], classes=['a'], suggested=[3]), ValueError, 'suggested index 3 is out of range'),
    (dict(images=[np.zeros((4, 4))], classes=['a'], low=50, high=40), ValueError, '0 <= low < high <= 100'),
    (dict(images=[np.zeros((4, 4))], classes=['a'], labels={0: 'b'}), ValueError, "'b' is not one of"),
    (dict(images=[np.zeros((4, 4))], classes=['a'], page_size=0), ValueError, 'page_size >= 1'),
    (dict(images='frames/', classes=['a']), ValueError, 'not one path'),
    (dict(images=5, classes=['a']), TypeError, 'must be a sequence'),
])
def test_constructor_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        LabelGrid(**kw)


def test_check_classes():
    assert check_classes(('bg', 1)) == ['bg', '1']
    with pytest.raises(ValueError, match='at least 2'):
        check_classes(['x'], minimum=2)


# ---- MaskPainter: pure helpers ----------------------------------------------------------------------------------------

def brute_stroke(shape, points, radius):
    "Reference: pixel centres within `radius` of the polyline, plus the pixel nearest each point."
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    pts = np.asarray(points, float)
    out = np.zeros(shape, bool)
    for a, b in (zip(pts[:-1], pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]):
        ab = b - a
        L2 = ab @ ab
        t = np.zeros_like(yy) if L2 == 0 else np.clip(((yy - a[0]) * ab[0] + (xx - a[1]) * ab[1]) / L2, 0, 1)
        out |= (yy - a[0] - t * ab[0]) ** 2 + (xx - a[1] - t * ab[1]) ** 2 <= radius ** 2 + 1e-9
    for y, x in np.rint(pts).astype(int):
        if 0 <= y < H and 0 <= x < W: out[y, x] = True
    return out


def full(shape, fp):
    out = np.zeros(shape, bool)
    if fp is not None:
        y0, x0, r = fp
        out[y0:y0 + r.shape[0], x0:x0 + r.shape[1]] = r
    return out


@pytest.fixture
def img():
    return np.random.default_rng(0).normal(100, 10, (30, 40)).astype(np.float32)


def test_stroke_footprint_simple_cases():
    assert np.argwhere(full((5, 5), stroke_footprint((5, 5), [[2, 3]], 0))).tolist() == [[2, 3]]
    row = full((5, 8), stroke_footprint((5, 8), [[1, 1], [1, 6]], 0))
    assert np.argwhere(row).tolist() == [[1, c] for c in range(1, 7)]
    disk = full((11, 11), stroke_footprint((11, 11), [[5, 5]], 2))
    yy, xx = np.mgrid[:11, :11]
    assert np.array_equal(disk, (yy - 5) ** 2 + (xx - 5) ** 2 <= 4) and disk.sum() == 13
    assert stroke_footprint((5, 5), [[-10, -10], [-8, -20]], 2) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 25), st.floats(-5, 30)), min_size=1, max_size=6), st.floats(0, 6))
def test_stroke_footprint_matches_brute_force(points, radius):
    shape = (20, 25)
    assert np.array_equal(full(shape, stroke_footprint(shape, points, radius)), brute_stroke(shape, points, radius))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(0, 2 ** 31), st.booleans())
def test_mask_encoding_round_trip(h, w, k, seed, blocky):
    rng = np.random.default_rng(seed)
    m = rng.integers(0, k, (h, w)).astype(np.uint8)
    if blocky: m = np.repeat(m[:, :1], w, 1)                               # long runs
    b = encode_mask(m)
    assert np.array_equal(decode_mask(b), m)
    head = np.frombuffer(b[:12], '<u4')
    assert head[0] == h and head[1] == w
    assert len(b) <= 12 + h * w                                          # never bigger than the raw pixels


def test_mask_encoding_picks_runs_or_raw():
    smooth = np.zeros((100, 100), np.uint8); smooth[20:40, 10:90] = 1
    b = encode_mask(smooth)
    assert np.frombuffer(b[8:12], '<u4')[0] == 0 and len(b) == 12 + 8 * 41    # 41 runs
    speckle = (np.random.default_rng(0).random((100, 100)) < .5).astype(np.uint8)
    b = encode_mask(speckle)
    assert np.frombuffer(b[8:12], '<u4')[0] == 1 and len(b) == 12 + 100 * 100
    with pytest.raises(ValueError, match='covers'):
        decode_mask(np.array([2, 2, 0, 1, 3], '<u4').tobytes())
    with pytest.raises(ValueError, match='not an encoded mask'):
        decode_mask(b'abc')


def test_fill_region_respects_labels_and_tolerance():
    m = np.zeros((7, 7), np.uint8)
    m[:, 3] = 1                                               # a wall
    r = fill_region(m, [2, 1])
    assert r[:, :3].all() and not r[:, 3:].any()
    img = np.zeros((7, 7)); img[4:, :3] = 0.5                  # a brighter patch on the left
    r = fill_region(m, [0, 0], img, tolerance=0.1)
    assert r[:4, :3].all() and not r[4:].any() and not r[:, 3:].any()
    with pytest.raises(ValueError, match='outside the 7x7 image'):
        fill_region(m, [7, 0])
    with pytest.raises(ValueError, match='needs the image'):
        fill_region(m, [0, 0], tolerance=0.1)


# ---- MaskPainter: files ----------------------------------------------------------------------------------------------

def test_saved_values_binary_and_multiclass(tmp_path, img):
    w = MaskPainter(img, image_path=tmp_path / 'b.tif')
    w.stroke([[2, 2], [2, 8]], 1, 1)
    p = w.save()
    assert p == tmp_path / 'b_label.png'
    assert np.array_equal(np.asarray(Image.open(p)), w.mask * 255)        # binary: 0/255
    assert np.array_equal(read_mask(p), w.mask)
    w3 = MaskPainter(img, classes=('bg', 'a', 'b'), image_path=tmp_path / 'c.tif')
    w3.stroke([[2, 2]], 2, 1); w3.stroke([[9, 9]], 1, 1)
    p3 = w3.save()
    assert np.array_equal(np.asarray(Image.open(p3)), w3.mask)           # more classes: the index
    assert np.array_equal(read_mask(p3, n_classes=3), w3.mask)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        w.save()
    with pytest.raises(ValueError, match='outside|neither binary'):
        MaskPainter(img, mask=p3)                                         # a 3-class label for a 2-class painter


def test_saved_labels_are_what_the_package_trainer_reads(tmp_path):
    "index_folder pairs `<name>_label.png` with `<name>.<ext>`; read_mask / load_labeled give the painted classes."
    from temlearn.data import index_folder, load_labeled
    im = tmp_path / 'frame7.tif'
    Image.fromarray(np.random.default_rng(1).integers(0, 60000, (24, 32)).astype(np.uint16)).save(im)
    w = MaskPainter(im)
    w.stroke([[5, 5], [5, 20]], 1, 2)
    w.save()
    df = index_folder(tmp_path)
    assert len(df) == 1 and df.mask_path[0] == str(tmp_path / 'frame7_label.png')
    assert np.array_equal(read_mask(df.mask_path[0]), w.mask)
    ims, masks, _, names = load_labeled(tmp_path)
    assert len(ims) == 1 and np.array_equal(masks[0], w.mask)


def test_save_beside_the_image_and_resume(tmp_path, img):
    p = tmp_path / 'grid_03.png'
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
    w = MaskPainter(p, classes=('bg', 'a', 'b'))
    frontend_msg(w, {'type': 'stroke', 'class': 2, 'radius': 3, 'points': [[10, 10], [20, 30]]})
    frontend_msg(w, {'type': 'fill', 'class': 1, 'point': [0, 0]})
    out = w.save()
    assert out == tmp_path / 'grid_03_label.png' == label_path_for(p) == w.label_path
    assert np.array_equal(np.asarray(Image.open(out)), w.mask)            # 3 classes: values 0..2
    before = out.read_bytes()
    frontend_msg(w, {'type': 'undo'})
    with pytest.raises(FileExistsError, match='overwrite=True'):
        w.save()
    assert out.read_bytes() == before                                     # untouched
    w2 = MaskPainter.from_files(p, classes=('bg', 'a', 'b'))              # after a kernel restart
    assert np.array_equal(w2.mask, read_mask(out, 3)) and w2.mask.max() == 2
    w.save(overwrite=True)
    assert np.array_equal(read_mask(out, 3), w.mask)
    sub = tmp_path / 'labels'; sub.mkdir()
    assert w.save(sub) == sub / 'grid_03_label.png'
    assert sorted(q.name for q in tmp_path.iterdir()) == ['grid_03.png', 'grid_03_label.png', 'labels']   # no temp files
    assert MaskPainter.from_files(tmp_path / 'grid_03.png', classes=('bg', 'a', 'b')).can_undo is False


def test_save_needs_a_name_for_arrays_and_never_writes_over_the_image(tmp_path, img):
    w = MaskPainter(img)
    assert w.label_path is None
    with pytest.raises(ValueError, match='did not come from a file'):
        w.save()
    with pytest.raises(ValueError, match='did not come from a file'):
        w.save(tmp_path)                                                  # a folder, but no name to use
    assert w.save(tmp_path / 'x_label.png').is_file()
    assert MaskPainter(img, image_path=tmp_path / 'y.tif').label_path == tmp_path / 'y_label.png'
    im = tmp_path / 'z.png'
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(im)
    with pytest.raises(ValueError, match='over the image itself'):
        MaskPainter(im).save(im, overwrite=True)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        w.save(tmp_path / 'no' / 'x_label.png')


# ---- MaskPainter: the widget, driven with front-end messages ---------------------------------------------------------

def test_stroke_message_paints_exactly_the_footprint(img):
    w = MaskPainter(img)
    pts = [[3.2, 4.7], [10.0, 20.5], [12, 21]]
    frontend_msg(w, {'type': 'stroke', 'class': 1, 'radius': 2.5, 'points': pts, 'seq': 7})
    assert np.array_equal(w.mask, brute_stroke(img.shape, pts, 2.5).astype(np.uint8))
    assert w._ack == 7 and np.array_equal(decode_mask(w._mask_bytes), w.mask)      # what the canvas gets
    assert w.can_undo and not w.can_redo


def test_eraser_fill_undo_redo(img):
    w = MaskPainter(img, classes=('background', 'particle', 'void'))
    ring = [[5, 5], [5, 15], [15, 15], [15, 5], [5, 5]]
    frontend_msg(w, {'type': 'stroke', 'class': 1, 'radius': 0.5, 'points': ring, 'seq': 1})
    m_ring = w.mask
    frontend_msg(w, {'type': 'fill', 'class': 2, 'point': [10, 10], 'tolerance': None, 'seq': 2})
    m_fill = w.mask
    inside = np.zeros(img.shape, bool); inside[6:15, 6:15] = True
    assert np.array_equal(m_fill == 2, inside) and np.array_equal(m_fill == 1, m_ring == 1)
    frontend_msg(w, {'type': 'stroke', 'class': 0, 'radius': 1, 'points': [[10, 0], [10, 39]], 'seq': 3})  # eraser
    assert not w.mask[9:12].any() and w.mask[8, 10] == 2 and w.mask[12, 10] == 2
    frontend_msg(w, {'type': 'undo', 'seq': 4})
    assert np.array_equal(w.mask, m_fill) and w._ack == 4
    frontend_msg(w, {'type': 'undo'})
    assert np.array_equal(w.mask, m_ring)
    frontend_msg(w, {'type': 'redo'})
    assert np.array_equal(w.mask, m_fill)
    frontend_msg(w, {'type': 'stroke', 'class': 1, 'radius': 0, 'points': [[0, 0]]})
    assert not w.can_redo                                     # a new edit drops the redo history
    for _ in range(5): frontend_msg(w, {'type': 'undo'})
    assert not w.mask.any() and not w.can_undo


def test_fill_tolerance_follows_the_displayed_image():
    a = np.zeros((20, 20), np.float32); a[5:12, 5:12] = 1000                # one bright particle
    w = MaskPainter(a)
    frontend_msg(w, {'type': 'fill', 'class': 1, 'point': [8, 8], 'tolerance': 0.2})
    assert np.array_equal(w.mask == 1, a > 0)


def test_correcting_a_prediction(img):
    pred = np.zeros(img.shape, bool); pred[2:8, 2:8] = True; pred[20:25, 30:35] = True   # one false positive
    w = MaskPainter(img, mask=pred)
    assert np.array_equal(w.mask, pred.astype(np.uint8))
    frontend_msg(w, {'type': 'fill', 'class': 0, 'point': [22, 32]})                       # remove it
    frontend_msg(w, {'type': 'stroke', 'class': 1, 'radius': 1, 'points': [[8, 2], [8, 7]]})  # grow the other
    expect = pred.copy(); expect[20:25, 30:35] = False
    expect |= brute_stroke(img.shape, [[8, 2], [8, 7]], 1)
    assert np.array_equal(w.mask, expect.astype(np.uint8))
    assert np.array_equal(MaskPainter(img, mask=pred.astype(np.uint8) * 255).mask, pred)   # 0/255 accepted
    torch = pytest.importorskip('torch')
    assert np.array_equal(MaskPainter(img, mask=torch.from_numpy(pred.astype(np.int64))).mask, pred)


def test_set_mask_is_one_undo_step(img):
    w = MaskPainter(img)
    w.stroke([[1, 1]], 1, 0)
    new = np.zeros(img.shape, np.uint8); new[10:20, 10:20] = 1
    w.mask = new
    assert np.array_equal(w.mask, new)
    w.undo()
    assert w.mask.sum() == 1
    with pytest.raises(ValueError, match='does not match the image shape'):
        w.set_mask(np.zeros((3, 3)))


def test_bad_messages_leave_the_mask_alone(img):
    w = MaskPainter(img)
    w.stroke([[1, 1]], 1, 1)
    m = w.mask
    bad = [({'type': 'stroke', 'class': 5, 'radius': 1, 'points': [[1, 1]]}, 'class 5 is out of range 0..1'),
           ({'type': 'stroke', 'class': 1, 'radius': -1, 'points': [[1, 1]]}, 'radius must be a finite number >= 0'),
           ({'type': 'stroke', 'class': 1, 'radius': 1, 'points': [[1, 'x']]}, ''),
           ({'type': 'stroke', 'class': 1, 'radius': 1, 'points': [[1, float('nan')]]}, 'NaN'),
           ({'type': 'stroke', 'class': 1, 'radius': 1, 'points': 'abc'}, 'stroke points must be a list'),
           ({'type': 'stroke', 'class': 1, 'radius': '3', 'points': [[1, 1]]}, 'radius must be a number'),
           ({'type': 'stroke', 'class': 1, 'points': [[1, 1]]}, "needs 'radius'"),
           ({'type': 'fill', 'class': 1, 'point': [99, 1]}, 'outside the 30x40 image'),
           ({'type': 'fill', 'class': True, 'point': [1, 1]}, 'class must be a class index'),
           ({'type': 'fill', 'class': 1, 'point': [1, 1], 'tolerance': -2}, 'tolerance must be >= 0'),
           ({'type': 'paint'}, 'unknown message type')]
    for msg, text in bad:
        with pytest.warns(UserWarning):
            frontend_msg(w, msg)
        assert text in w.error and np.array_equal(w.mask, m), msg
    with pytest.raises(ValueError, match='class 5 is out of range'):
        w.handle_message(bad[0][0])
    frontend_msg(w, {'type': 'undo', 'seq': 9})
    assert w.error == '' and w._ack == 9


def test_settings_from_the_browser_are_validated(img):
    w = MaskPainter(img)
    frontend_set(w, tool='fill', radius=7.5, current_class=0, opacity=0.25)
    assert (w.tool, w.radius, w.current_class, w.opacity) == ('fill', 7.5, 0, 0.25)
    frontend_set(w, tool='lasso')
    assert w.tool == 'fill' and 'tool' in w.error
    frontend_set(w, current_class=2)
    assert w.current_class == 0
    frontend_set(w, high=0.1)
    assert w.high == 99.5 and 'contrast' in w.error


def test_contrast_changes_the_displayed_image_only(img):
    w = MaskPainter(img)
    w.stroke([[4, 4]], 1, 2)
    uri, m = w._image_uri, w.mask
    frontend_set(w, low=10.0)
    assert w._image_uri != uri and np.array_equal(w.mask, m)


def test_on_change_and_undo_limit(img):
    w = MaskPainter(img, max_undo=3)
    calls = []
    w.on_change(lambda p: calls.append(int(p.mask.sum())))
    for i in range(5): frontend_msg(w, {'type': 'stroke', 'class': 1, 'radius': 0, 'points': [[i, 0]]})
    assert calls == [1, 2, 3, 4, 5]
    for _ in range(5): frontend_msg(w, {'type': 'undo'})
    assert w.mask.sum() == 2                                  # only the last 3 edits can be undone


@pytest.mark.parametrize('kw, exc, match', [
    (dict(image=np.zeros((4, 4)), classes=('only',)), ValueError, 'at least 2 classes'),
    (dict(image=np.zeros((4, 4)), classes=[str(i) for i in range(70)]), ValueError, 'at most 64 classes'),
    (dict(image=np.zeros((4, 4)), mask=np.zeros((4, 5))), ValueError, r'mask shape \(4, 5\) does not match'),
    (dict(image=np.zeros((4, 4)), mask=np.full((4, 4), 0.5)), ValueError, 'class labels'),
    (dict(image=np.zeros((4, 4)), mask=np.full((4, 4), 3)), ValueError, 'the 2 classes'),
    (dict(image=np.zeros((4, 4)), low=90, high=10), ValueError, '0 <= low < high <= 100'),
    (dict(image='/nonexistent/x.tif'), FileNotFoundError, 'x.tif'),
    (dict(image=np.zeros(4)), ValueError, 'expected a 2-D image'),
    (dict(image=np.full((4, 4), np.nan)), ValueError, 'NaN'),
])
def test_constructor_errors_painter(kw, exc, match):
    with pytest.raises(exc, match=match):
        MaskPainter(**kw)


# ---- property: any message sequence equals a plain reference model ----------------------------------------------------

op = st.one_of(
    st.fixed_dictionaries({'type': st.just('stroke'), 'class': st.integers(0, 2), 'radius': st.floats(0, 4),
                           'points': st.lists(st.tuples(st.floats(-3, 14), st.floats(-3, 18)).map(list),
                                              min_size=1, max_size=4)}),
    st.fixed_dictionaries({'type': st.just('fill'), 'class': st.integers(0, 2),
                           'point': st.tuples(st.integers(0, 11), st.integers(0, 15)).map(list)}),
    st.fixed_dictionaries({'type': st.sampled_from(['undo', 'redo'])}))


@settings(max_examples=40, deadline=None)
@given(st.lists(op, max_size=12))
def test_message_sequences_match_a_reference_model(msgs):
    img = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    w = MaskPainter(img, classes=('a', 'b', 'c'))
    cur, undo, redo = np.zeros(img.shape, np.uint8), [], []
    for m in msgs:
        frontend_msg(w, m)
        if m['type'] == 'undo':
            if undo: redo.append(cur); cur = undo.pop()
        elif m['type'] == 'redo':
            if redo: undo.append(cur); cur = redo.pop()
        else:
            new = cur.copy()
            if m['type'] == 'stroke': new[brute_stroke(img.shape, m['points'], m['radius'])] = m['class']
            else: new[fill_region(cur, m['point'])] = m['class']
            if not np.array_equal(new, cur): undo.append(cur); redo.clear(); cur = new
        assert np.array_equal(w.mask, cur)
        assert np.array_equal(decode_mask(w._mask_bytes), cur)
        assert w.can_undo == bool(undo) and w.can_redo == bool(redo)
