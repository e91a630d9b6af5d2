"""One real tritonserver shared by the hostile, soak and security tests of this package.

Tests that kill, wedge or stop a server start their own (test_stop_after_hostile_inputs.py
checks a clean stop after every hostile input, on its own server, in any test order).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmtriton.server.process import TritonProcess
from mmtriton_build.examples import load_examples
from mmtriton_harness.reliability.servers import kill_hard, start_server

from ..conftest import require_repository


@pytest.fixture(scope="package")
def rel_server(tmp_path_factory) -> Iterator[TritonProcess]:
    server = start_server(tmp_path_factory.mktemp("reliability"), repository=require_repository())
    yield server
    if server.process.poll() is None:
        kill_hard(server)


@pytest.fixture(scope="package")
def examples(built_artifacts):
    return load_examples(built_artifacts, 48)
