"""The reliability harness itself, without a server: outcome kinds, payloads, /proc, report."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from mmtriton.preprocess.audio import open_audio
from mmtriton.preprocess.errors import InvalidInput
from mmtriton.server.procs import children, dead_stubs, read_proc, tree_rss
from mmtriton_build.reliability.load import error_kind
from mmtriton_build.reliability.payloads import (
    Reference,
    build_cases,
    flac_claiming_seconds,
    gif_claiming,
    png_claiming,
)
from mmtriton_build.reliability.report import summarize_report, table


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("INVALID_ARGUMENT", "sample 0: image is empty", "invalid"),
        ("UNAVAILABLE", "in ensemble 'multimodal', Exceeds maximum queue size", "rejected"),
        ("UNAVAILABLE", "in ensemble 'multimodal', Request timeout expired", "rejected"),
        ("UNAVAILABLE", "failed to connect to all addresses; Connection refused", "rejected"),
        (
            "NOT_FOUND",
            "Request for unknown model: 'multimodal' has no available versions",
            "rejected",
        ),
        ("UNAVAILABLE", "Stream removed (recvmsg:Connection reset by peer (104))", "lost"),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", "timeout"),
        ("INTERNAL", "Stub process 'image_encoder_0_0' is not healthy.", "failed"),
    ],
)
def test_what_the_caller_saw(status, message, kind):
    assert error_kind(status, message) == kind


def test_decompression_bomb_headers_declare_what_they_claim():
    assert Image.open(io.BytesIO(png_claiming(1000, 2000))).size == (1000, 2000)
    assert Image.open(io.BytesIO(gif_claiming(300, 200))).size == (300, 200)
    with pytest.raises(InvalidInput, match=r"7200\.00 s long"):
        open_audio(flac_claiming_seconds(7200))


def test_the_suite_has_40_plus_distinct_cases(built_artifacts):
    from mmtriton_build.examples import load_examples

    ex = next(e for e in load_examples(built_artifacts, 16) if e.image and e.text and e.audio)
    cases = build_cases(Reference(ex.label, ex.image, ex.text, ex.audio))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) >= 40
    assert {c.expect for c in cases} == {"invalid", "valid"}
    assert all(c.words for c in cases if c.expect == "invalid")


def test_proc_sees_children_zombies_and_rss():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        child.wait()  # reaped: gone from /proc
        assert read_proc(child.pid) is None
        sleeper = subprocess.Popen(["sleep", "30"])
        assert sleeper.pid in {p.pid for p in children(os.getpid())}
        assert dead_stubs(os.getpid(), {"sleeper": sleeper.pid}) == []
        sleeper.kill()
        while read_proc(sleeper.pid).state != "Z":  # killed, not yet reaped: a zombie
            pass
        assert dead_stubs(os.getpid(), {"sleeper": sleeper.pid}) == ["sleeper"]
        sleeper.wait()
        assert tree_rss(os.getpid()) > 10 * 2**20
    finally:
        child.wait()


def test_report_keys_and_table():
    summary = summarize_report({"server_crashes": 0})
    for key in (
        "bad_inputs_tried",
        "bad_inputs_clean",
        "server_crashes",
        "lost_requests",
        "overload_rejected",
        "overload_p99_ms",
        "faults_survived",
        "soak_errors",
        "rss_growth_pct",
    ):
        assert key in summary
    assert "server_crashes" in table(summary)
