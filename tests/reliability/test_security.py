"""Clients cannot change the repository, touch shared memory or server settings, exceed the
upload limits, or use a TLS server in plaintext."""

from __future__ import annotations

import pytest

from mmtriton_harness.reliability.security import (
    admin_apis_refused,
    run_admin_apis,
    run_tls,
    run_upload_limits,
    tls_ok,
)
from mmtriton_harness.reliability.servers import start_server

from ..conftest import require_repository

pytestmark = pytest.mark.integration


def test_repository_shared_memory_and_settings_apis_are_refused(rel_server):
    result = run_admin_apis(rel_server)
    assert set(result["http_without_header"].values()) == {403}, result["http_without_header"]
    assert set(result["grpc_without_header"].values()) == {"UNAVAILABLE"}
    assert "restricted" in result["grpc_message"]
    # With the admin header the index answers, but nothing can be (un)loaded: mode none.
    for call, (code, body) in result["http_with_admin_header"].items():
        assert code == 200 if call.endswith("index") else code >= 400, (call, body)
    for status, message in result["grpc_with_admin_header"].values():
        assert status != "OK" and "not allowed" in message
    assert admin_apis_refused(result)


def test_upload_limits_are_enforced_by_server_and_client(rel_server, examples):
    result = run_upload_limits(rel_server.grpc_url, examples)
    for name, seen in result["server_refuses"].items():
        assert seen["refused"], (name, seen)
        assert "limit" in seen["message"]
    assert set(result["client_refuses"].values()) == {"INVALID_ARGUMENT"}
    assert result["served_after"]


def test_grpc_tls_serves_verified_clients_only(tmp_path, examples):
    def start(log_dir, **kw):
        return start_server(log_dir, repository=require_repository(), **kw)

    result = run_tls(tmp_path, examples, start)
    assert result["tls_client_label_correct"]
    assert result["plaintext"] == "UNAVAILABLE"
    assert result["tls_other_ca"] == "UNAVAILABLE"
    assert result["exit_code"] == 0 and result["shm_regions_left"] == 0
    assert tls_ok(result)
