import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# One file of measured kernel choices (swinv2/layers/routing.py) for this run, its workers and every process
# they start: the suite neither reads nor leaves choices in the user's cache.
os.environ.setdefault("SWINV2_CACHE", tempfile.mkdtemp(prefix="swinv2-tests-"))
# Two cores: one thread per pytest-xdist worker (two workers), both threads for a serial run.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
