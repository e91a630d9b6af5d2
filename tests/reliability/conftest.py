"""One real tritonserver for the hostile, soak and security tests of this package.

It is stopped by the package's last test (test_zz_shutdown.py), which checks that a server
that took every hostile input still exits 0 without leaving shared memory behind. Tests that
kill or wedge a server start their own.
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
    if server.process.poll() is None:  # test_zz_shutdown did not run (-k): just clean up
        kill_hard(server)


@pytest.fixture(scope="package")
def examples(built_artifacts):
    return load_examples(built_artifacts, 48)
