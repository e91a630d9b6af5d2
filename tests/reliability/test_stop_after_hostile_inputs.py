"""A server that took every hostile input still stops cleanly: exit 0, no shared-memory region
left behind. It has a server of its own, so it holds whatever order the tests run in."""

from __future__ import annotations

from mmtriton_harness.reliability.hostile import run_hostile
from mmtriton_harness.reliability.servers import kill_hard, start_server

from ..conftest import require_repository


def test_server_that_took_every_hostile_input_stops_cleanly(tmp_path, examples):
    server = start_server(tmp_path, repository=require_repository())
    try:
        result = run_hostile(server.grpc_url, examples)
        assert result["invalid_tried"] and result["valid_tried"]
        assert server.process.poll() is None, "the server died on a hostile input"
        code = server.stop()
        assert code == 0, server.log_tail()
        assert not server.leaked_at_exit
    finally:
        if server.process.poll() is None:
            kill_hard(server)
