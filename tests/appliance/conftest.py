"""Fixtures of the appliance tests that call ``appliance run``'s start steps in the test process."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def keep_umask():
    """``make_dirs`` sets the process's umask to 077 (``appliance run`` becomes supervisord with it); the test
    process gets its own back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)
