"""Hostile inputs sent raw over gRPC (and a few through the web page): each is refused with
INVALID_ARGUMENT naming the problem, or answered correctly; the server stays ready and the
next valid request is right."""

from __future__ import annotations

import pytest

from mmtriton_harness.reliability.hostile import run_hostile, run_web_hostile

pytestmark = pytest.mark.integration


def test_invalid_inputs_are_refused_clearly_and_odd_valid_ones_answered(rel_server, examples):
    result = run_hostile(rel_server.grpc_url, examples)
    assert result["invalid_tried"] >= 40 and result["valid_tried"] >= 30
    # Refusals and answers counted apart: refusing a valid input is a failure too.
    assert result["invalid_refused"] == result["invalid_tried"]
    assert result["valid_answered"] == result["valid_tried"]
    bad = [f"{r['name']}: {r['status']} {r['message'][:120]}" for r in result["not_clean"]]
    assert not bad, "\n".join(bad)
    groups = {r["group"] for r in result["cases"]}
    assert groups == {"image", "text", "audio", "tensor", "batch"}
    # The refusals name the limit or the problem, never an internal error.
    statuses = {r["status"] for r in result["cases"]}
    assert statuses <= {"OK", "INVALID_ARGUMENT"}
    assert rel_server.process.poll() is None


def test_hostile_inputs_through_the_web_page(rel_server, examples, tmp_path):
    result = run_web_hostile(rel_server.grpc_url, examples, tmp_path)
    bad = [r for r in result["cases"] if not r["clean"]]
    assert not bad, bad
    assert result["invalid_tried"] >= 5 and result["valid_tried"] >= 3
    assert all(r["ready_after"] for r in result["cases"])
