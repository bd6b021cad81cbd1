"""Issue 11 / 17 cases for self-supervised pretraining (`temlearn.ssl`, `temlearn-pretrain`), each with its exact input.

Every case failed on the code before the fix (the table with the old behaviour is in the note on issue 11), except the
two marked "guarantee", which check properties the old code already had and the new code must keep.
The file also runs against the old package (`pretrain_cli(argv)` returning an int), which is how "before" was observed.
"""
import inspect
import json, os, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

import temlearn.ssl as ssl
from temlearn.core import TEMImage
from temlearn.io import write_tiff
from fastai.callback.core import Callback, CancelFitException

try: from temlearn.core import run_cli
except ImportError: run_cli = None                     # the old package: CLIs were argparse functions


def _cli(argv):
    "Exit status of `temlearn-pretrain argv` (new: run_cli; old: the argparse function, SystemExit caught)."
    argv = [str(a) for a in argv]
    if run_cli is not None and hasattr(ssl.pretrain_cli, 'main'):        # whole frames: the CPU default of 512 tiles is tested elsewhere
        return run_cli(ssl.pretrain_cli, argv + (['--tiles', '0'] if '--tiles' not in argv and 'tiles' in inspect.signature(ssl.pretrain_cli).parameters else []))
    try: return ssl.pretrain_cli(argv)
    except SystemExit as e: return e.code


def _ims(n=8, size=32, seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=(size, size)).cumsum(0).cumsum(1).astype(np.float32) for _ in range(n)]


@pytest.fixture
def raw(tmp_path):
    "A folder of 8 small TIFF frames."
    d = tmp_path / 'raw'
    for i, a in enumerate(_ims()): write_tiff(TEMImage(a, pixel_size=0.2), d / f'frame{i}.tif')
    return d


TINY = ['--arch', 'resnet10t', '--size', '16', '--bs', '4', '--epochs', '1', '--projector', '8,8', '--no-progress']
KW = dict(method='barlow', arch='resnet10t', size=16, bs=4, projector=(8, 8), progress=False)


class _Evil:
    "A pickle that creates a folder when it is loaded (stands for any command)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.makedirs, (self.marker,))


def _plant(path, marker):
    "Write a malicious checkpoint (torch.save's format: a zip holding a pickle) to `path`."
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'model': _Evil(marker), 'epoch': 1}, path)


# ---------------------------------------------------------------------------------------- 1. code execution on resume
def test_planted_checkpoint_pt_runs_no_code(raw, tmp_path, capsys):
    "A malicious `<out>/checkpoint.pt` and `--resume`: nothing runs, exit 1, the message names the file."
    out, marker = tmp_path / 'out', tmp_path / 'PWNED'
    _plant(out / 'checkpoint.pt', marker)
    rc = _cli(['--data', raw, '--out', out, '--resume'] + TINY)
    err = capsys.readouterr().err
    assert not marker.exists(), "loading the checkpoint ran code"
    assert rc == 1 and 'checkpoint.pt' in err.strip().splitlines()[-1]


def test_planted_tensor_file_runs_no_code(raw, tmp_path, capsys):
    "A real run's checkpoint files replaced by a malicious pickle: nothing runs, resume refused naming the file."
    out, marker = tmp_path / 'out', tmp_path / 'PWNED'
    assert _cli(['--data', raw, '--out', out] + TINY) == 0
    files = [p for p in out.rglob('*') if p.is_file() and 'checkpoint' in str(p.relative_to(out))]
    assert files
    for p in files: _plant(p, marker)
    capsys.readouterr()
    rc = _cli(['--data', raw, '--out', out, '--resume'] + TINY[:-3] + ['--epochs', '2', '--projector', '8,8', '--no-progress'])
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists(), "loading the checkpoint ran code"
    assert rc == 1 and 'checkpoint' in err[-1]


# --------------------------------------------------------------------------------- 3. non-empty --out is not reused
def test_non_empty_out_refused(raw, tmp_path, capsys):
    "`--out` holding other files, no --resume: refused (exit 1) and untouched; with --overwrite the run proceeds."
    out = tmp_path / 'out'; out.mkdir(); (out / 'notes.txt').write_text('my notes')
    rc = _cli(['--data', raw, '--out', out] + TINY)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and 'not empty' in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ['notes.txt'] and (out / 'notes.txt').read_text() == 'my notes'
    assert _cli(['--data', raw, '--out', out, '--overwrite'] + TINY) == 0
    assert (out / 'encoder.safetensors').exists() and (out / 'notes.txt').read_text() == 'my notes'   # results replaced, notes kept


# ----------------------------------------------------------------------------------------------- 4. half-written saves
def test_interrupted_final_save_keeps_previous_encoder(tmp_path, monkeypatch):
    "A failure while writing encoder.json at the end of a resumed run leaves the previous, consistent encoder."
    ims, out = _ims(), tmp_path / 'out'
    ssl.pretrain(ims, out=out, epochs=1, ckpt_every=1, **KW)
    before = ssl.load_encoder(out)
    real = Path.write_text
    def failing(self, *a, **k):
        if self.name == 'encoder.json': raise OSError(28, 'No space left on device (simulated)')
        return real(self, *a, **k)
    monkeypatch.setattr(Path, 'write_text', failing)
    with pytest.raises(OSError, match='simulated'):
        ssl.pretrain(ims, out=out, resume=True, epochs=2, ckpt_every=1, **KW)
    monkeypatch.undo()
    after = ssl.load_encoder(out)
    assert after.temlearn_meta['epochs'] == 1
    for a, b in zip(before.state_dict().values(), after.state_dict().values()): torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not hasattr(ssl, 'PretrainConfig'), reason='guarantee of the new checkpoint format')
def test_interrupted_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    "Guarantee: a failure inside the epoch-2 checkpoint write leaves the epoch-1 checkpoint, which resumes bit-exactly."
    import temlearn.encoder as encoder
    ims = _ims()
    full = ssl.pretrain(ims, out=tmp_path / 'full', epochs=2, ckpt_every=1, **KW)
    calls, real = [], encoder.sha256_file
    def failing(p):
        calls.append(p)
        if len(calls) == 2: raise OSError('killed while writing the checkpoint (simulated)')
        return real(p)
    monkeypatch.setattr(encoder, 'sha256_file', failing)
    with pytest.raises(OSError, match='simulated'):
        ssl.pretrain(ims, out=tmp_path / 'cut', epochs=2, ckpt_every=1, **KW)
    monkeypatch.undo()
    assert json.loads((tmp_path / 'cut' / 'checkpoint' / 'state.json').read_text())['state']['epoch'] == 1
    assert not [p for p in (tmp_path / 'cut').iterdir() if p.name.startswith('.')]        # no half-written leftovers
    res = ssl.pretrain(ims, out=tmp_path / 'cut', resume=True, epochs=2, ckpt_every=1, **KW)
    for a, b in zip(full.state_dict().values(), res.state_dict().values()): torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- 7. argument checks
ARG_CASES = [  # (case, extra arguments, a word the message must contain)
    ('size 0', ['--size', '0'], 'size'),
    ('size -8', ['--size', '-8'], 'size'),
    ('size 3', ['--size', '3'], 'size'),
    ('bs 0', ['--bs', '0'], 'bs'),
    ('lr nan', ['--lr', 'nan'], 'lr'),
    ('device cuda:7', ['--device', 'cuda:7'], 'cuda:7'),
    ('resume without checkpoint', ['--resume'], 'no checkpoint'),
]


@pytest.mark.parametrize('case,extra,word', ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_arguments_exit_2(raw, tmp_path, capsys, case, extra, word):
    "A bad argument: exit 2, one line on stderr naming it, nothing written."
    if case.startswith('device') and torch.cuda.device_count() > 7: pytest.skip('this machine has a cuda:7')
    out = tmp_path / 'out'
    rc = _cli(['--data', raw, '--out', out] + TINY + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (rc, err[-3:])
    assert len(err) == 1 and word in err[0], err
    assert not out.exists()


# -------------------------------------------------------------------------------- 8. history.csv after a resume
class _Crash(Callback):
    def __init__(self, n): self.n = n
    def before_epoch(self):
        if self.epoch >= self.n: raise CancelFitException()


def test_history_after_resume_equals_uninterrupted(tmp_path):
    "Crash after epoch 2 (checkpoints every 2 epochs) and resume: history.csv is the uninterrupted run's, epoch by epoch."
    ims, kw = _ims(8), dict(KW, epochs=4, ckpt_every=2)
    ssl.pretrain(ims, out=tmp_path / 'full', **kw)
    ssl.pretrain(ims, out=tmp_path / 'cut', cbs=[_Crash(3)], **kw)
    read = lambda run: pd.read_csv(tmp_path / run / 'history.csv', keep_default_na=False).drop(columns='time', errors='ignore')
    kept = read('cut').iloc[:2]
    ssl.pretrain(ims, out=tmp_path / 'cut', resume=True, **kw)
    full, res = read('full'), read('cut')
    pd.testing.assert_frame_equal(res.iloc[:2], kept)                                           # epochs not re-run: unchanged
    pd.testing.assert_frame_equal(res, full)                                                    # re-run epochs: as uninterrupted


# ------------------------------------------------------------------------------ issue 17: collapse detection
def test_diverging_run_warns_and_stops(raw, tmp_path, capsys):
    "`--lr 1e30` makes the loss infinite in epoch 1: a warning on screen, the flag in history.csv, exit 1, no encoder."
    out = tmp_path / 'out'
    rc = _cli(['--data', raw, '--out', out, '--lr', '1e30', '--epochs', '3'] + TINY[:6] + ['--projector', '8,8', '--no-progress'])
    cap = capsys.readouterr()
    assert 'warning' in cap.err and 'diverged' in cap.err
    assert rc == 1
    h = pd.read_csv(out / 'history.csv')
    assert h['collapse'].iloc[-1] == True and 'diverged' in h['collapse_signs'].iloc[-1]
    assert not (out / 'encoder.safetensors').exists()


class _Blank(Callback):
    "Replaces every batch of views by blank images: every image maps to the same vector (collapse by construction)."
    order = 6
    def before_batch(self): self.learn.xb = (torch.zeros_like(self.xb[0]),)


def test_collapsed_run_warns_and_records(tmp_path):
    "A run whose features collapse: CollapseWarning, a flag per epoch in history.csv, a record in encoder.json."
    assert hasattr(ssl, 'CollapseWarning'), 'no collapse detection'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ssl.pretrain(_ims(), out=tmp_path / 'out', epochs=2, cbs=[_Blank()], **KW)
    assert any(issubclass(w.category, ssl.CollapseWarning) for w in caught)
    assert pd.read_csv(tmp_path / 'out' / 'history.csv')['collapse'].tolist() == [True, True]
    rec = json.loads((tmp_path / 'out' / 'encoder.json').read_text())['collapse']
    assert rec['epochs'] == [1, 2] and 'collapsed' in rec['signs']


def test_no_progress_prints_one_line_per_epoch(raw, tmp_path, capsys):
    "`--no-progress`: one log line per epoch on stdout (with loss and monitors), then the summary line."
    assert _cli(['--data', raw, '--out', tmp_path / 'out', '--epochs', '2'] + TINY[:6] + ['--projector', '8,8', '--no-progress']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split(':')[0] for l in lines[:2]] == ['epoch 1/2', 'epoch 2/2'], lines
    assert 'train_loss' in lines[0] and 'eff_rank' in lines[0] and lines[-1].startswith('wrote')


def test_healthy_run_does_not_warn(tmp_path):
    "Guard: a healthy tiny Barlow Twins run (loss falling) raises no collapse warning and records none."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        enc = ssl.pretrain(_ims(32, seed=1), out=tmp_path / 'out', method='barlow', arch='resnet10t', size=32, bs=16,
                           epochs=3, lr=0.05, projector=(32, 32), progress=False)
    assert not [w for w in caught if 'collapse' in str(w.message)]
    assert enc.temlearn_meta.get('collapse') is None
