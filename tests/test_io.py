"Reader tests: every file of ../shared/data/README.md's raw/ table, plus corrupt and unsupported inputs."
import os, shutil, numpy as np, pytest
from pathlib import Path
from temlearn.core import TEMImage
from temlearn.core import run_cli
from temlearn.io import read_image, write_tiff, TEMReadError, info_cli, SUPPORTED_EXTENSIONS

# file, shape, dtype, pixel size (y, x) in nm — from ../shared/data/README.md (independent reader)
RAW_TABLE = [
    ('16_STOimage_1.ser', (1024, 1024), 'uint16', (0.0100127, 0.0100127)),
    ('16_STOimage.emi', (1024, 1024), 'uint16', (0.0100127, 0.0100127)),
    ('Acquisition_18.emd', (1024, 1024), 'uint16', (0.0122465, 0.0122465)),
    ('Camera Ceta Imaging Micro.emd', (512, 512), 'int16', (3.13884, 3.13884)),
    ('dmTest_float32_nonSquare_diffPixelSize.dm3', (64, 128), 'float32', (0.2, 1.0)),
    ('dmTest_float32_nonSquare_diffPixelSize.dm4', (64, 128), 'float32', (0.2, 1.0)),
    ('multi_signal.dm3', (512, 512), 'uint16', (0.0177516, 0.0177516)),
    ('test_STEM_image.dm3', (68, 68), 'uint32', (0.248538, 0.248538)),
    ('test_dm_image_um_unit.dm3', (68, 68), 'int32', (168.675, 168.675)),
    ('test-MonarcCL_mono-image.dm4', (2, 2), 'uint16', (18325.35, 18325.35)),
    ('128x128_TEM_acquire-sum1_1.ser', (128, 128), 'int32', (21.4793, 21.4793)),
    ('128x128_TEM_acquire-sum1.emi', (128, 128), 'int32', (21.4793, 21.4793)),
    ('test_loading_image_saved_with_DM.tif', (68, 68), 'int32', (168.675, 168.675)),
    ('TVIPS_bin4.tif', (1024, 1024), 'uint8', (1.42080, 1.42080)),
    ('FEI-Helios-Ebeam-16bits.tif', (471, 512), 'uint16', (3372.4, 3372.4)),
]


@pytest.mark.parametrize('name,shape,dtype,ps', RAW_TABLE, ids=[r[0] for r in RAW_TABLE])
def test_raw_table(raw_dir, name, shape, dtype, ps):
    img = read_image(raw_dir / name)
    assert isinstance(img, TEMImage)
    assert img.shape == shape
    assert img.dtype == np.dtype(dtype)
    assert img.pixel_size is not None
    np.testing.assert_allclose(img.pixel_size, ps, rtol=1e-4)
    assert img.metadata['source'] == str(raw_dir / name)
    assert np.isfinite(img.data.astype(float)).all()


def test_mrc_stack_needs_frame(raw_dir):
    with pytest.raises(ValueError, match=r'temp\.mrc.*stack of 3 frames'):
        read_image(raw_dir / 'temp.mrc')
    frames = [read_image(raw_dir / 'temp.mrc', frame=i) for i in range(3)]
    for f in frames:
        assert f.shape == (128, 128) and f.dtype == np.float32
        np.testing.assert_allclose(f.pixel_size, (0.2, 0.2), rtol=1e-4)
    assert not np.array_equal(frames[0].data, frames[1].data)
    assert np.array_equal(read_image(raw_dir / 'temp.mrc', frame=-1).data, frames[2].data)
    with pytest.raises(ValueError, match='out of range'):
        read_image(raw_dir / 'temp.mrc', frame=3)


def test_multi_signal_picks_image(raw_dir):
    img = read_image(raw_dir / 'multi_signal.dm3')
    assert img.metadata['title'] == 'HAADF'
    assert img.metadata['voltage_kV'] == 300.0
    assert img.metadata['magnification'] == 1e7
    with pytest.raises(ValueError, match='holds 1 image'):
        read_image(raw_dir / 'multi_signal.dm3', signal=1)


def test_frame_on_single_image(raw_dir):
    assert read_image(raw_dir / 'test_STEM_image.dm3', frame=0).shape == (68, 68)
    with pytest.raises(ValueError, match='single 2-D image'):
        read_image(raw_dir / 'test_STEM_image.dm3', frame=2)


def test_units_normalised(raw_dir):
    "µm, Å, n_m and m in the files all come out in nm."
    assert read_image(raw_dir / 'test_dm_image_um_unit.dm3').metadata['units_in_file'] == ['µm', 'µm']
    assert read_image(raw_dir / 'Acquisition_18.emd').metadata['units_in_file'] == ['n_m', 'n_m']
    assert read_image(raw_dir / 'FEI-Helios-Ebeam-16bits.tif').metadata['units_in_file'] == ['m', 'm']


# ---- corrupt, truncated and unsupported inputs ----------------------------------------------------

@pytest.mark.parametrize('name', ['16_STOimage_1.ser', 'Acquisition_18.emd', 'multi_signal.dm3',
                                  'dmTest_float32_nonSquare_diffPixelSize.dm4', 'temp.mrc', 'TVIPS_bin4.tif',
                                  'Camera Ceta Imaging Micro.emd'])
def test_truncated_files(raw_dir, tmp_path, name):
    src = raw_dir / name
    data = src.read_bytes()
    bad = tmp_path / name.replace(' ', '_')
    bad.write_bytes(data[: max(len(data) // 3, 64)])
    with pytest.raises(TEMReadError) as e:
        read_image(bad)
    assert bad.name in str(e.value)


@pytest.mark.parametrize('ext', ['.dm3', '.dm4', '.ser', '.emd', '.mrc', '.tif', '.png', '.jpg'])
def test_garbage_files(tmp_path, ext):
    f = tmp_path / f'garbage{ext}'
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(TEMReadError, match=f'garbage\\{ext}'):
        read_image(f)


@pytest.mark.parametrize('ext', ['.dm3', '.ser', '.emd', '.tif'])
def test_empty_files(tmp_path, ext):
    f = tmp_path / f'empty{ext}'
    f.write_bytes(b'')
    with pytest.raises(TEMReadError, match='empty'):
        read_image(f)


def test_unsupported_and_missing(tmp_path):
    (tmp_path / 'a.xyz').write_text('x')
    with pytest.raises(TEMReadError, match=r"a\.xyz.*unsupported file type '\.xyz'"):
        read_image(tmp_path / 'a.xyz')
    (tmp_path / 'noext').write_text('x')
    with pytest.raises(TEMReadError, match='no extension'):
        read_image(tmp_path / 'noext')
    with pytest.raises(FileNotFoundError, match='nope.dm3'):
        read_image(tmp_path / 'nope.dm3')
    with pytest.raises(TEMReadError, match='folder'):
        read_image(tmp_path)


def test_input_file_untouched(raw_dir, tmp_path):
    src = raw_dir / 'test_STEM_image.dm3'
    before = src.read_bytes()
    img = read_image(src)
    img.data[:] = 0
    assert src.read_bytes() == before


# ---- PNG / JPG / TIFF round trips ------------------------------------------------------------------

def test_png_gray_rgb_16bit(tmp_path):
    from PIL import Image
    g = np.random.default_rng(1).integers(0, 255, (20, 30), dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / 'g.png')
    img = read_image(tmp_path / 'g.png')
    assert img.pixel_size is None and np.array_equal(img.data, g)
    rgb = np.stack([g, g, g], -1)
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    assert np.array_equal(read_image(tmp_path / 'rgb.png').data, g)
    g16 = (g.astype(np.uint16) * 200)
    Image.fromarray(g16).save(tmp_path / 'g16.png')
    assert np.array_equal(read_image(tmp_path / 'g16.png').data, g16)
    Image.fromarray(g).save(tmp_path / 'g.jpg', quality=95)
    assert read_image(tmp_path / 'g.jpg').shape == (20, 30)


@pytest.mark.parametrize('dtype', ['uint8', 'uint16', 'int32', 'float32'])
def test_tiff_roundtrip(tmp_path, dtype):
    rng = np.random.default_rng(2)
    a = TEMImage((rng.random((17, 23)) * 100).astype(dtype), pixel_size=(0.02, 0.03))
    b = read_image(write_tiff(a, tmp_path / 'sub' / 'a.tif'))
    assert b.dtype == a.dtype and np.array_equal(b.data, a.data)
    np.testing.assert_allclose(b.pixel_size, a.pixel_size, rtol=1e-6)


def test_supported_extensions_listed():
    for e in ['.dm3', '.dm4', '.ser', '.emi', '.emd', '.mrc', '.tif', '.tiff', '.png', '.jpg']:
        assert e in SUPPORTED_EXTENSIONS


# ---- command line ------------------------------------------------------------------------------

def test_info_cli(raw_dir, tmp_path, capsys):
    rc = run_cli(info_cli, [str(raw_dir / 'dmTest_float32_nonSquare_diffPixelSize.dm3'), '--png', str(tmp_path / 'x.png')])
    out = capsys.readouterr().out
    assert rc == 0
    assert '0.2 nm (y) × 1 nm (x)' in out
    assert (tmp_path / 'x.png').stat().st_size > 1000


def test_info_cli_errors(tmp_path, capsys):
    (tmp_path / 'bad.dm3').write_bytes(b'\x00' * 100)
    rc = run_cli(info_cli, [str(tmp_path / 'bad.dm3')])
    assert rc == 1
    assert 'bad.dm3' in capsys.readouterr().err


def test_info_cli_python_call(raw_dir, capsys):
    "Called from Python, the command is a plain function (positional files)."
    assert info_cli(str(raw_dir / 'test_STEM_image.dm3')) == 0
    assert '0.248538 nm' in capsys.readouterr().out


def test_info_console_script(raw_dir):
    "The installed console script runs the same function (exit 2 without files)."
    import subprocess, shutil
    exe = shutil.which('temlearn-info')
    if exe is None: pytest.skip('temlearn-info is not on PATH (package not installed)')
    r = subprocess.run([exe, str(raw_dir / 'test_STEM_image.dm3')], capture_output=True, text=True)
    assert r.returncode == 0 and '0.248538 nm' in r.stdout
    r = subprocess.run([exe], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('temlearn-info: error:')
