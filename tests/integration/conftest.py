"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from tests.conftest import start_triton


@pytest.fixture(scope="module")
def uncached(tmp_path_factory):
    """A server with the encoders' response cache off: every request runs every step."""
    server = start_triton(tmp_path_factory.mktemp("uncached"), response_cache_bytes=0)
    yield server
    server.stop()
