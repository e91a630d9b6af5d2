"""Last in the package: the server that took every hostile input, the soak and the security
probes stops cleanly (exit 0, no shared-memory region left behind)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_server_that_took_all_of_it_stops_cleanly(rel_server):
    assert rel_server.process.poll() is None, "the server died during the reliability tests"
    code = rel_server.stop()
    assert code == 0, rel_server.log_tail()
    assert not rel_server.leaked_at_exit
