"""Shared fixtures. Real imagery is read from $RSSSL_DATA_DIR (set by the Makefile and .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-imagery folder; a missing folder fails loudly instead of skipping."""
    value = os.environ.get("RSSSL_DATA_DIR")
    if not value:
        pytest.fail("RSSSL_DATA_DIR is not set: run the tests through `make test` or export it")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"RSSSL_DATA_DIR={path} is not a folder")
    return path


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread (torch and BLAS) for modules of small ops or timing comparisons: on a
    shared 2-core machine two spinning threads are far slower than one, and timings then compare
    implementations, not threading. Use with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
