"""Faults under load on a server lineage of its own: a Python-backend stub killed (the watchdog
restarts the server), tritonserver SIGKILLed and restarted on the same ports (the client
library's retries turn the outage into successes), a graceful stop while callers keep sending.
"""

from __future__ import annotations

import pytest

from mmtriton_build.reliability.faults import faults_survived, run_faults
from mmtriton_build.reliability.servers import start_server

from ..conftest import require_repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faults(tmp_path_factory, examples):
    def start(log_dir, **kw):
        return start_server(log_dir, repository=require_repository(), **kw)

    return run_faults(tmp_path_factory.mktemp("faults"), examples[:24], start)


def test_killed_stub_is_invisible_to_triton_and_the_watchdog_restarts(faults):
    stub = faults["stub_kill"]
    assert stub["killed"].startswith("image_encoder")
    # Triton 2.51 keeps answering "ready" with a dead stub: only the watchdog notices.
    assert stub["ready_while_broken"] == stub["ready_probes_while_broken"]
    assert stub["detected_after_ms"] < 2_000
    assert stub["back_after_s"] is not None and stub["back_after_s"] < 30
    callers = stub["retrying_callers"]
    assert callers["lost"] == callers["timeout"] == 0, callers["errors"]
    assert callers["ok"] > 0


def test_sigkill_and_restart_on_the_same_ports_is_retried_through(faults):
    kill = faults["server_kill"]
    callers, bare = kill["retrying_callers"], kill["bare_caller"]
    assert callers["failed"] + callers["lost"] + callers["timeout"] == 0, callers["errors"]
    assert bare["rejected"] + bare["lost"] > 0  # a caller without retries saw the outage
    assert kill["back_after_s"] is not None and kill["back_after_s"] < 30
    assert kill["shm_regions_left_by_killed_server"] > 0  # SIGKILL leaves them; we removed them


def test_graceful_stop_under_load_loses_nothing(faults):
    drain = faults["drain_under_load"]
    assert drain["exit_code"] == 0 and drain["shm_regions_left"] == 0
    assert drain["in_flight_at_stop_answered"] == drain["in_flight_at_stop"]
    callers = drain["callers"]
    assert callers["failed"] + callers["lost"] + callers["timeout"] == 0, callers["errors"]
    assert faults_survived(faults) == 3
