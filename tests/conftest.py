import os, pytest
os.environ.setdefault('MPLBACKEND', 'Agg')
from temlearn.core import shared_data


@pytest.fixture(scope='session')
def raw_dir():
    "../shared/data/raw, or skip the test with a clear message when the shared data is absent."
    p = shared_data('raw')
    if p is None: pytest.skip('shared data (../shared/data/raw) not found: real-file tests skipped')
    return p
