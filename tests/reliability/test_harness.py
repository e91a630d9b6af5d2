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
from mmtriton_harness.reliability.faults import answer_gaps, lost
from mmtriton_harness.reliability.hostile import split_counts
from mmtriton_harness.reliability.load import Outcome, error_kind
from mmtriton_harness.reliability.payloads import (
    Reference,
    build_cases,
    flac_claiming_seconds,
    gif_claiming,
    png_claiming,
)
from mmtriton_harness.reliability.report import TARGETS, missed, summarize_report, table
from mmtriton_harness.reliability.serve import ServeProcess


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


def test_the_suite_has_40_invalid_and_30_odd_but_valid_cases(built_artifacts):
    from mmtriton_build.examples import load_examples

    ex = next(e for e in load_examples(built_artifacts, 16) if e.image and e.text and e.audio)
    cases = build_cases(Reference(ex.label, ex.image, ex.text, ex.audio))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) >= 70
    expects = [c.expect for c in cases]
    assert expects.count("invalid") >= 40 and expects.count("valid") >= 30
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
    for t in TARGETS:
        assert t.key in summary
    assert "server_crashes" in table(summary)
    assert missed(summary) == []  # nothing measured but crashes, which are 0


def test_a_missed_target_is_reported_and_fails_the_run():
    summary = summarize_report({"server_crashes": 1})
    assert missed(summary) == ["server_crashes"]
    assert "MISS" in table(summary) and "targets missed: server_crashes" in table(summary)
    # A heal that never came back misses its bound instead of being left out.
    summary.update(heal_back_max_s="never", rss_growth_pct=5.0)
    assert {"heal_back_max_s", "rss_growth_pct"} <= set(missed(summary))


def test_a_failed_request_counts_as_lost():
    fault = {"failed": 2, "lost": 0, "timeout": 1}
    assert lost(fault) == 3


def test_invalid_and_odd_but_valid_inputs_are_counted_apart():
    results = [
        {"expect": "invalid", "clean": True},
        {"expect": "invalid", "clean": False},
        {"expect": "valid", "clean": True},
    ]
    counts = split_counts(results)
    assert (counts["invalid_tried"], counts["invalid_refused"]) == (2, 1)
    assert (counts["valid_tried"], counts["valid_answered"]) == (1, 1)


def testanswer_gaps_measure_from_the_fault():
    outcomes = [
        Outcome(0.0, 1.0, "ok"),
        Outcome(1.5, 9.0, "failed"),
        Outcome(2.5, 12.0, "ok"),  # sent after the fault (t=2): back 10 s after it
        Outcome(12.0, 12.5, "ok"),
    ]
    back, gap = answer_gaps(outcomes, since=2.0)
    assert back == 10.0 and gap == 11.0  # from the last answer before (1.0) to 12.0


def test_serve_process_runs_the_product_on_the_ports_it_chose(tmp_path):
    serve = ServeProcess(tmp_path / "repo", tmp_path)
    command = " ".join(serve.command())
    assert "-m mmtriton.cli serve" in command
    for name, port in serve.ports.items():
        assert f"--{name}-port {port}" in command
    assert len(set(serve.ports.values())) == 4
