"""Issue 11 cases of the synthetic-data area (temlearn-synth and the data-set writers).

Each row is the exact failing input; the old code (argparse `synth_cli(argv)`) is recorded in the `before` column of the
table in the note on issue 11. Item 3: a second run into the same output folder silently mixed old and new results;
items 6/7: argument checks with one stderr line that names the flag, exit 2 for arguments and 1 for data.
"""
import hashlib
from pathlib import Path
import pytest

from temlearn.core import run_cli
from temlearn.synth import synth_cli, write_generic_dataset, write_nanowire_dataset


def _tree(root):
    "Relative path → sha256 of every file under `root`."
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


def _run(argv, capsys):
    capsys.readouterr()
    rc = run_cli(synth_cli, [str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


# ---------------------------------------------------------------- item 3: a second run never mixes results
SECOND_RUN = [   # (case, first run, second run)
    ('nanowires-again', ['nanowires', '-n', '2', '--size', '32', '--jobs', '1', '--quiet'],
                        ['nanowires', '-n', '1', '--size', '48', '--jobs', '1', '--quiet']),
    ('hrtem-other-material', ['hrtem', '-n', '2', '--size', '64', '--quiet'],
                             ['hrtem', '-n', '1', '--size', '64', '--material', 'Ag', '--quiet']),
    ('generic-again', ['generic', '-n', '2', '--size', '32', '--jobs', '1', '--quiet'],
                      ['generic', '-n', '3', '--size', '40', '--jobs', '1', '--quiet', '--seed', '1']),
]


@pytest.mark.parametrize('case,first,second', SECOND_RUN, ids=[c[0] for c in SECOND_RUN])
def test_second_run_into_same_folder_is_refused(tmp_path, capsys, case, first, second):
    out = tmp_path / 'out'
    assert _run([first[0], '--out', out, *first[1:]], capsys)[0] == 0
    before = _tree(out)
    rc, err = _run([second[0], '--out', out, *second[1:]], capsys)
    assert rc == 1 and len(err) == 1 and f'{out}: the output folder is not empty' in err[0] and '--overwrite' in err[0]
    assert _tree(out) == before                                  # nothing the user had was touched


def test_overwrite_is_accepted(tmp_path, capsys):
    out = tmp_path / 'out'
    assert _run(['generic', '--out', out, '-n', '1', '--size', '32', '--quiet'], capsys)[0] == 0
    rc, _ = _run(['generic', '--out', out, '-n', '2', '--size', '32', '--quiet', '--overwrite'], capsys)
    assert rc == 0 and len(list(out.glob('*.png'))) == 2


def test_folder_with_user_files_is_refused(tmp_path, capsys):
    out = tmp_path / 'mine'; out.mkdir(); (out / 'notes.txt').write_text('my notes')
    rc, err = _run(['generic', '--out', out, '-n', '1', '--size', '32', '--quiet'], capsys)
    assert rc == 1 and 'not empty' in err[0] and sorted(p.name for p in out.iterdir()) == ['notes.txt']


@pytest.mark.parametrize('write', [lambda root: write_generic_dataset(root, 1, size=32, progress=False),
                                   lambda root: write_nanowire_dataset(root, 1, size=32, n_jobs=1, progress=False)],
                         ids=['write_generic_dataset', 'write_nanowire_dataset'])
def test_writers_refuse_non_empty_folder(tmp_path, write):
    (tmp_path / 'keep.tif').write_bytes(b'user data')
    with pytest.raises(FileExistsError, match='not empty'): write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ['keep.tif']


# ---------------------------------------------------------------- items 6/7: argument checks
BAD_ARGS = [   # (case, argv after --out, expected piece of the one stderr line)
    ('jobs-zero', ['nanowires', '-n', '1', '--size', '32', '--jobs', '0'], '--jobs must be at least 1, got 0'),
    ('jobs-negative', ['nanowires', '-n', '1', '--size', '32', '--jobs', '-2'], '--jobs must be at least 1, got -2'),
    ('seed-negative', ['generic', '-n', '1', '--size', '32', '--seed', '-1'], '--seed must be >= 0, got -1'),
    ('material-unknown', ['hrtem', '-n', '1', '--size', '64', '--material', 'Pt'], "--material must be among Au, Ag, CdSe, got 'Pt'"),
    ('dose-nan', ['hrtem', '-n', '1', '--size', '64', '--dose', 'nan'], '--dose values must be positive and finite, got nan'),
    ('pixel-size-zero', ['hrtem', '-n', '1', '--size', '64', '--pixel-size', '0.02', '0'], '--pixel-size values must be positive'),
    ('size-too-small', ['hrtem', '-n', '1', '--size', '8'], '--size must be at least 32 px, got 8'),
    ('n-zero', ['generic', '-n', '0'], '-n must be at least 1, got 0'),
]


@pytest.mark.parametrize('case,argv,msg', BAD_ARGS, ids=[c[0] for c in BAD_ARGS])
def test_bad_argument_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, argv, msg):
    out = tmp_path / 'out'
    rc, err = _run([argv[0], '--out', out, '--quiet', *argv[1:]], capsys)
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not out.exists()                                      # refused before anything was written


def test_out_is_an_existing_file(tmp_path, capsys):
    f = tmp_path / 'results.csv'; f.write_text('a,b\n1,2\n')
    rc, err = _run(['generic', '--out', f, '-n', '1', '--size', '32', '--quiet'], capsys)
    assert rc == 2 and len(err) == 1 and 'is an existing file, not a folder' in err[0]
    assert f.read_text() == 'a,b\n1,2\n'


def test_python_writer_rejects_zero_jobs(tmp_path):
    with pytest.raises(ValueError, match='n_jobs must be at least 1'):
        write_nanowire_dataset(tmp_path / 'nw', 1, size=32, n_jobs=0, progress=False)
