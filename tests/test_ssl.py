"Tests for temlearn.ssl: losses vs reference formulas, schedule, encoder files, settings, pretraining, resume, CLI, DDP."
import json, math, os, shutil, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from temlearn.core import TEMImage
from temlearn.io import write_tiff
from temlearn.augment import EMAugment
from temlearn.core import run_cli
from temlearn.reference import ntxent_loop, barlow_loop
from temlearn.ssl import (BarlowTwinsLoss, NTXentLoss, Projector, EncoderFileError, create_encoder, save_encoder,
                          load_encoder, encoder_input, warmup_cosine, pretrain, pretrain_cli, load_images,
                          effective_rank, embedding_std, knn_accuracy, TensorBatchDL, PretrainConfig)
from fastai.callback.core import Callback, CancelFitException


def pretrain_cmd(argv, tiles='0'):
    "Exit status of `temlearn-pretrain argv`; whole frames (`--tiles 0`) unless `argv` or `tiles` says otherwise (CPU default: 512 tiles)."
    argv = [str(a) for a in argv]
    return run_cli(pretrain_cli, argv + (['--tiles', tiles] if tiles is not None and '--tiles' not in argv else []))


_ntxent_ref, _barlow_ref = ntxent_loop, barlow_loop        # the package's one home for reference formulas


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 9), d=st.integers(1, 7), seed=st.integers(0, 10_000), t=st.floats(0.05, 2.0))
def test_losses_match_reference(n, d, seed, t):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(n, d, generator=g) * 3, torch.randn(n, d, generator=g)
    assert abs(NTXentLoss(t)(z1, z2).item() - _ntxent_ref(z1.numpy(), z2.numpy(), t)) < 1e-3 * max(1, abs(_ntxent_ref(z1.numpy(), z2.numpy(), t)))
    ref = _barlow_ref(z1.numpy(), z2.numpy(), 0.005)
    assert abs(BarlowTwinsLoss(0.005)(z1, z2).item() - ref) < 1e-3 * max(1, ref)


def test_barlow_redundancy_term_counts():
    "Off-diagonal correlations must change the loss by λ·Σ C_ij² (the original code effectively dropped it)."
    g = torch.Generator().manual_seed(1)
    base = torch.randn(256, 1, generator=g)
    z = torch.cat([base, base], 1)          # two perfectly correlated dimensions: C = all ones
    l = BarlowTwinsLoss(0.5)(z, z).item()
    assert abs(l - 0.5 * 2) < 1e-3          # diagonal 0, two off-diagonal entries of 1


def test_losses_finite_on_constant_features_and_grads():
    z = torch.ones(8, 4, requires_grad=True)
    for loss in (BarlowTwinsLoss(), NTXentLoss()):
        v = loss(z, z)
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(z.grad).all()
        z.grad = None
    with pytest.raises(ValueError, match='at least 2'):
        BarlowTwinsLoss()(torch.ones(1, 4), torch.ones(1, 4))


def test_projector_default_layout():
    p = Projector(2048)
    names = [type(m).__name__ for m in p]
    assert names == ['Linear', 'BatchNorm1d', 'ReLU', 'Linear', 'BatchNorm1d', 'ReLU', 'Linear', 'BatchNorm1d']
    assert [m.out_features for m in p if isinstance(m, torch.nn.Linear)] == [128, 64, 1024]
    with pytest.raises(ValueError): Projector(8, (4, 0))


@settings(max_examples=30, deadline=None)
@given(total=st.integers(2, 5000), warm=st.floats(0, 0.5), lr=st.floats(0.01, 1.0))
def test_schedule_reaches_end_only_at_last_step(total, warm, lr):
    lrs = np.array([warmup_cosine(s, total, lr, warm, 1e-3) for s in range(total)])
    assert abs(lrs[-1] - lr * 1e-3) < 1e-12
    assert (lrs[:-1] > lrs[-1]).all()
    assert lrs.max() <= lr + 1e-12
    with pytest.raises(ValueError): warmup_cosine(total, total, lr)


def test_schedule_original_bug_absent():
    "The original code's cosine schedule reached 0 at step 1000 of 2600; ours is still well above half-way there."
    assert warmup_cosine(1000, 2600, 0.2) > 0.1
    assert warmup_cosine(2000, 2600, 0.2) > 0.01


def test_encoder_roundtrip_and_errors(tmp_path):
    enc = create_encoder('resnet10t', in_chans=1, input_size=32).eval()
    d = save_encoder(enc, tmp_path / 'e', method='simclr', epochs=7, data_fingerprint='x')
    meta = json.loads((d / 'encoder.json').read_text())
    for k in ('arch', 'in_chans', 'input_size', 'mean', 'std', 'method', 'epochs', 'data_fingerprint'):
        assert k in meta
    e2 = load_encoder(d)
    x = encoder_input([np.random.default_rng(0).random((40, 40))], e2.temlearn_meta)
    assert x.shape == (1, 1, 32, 32)
    torch.testing.assert_close(enc(x), e2(x))
    # mismatched channels
    meta['in_chans'] = 3; (d / 'encoder.json').write_text(json.dumps(meta))
    with pytest.raises(EncoderFileError, match='wrong shape'):
        load_encoder(d)
    meta['in_chans'] = 1; meta['arch'] = 'not_a_model'; (d / 'encoder.json').write_text(json.dumps(meta))
    with pytest.raises(EncoderFileError, match='unknown timm architecture'):
        load_encoder(d)
    (d / 'encoder.safetensors').unlink()
    with pytest.raises(EncoderFileError, match='encoder.safetensors: missing'):
        load_encoder(d)


def test_encoder_input_rgb_normalisation():
    enc = create_encoder('resnet10t', in_chans=3)
    a = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    x = encoder_input([a], enc.temlearn_meta, size=64)
    gray = x[0] * torch.tensor(enc.temlearn_meta['std']).view(3, 1, 1) + torch.tensor(enc.temlearn_meta['mean']).view(3, 1, 1)
    torch.testing.assert_close(gray[0], gray[1]); torch.testing.assert_close(gray[1], gray[2])
    assert gray.min() >= -1e-6 and gray.max() <= 1 + 1e-6
    assert enc(x).shape == (1, enc.num_features)


def test_monitors_detect_collapse():
    g = torch.Generator().manual_seed(0)
    good = torch.randn(128, 64, generator=g)
    collapsed = torch.randn(1, 64, generator=g).expand(128, 64) + 1e-4 * good
    assert embedding_std(good) > 0.8 and embedding_std(collapsed) < 0.05
    assert effective_rank(good) > 40 and effective_rank(torch.randn(128, 1, generator=g) * torch.ones(1, 64)) < 1.5
    y = np.repeat([0, 1, 2], 10)
    f = torch.eye(3)[y] * 5 + 0.1 * torch.randn(30, 3, generator=g)
    assert knn_accuracy(f, y) == 1.0


def test_tensor_dl_shards_cover_epoch():
    x = torch.arange(24.).view(24, 1, 1, 1)
    parts = [TensorBatchDL(x, bs=4, seed=5).shard(r, 3) for r in range(3)]
    seen = [int(v) for p in parts for b in p for v in b[0].flatten()]
    assert sorted(seen) == list(range(24))


def _imgs(n, size=32, seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=(size, size)).cumsum(0).cumsum(1) for _ in range(n)]


class _Crash(Callback):
    def __init__(self, n): self.n = n
    def before_epoch(self):
        if self.epoch >= self.n: raise CancelFitException()


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    ims = _imgs(16)
    kw = dict(method='barlow', arch='resnet10t', size=32, bs=8, epochs=3, ckpt_every=1, projector=(16, 16),
              progress=False)
    full = pretrain(ims, out=tmp_path / 'full', **kw)
    cut = pretrain(ims, out=tmp_path / 'cut', cbs=[_Crash(1)], **kw)
    assert cut.temlearn_meta['epochs'] == 1
    res = pretrain(ims, out=tmp_path / 'cut', resume=True, **kw)
    assert res.temlearn_meta['epochs'] == 3
    for a, b in zip(full.state_dict().values(), res.state_dict().values()):
        torch.testing.assert_close(a, b)
    # different data → refused
    with pytest.raises(ValueError, match='different data'):
        pretrain(_imgs(16, seed=9), out=tmp_path / 'cut', resume=True, **kw)


def test_pretrain_with_knn_monitor_and_lars(tmp_path):
    ims = _imgs(16)
    lab = _imgs(8, seed=3)
    enc = pretrain(ims, method='simclr', arch='resnet10t', size=32, bs=8, epochs=1, projector=(16, 16),
                   optimizer='lars', knn_data=(lab, [0, 1] * 4), progress=False, out=tmp_path)
    h = enc.temlearn_history
    assert len(h) == 1 and 0 <= h[0]['knn_acc'] <= 1 and h[0]['emb_std'] > 0
    assert (tmp_path / 'history.csv').exists()


def test_inputs_not_modified_and_bad_inputs():
    ims = _imgs(8)
    copies = [a.copy() for a in ims]
    load_images(ims, 16)
    for a, b in zip(ims, copies): np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r'image 1.*NaN'):
        load_images([ims[0], np.full((8, 8), np.nan)], 16)
    with pytest.raises(ValueError, match='method'):
        pretrain(ims, method='moco')
    with pytest.raises(ValueError, match='resume=True needs out'):
        pretrain(ims, arch='resnet10t', resume=True)


def test_cli_on_folder_of_microscope_files(tmp_path, capsys):
    raw = tmp_path / 'raw'
    for i, a in enumerate(_imgs(8, 40)):
        write_tiff(TEMImage(a.astype(np.float32), pixel_size=0.2), raw / f'frame{i}.tif')
    (raw / 'frame0_label.png').write_bytes(b'not an image')       # masks are skipped
    lab = tmp_path / 'lab'
    for c in ('a', 'b'):
        for i, a in enumerate(_imgs(3, 40, seed=ord(c))):
            write_tiff(TEMImage(a.astype(np.float32)), lab / c / f'{i}.tif')
    rc = pretrain_cmd(['--data', str(raw), '--out', str(tmp_path / 'enc'), '--arch', 'resnet10t', '--size', '32',
                       '--bs', '4', '--epochs', '2', '--projector', '8,8', '--method', 'simclr', '--knn', str(lab),
                       '--no-progress'])
    assert rc == 0
    assert 'wrote' in capsys.readouterr().out
    e = load_encoder(tmp_path / 'enc')
    assert e.temlearn_meta['method'] == 'simclr' and e.temlearn_meta['epochs'] == 2
    (raw / 'broken.tif').write_bytes(b'garbage')
    rc = pretrain_cmd(['--data', str(raw), '--out', str(tmp_path / 'enc2'), '--arch', 'resnet10t', '--size', '32',
                       '--bs', '4', '--epochs', '1', '--no-progress'])
    assert rc == 1 and 'broken.tif' in capsys.readouterr().err


def test_source_size_views_and_errors(tmp_path):
    "Views cut from larger sources keep the training size; bad combinations are refused; the CLI passes it on."
    ims = _imgs(8, 64)
    shapes = []
    class Spy(Callback):
        order = 60
        def before_batch(self): shapes.append(tuple(self.learn.xb[0].shape))
    enc = pretrain(ims, method='barlow', arch='resnet10t', size=32, source_size=64, bs=4, epochs=1, projector=(8, 8),
                   progress=False, out=tmp_path / 'enc', cbs=[Spy()])
    assert shapes and all(s[-2:] == (32, 32) for s in shapes)
    assert enc.temlearn_meta['input_size'] == 32 and enc.temlearn_meta['pretrain']['source_size'] == 64
    meta = json.loads((tmp_path / 'enc' / 'encoder.json').read_text())
    assert meta['input_size'] == 32
    with pytest.raises(ValueError, match='source_size'):
        pretrain(ims, arch='resnet10t', size=32, source_size=16)
    with pytest.raises(ValueError, match='must output size=32'):
        pretrain(ims, arch='resnet10t', size=32, source_size=64, aug=EMAugment(size=None))
    # a checkpoint written before source_size existed resumes as source_size == size
    kw = dict(method='barlow', arch='resnet10t', size=32, bs=4, epochs=2, projector=(8, 8), progress=False)
    pretrain(ims, epochs=1, **{k: v for k, v in kw.items() if k != 'epochs'}, out=tmp_path / 'old')
    sj = tmp_path / 'old' / 'checkpoint' / 'state.json'
    doc = json.loads(sj.read_text()); del doc['state']['config']['source_size']; sj.write_text(json.dumps(doc))
    assert pretrain(ims, **kw, out=tmp_path / 'old', resume=True).temlearn_meta['epochs'] == 2
    # resuming with another source size is refused (the views would change mid-run)
    with pytest.raises(ValueError, match='different settings'):
        pretrain(ims, method='barlow', arch='resnet10t', size=32, source_size=48, bs=4, epochs=2, projector=(8, 8),
                 progress=False, out=tmp_path / 'enc', resume=True)
    raw = tmp_path / 'raw'
    for i, a in enumerate(ims):
        write_tiff(TEMImage(a.astype(np.float32), pixel_size=0.2), raw / f'frame{i}.tif')
    assert pretrain_cmd(['--data', str(raw), '--out', str(tmp_path / 'cli'), '--arch', 'resnet10t', '--size', '32',
                         '--source-size', '64', '--bs', '4', '--epochs', '1', '--projector', '8,8', '--no-progress']) == 0
    assert load_encoder(tmp_path / 'cli').temlearn_meta['input_size'] == 32


def test_config_presets_and_checks():
    p = PretrainConfig.paper()
    assert (p.arch, p.size, p.bs, p.epochs, p.lr, p.projector, p.augment) == ('resnet50', 224, 64, 200, 0.2, (128, 64, 1024), 'paper')
    assert PretrainConfig.paper('simclr').resolved().crop == 'nocrop'
    assert PretrainConfig.paper(epochs=50).epochs == 50 and PretrainConfig.small(seed=3).seed == 3
    assert PretrainConfig() == PretrainConfig(method='barlow', arch='resnet50', size=224, bs=64, epochs=200, lr=0.2)  # defaults kept
    with pytest.raises(ValueError, match='bs must be an integer >= 2'): PretrainConfig(bs=1).check()
    with pytest.raises(ValueError, match='precision must be one of'): PretrainConfig(precision='fp8').check()


def test_config_object_and_keywords_agree():
    ims = _imgs(8)
    cfg = PretrainConfig(arch='resnet10t', size=32, bs=4, epochs=1, projector=(8, 8))
    a = pretrain(ims, cfg, progress=False)
    b = pretrain(ims, arch='resnet10t', size=32, bs=4, epochs=1, projector=(8, 8), progress=False)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()): torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a.temlearn_meta['pretrain']['arch'] == 'resnet10t'
    with pytest.raises(TypeError, match='unknown settings'): pretrain(ims, cfg, batch_size=4)


def test_run_folder_holds_no_pickle(tmp_path):
    "The output folder: encoder, history and a checkpoint of JSON + safetensors only."
    pretrain(_imgs(8), arch='resnet10t', size=32, bs=4, epochs=2, ckpt_every=1, projector=(8, 8), progress=False, out=tmp_path / 'o')
    files = sorted(p.relative_to(tmp_path / 'o').as_posix() for p in (tmp_path / 'o').rglob('*') if p.is_file())
    assert files == ['checkpoint/state.json', 'checkpoint/tensors.safetensors', 'encoder.json', 'encoder.safetensors', 'history.csv']
    st = json.loads((tmp_path / 'o' / 'checkpoint' / 'state.json').read_text())['state']
    assert st['epoch'] == 2 and [r['epoch'] for r in st['history']] == [1, 2]


_DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys, numpy as np, torch
    from fastai.callback.core import Callback
    from temlearn.ssl import pretrain
    class Spy(Callback):
        order = 90
        def after_epoch(self):
            self.info = dict(n_iter=self.n_iter, model=type(self.learn.model).__name__)
    spy = Spy()
    r = np.random.default_rng(0)
    ims = [r.normal(size=(32, 32)).cumsum(0).cumsum(1) for _ in range(16)]
    enc = pretrain(ims, method='barlow', arch='resnet10t', size=32, bs=4, epochs=2, projector=(8, 8),
                   device='cpu', progress=False, out=sys.argv[1], cbs=[spy])
    rank = int(os.environ['RANK'])
    w = float(sum(p.double().sum() for p in enc.parameters()))
    json.dump(dict(rank=rank, weights=w, **spy.info), open(f"{sys.argv[1]}/rank{rank}.json", 'w'))
''')


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    "Data-parallel training with 2 CPU processes (gloo) through fastai's DistributedTrainer."
    torchrun = shutil.which('torchrun') or str(Path(sys.executable).parent / 'torchrun')
    script = tmp_path / 'ddp.py'; script.write_text(_DDP_SCRIPT)
    out = tmp_path / 'out'; out.mkdir()
    res = subprocess.run([torchrun, '--standalone', '--nproc_per_node', '2', str(script), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    infos = [json.loads((out / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert all(i['model'] == 'DistributedDataParallel' for i in infos)
    assert all(i['n_iter'] == 16 // 2 // 4 for i in infos)                 # each rank saw half of the data
    assert abs(infos[0]['weights'] - infos[1]['weights']) < 1e-6 * abs(infos[0]['weights'])   # in sync
    assert (out / 'encoder.safetensors').exists()


def test_cli_tiles_at_native_scale(tmp_path, capsys):
    "--tiles N trains on N native-scale tiles (optionally resampled to --pixel-size-nm); bad combinations exit 2."
    raw = tmp_path / 'raw'
    for i, a in enumerate(_imgs(2, 160)): write_tiff(TEMImage(a.astype(np.float32), pixel_size=0.5), raw / f'big{i}.tif')
    base = ['--data', str(raw), '--arch', 'resnet10t', '--size', '16', '--source-size', '32', '--bs', '4', '--epochs', '1',
            '--projector', '8,8', '--method', 'simclr', '--no-progress']
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'a'), '--tiles', '12']) == 0
    assert 'n=12 size=32' in load_encoder(tmp_path / 'a').temlearn_meta['data_fingerprint']
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'b'), '--tiles', '8', '--pixel-size-nm', '1.0']) == 0
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'c'), '--pixel-size-nm', '1.0']) == 2   # with --tiles 0
    # on a CPU, no --tiles means 512 native tiles of --source-size px (cli_settings)
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'e'), '--bs', '64'], tiles=None) == 0
    assert 'n=512 size=32' in load_encoder(tmp_path / 'e').temlearn_meta['data_fingerprint']
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'd'), '--tiles', '-3']) == 2
    assert '--tiles' in capsys.readouterr().err


def test_cli_dense_term(tmp_path, capsys):
    "--dense W adds the local VICReg term: recorded in the encoder's metadata; a negative weight exits 2 naming it."
    raw = tmp_path / 'raw'
    for i, a in enumerate(_imgs(8, 48)): write_tiff(TEMImage(a.astype(np.float32), pixel_size=0.5), raw / f'im{i}.tif')
    base = ['--data', str(raw), '--arch', 'resnet10t', '--size', '32', '--bs', '4', '--epochs', '1', '--projector', '8,8',
            '--method', 'simclr', '--no-progress']
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'a'), '--dense', '0.5']) == 0
    meta = load_encoder(tmp_path / 'a').temlearn_meta
    assert meta['pretrain']['dense'] == 0.5
    assert pretrain_cmd(base + ['--out', str(tmp_path / 'b'), '--dense', '-1']) == 2
    assert 'dense must be' in capsys.readouterr().err
    assert not (tmp_path / 'b' / 'encoder.safetensors').exists()
