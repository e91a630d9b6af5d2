"""Tracing and response-cache options: the flags they render, their checks, the span names.

The end-to-end behaviour runs on a real server in tests/integration/test_tracing.py and
test_response_cache.py; these are the parts that need none.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest

from mmtriton import spec
from mmtriton.backend import tracing as step_tracing
from mmtriton.layout import onnx_path
from mmtriton.server import flags
from mmtriton.server.flags import ServerSettings, serve_args, triton_args
from mmtriton.server.launcher import add_server_arguments, settings_from_args
from mmtriton_client import tracing as client_tracing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmtriton serve")
    add_server_arguments(parser)
    return parser


def _repo(tmp_path: Path) -> Path:
    """A repository that passes serve's checks (every encoder has an ONNX file)."""
    for model in spec.ENCODERS.values():
        path = onnx_path(tmp_path, model.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def test_no_endpoint_no_tracing_flags():
    args = triton_args(ServerSettings("/r", admin_key="k"))
    assert not any(a.startswith("--trace-config") for a in args)


def test_an_endpoint_turns_on_opentelemetry_export_at_the_rate():
    s = ServerSettings("/r", admin_key="k", otlp_endpoint="http://c:4318/v1/traces", trace_rate=7)
    args = triton_args(s)
    assert "--trace-config=mode=opentelemetry" in args
    assert "--trace-config=rate=7" in args and "--trace-config=level=TIMESTAMPS" in args
    assert "--trace-config=opentelemetry,url=http://c:4318/v1/traces" in args


def test_the_cache_is_on_by_default_with_the_wheels_local_cache():
    args = triton_args(ServerSettings("/r", admin_key="k"))
    directory = next(a.split("=", 1)[1] for a in args if a.startswith("--cache-directory="))
    assert (Path(directory) / "local" / "libtritoncache_local.so").is_file()
    assert f"--cache-config=local,size={flags.DEFAULT_RESPONSE_CACHE_BYTES}" in args
    off = triton_args(ServerSettings("/r", admin_key="k", response_cache_bytes=0))
    assert not any(a.startswith(("--cache-directory", "--cache-config")) for a in off)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--otlp-endpoint=collector:4318"], "must be an http"),
        (["--trace-rate=0"], "trace rate"),
        (["--response-cache-bytes=-1"], "response cache size"),
    ],
)
def test_serve_refuses_bad_tracing_or_cache_options(tmp_path, options, message):
    args = _parser().parse_args([f"--repository={_repo(tmp_path)}", *options])
    with pytest.raises(SystemExit, match=message):
        settings_from_args(args)


def test_serve_help_shows_the_options():
    text = _parser().format_help()
    for option in ("--otlp-endpoint", "--trace-rate", "--response-cache-bytes"):
        assert option in text
    assert flags.OTLP_ENDPOINT_ENV in text


def test_the_endpoint_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(flags.OTLP_ENDPOINT_ENV, "http://127.0.0.1:4318/v1/traces")
    settings = settings_from_args(_parser().parse_args([f"--repository={_repo(tmp_path)}"]))
    assert settings.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert settings.trace_rate == flags.DEFAULT_TRACE_RATE


def test_serve_args_carry_tracing_and_cache_settings(tmp_path):
    settings = ServerSettings(
        str(_repo(tmp_path)),
        admin_key="k",
        otlp_endpoint="http://c:4318/v1/traces",
        trace_rate=3,
        response_cache_bytes=1 << 20,
    )
    parsed = settings_from_args(_parser().parse_args(serve_args(settings)))
    assert (parsed.otlp_endpoint, parsed.trace_rate, parsed.response_cache_bytes) == (
        "http://c:4318/v1/traces",
        3,
        1 << 20,
    )


def test_modalities_attribute_lists_what_any_row_carries():
    present = np.array([[True, False, False], [False, False, True]])
    assert step_tracing.modalities_attribute(present) == "image+audio"
    assert step_tracing.modalities_attribute(np.zeros((1, 3), bool)) == ""


def test_a_step_without_an_endpoint_traces_nothing(monkeypatch):
    monkeypatch.delenv(flags.OTLP_ENDPOINT_ENV, raising=False)
    tracer = step_tracing.StepTracer("preprocess")
    assert not tracer.enabled
    assert tracer.context(object()) is None
    with tracer.span("validate", None) as span:
        assert span is None


class _Request:
    """A Python-backend request whose trace carries `context` (as Triton hands it over)."""

    def __init__(self, context: str | None) -> None:
        self._context = context

    def trace(self):
        request = self

        class _Trace:
            def get_context(self):
                return request._context

        return _Trace()


def test_a_step_continues_the_trace_triton_hands_it():
    tracer = step_tracing.StepTracer("fusion", endpoint="http://127.0.0.1:9/v1/traces")
    try:
        parent = '{"traceparent":"00-0af7651916cd43dd8448eb211c319c11-b7ad6b7169203331-01"}'
        context = tracer.context(_Request(parent))
        with tracer.span("fuse", context) as span:
            got = span.get_span_context()
            assert format(got.trace_id, "032x") == "0af7651916cd43dd8448eb211c319c11"
            assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"
        # Not sampled by Triton: no context, no span.
        assert tracer.context(_Request(None)) is None
        assert tracer.context(_Request("{}")) is None
    finally:
        tracer.shutdown()


def test_cache_trace_bench_reports_medians_spreads_and_hit_ratio():
    from mmtriton_harness.bench.cache_trace import format_report, summarise

    def window(rps, hits, misses):
        return {"rps": rps, "p50_ms": 1000 / rps, "p99_ms": 2000 / rps, "errors": 0,
                "hits": hits, "misses": misses, "cpu_ms_per_request": 2000 / rps}  # fmt: skip

    rows = summarise(
        {
            "cache on": [window(100, 90, 10), window(120, 100, 0), window(110, 50, 0)],
            "cache off": [window(80, 0, 0), window(60, 0, 0), window(70, 0, 0)],
        }
    )
    on, off = rows
    assert (on["rps"], on["rps_spread"], on["image_hit_ratio"]) == (110, "100.0-120.0", 0.96)
    assert on["cpu_ms"] == pytest.approx(2000 / 110)
    # Paired with the same round's default: -20 %, -50 %, -36.4 % -> median -36.4 %.
    assert off["image_hit_ratio"] is None and off["vs_default_pct"] == -36.4
    assert off["vs_default_spread"] == "-50..-20"
    text = format_report(rows, concurrency=8, window_s=3)
    assert "cache on" in text and "96%" in text and "-36.4% (   -50..-20)" in text


def test_only_the_encoders_cache_their_responses_in_both_profiles():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from mmtriton_build.export import repository

    cached = set()
    for rel, text in repository.generate_configs(list(spec.LABELS)).items():
        if rel.endswith(".pbtxt"):
            config = text_format.Parse(text, model_config_pb2.ModelConfig())
            if config.response_cache.enable:
                cached.add(rel)
    encoders = [m.name for m in spec.ENCODERS.values()]
    assert cached == {f"{m}/config.pbtxt" for m in encoders} | {
        f"{m}/configs/gpu.pbtxt" for m in encoders
    }


def test_make_run_points_the_web_page_at_the_same_endpoint():
    from mmtriton.server.stack import _web_environment

    env = _web_environment("http://c:4318/v1/traces")
    assert env[client_tracing.ENDPOINT_ENV] == "http://c:4318/v1/traces"
    assert _web_environment(None).get(client_tracing.ENDPOINT_ENV) == os.environ.get(
        client_tracing.ENDPOINT_ENV
    )  # tracing off: the page's environment is left as it is


def test_a_step_without_the_sdk_serves_untraced_and_says_so(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.json.http.trace_exporter", None)
    tracer = step_tracing.StepTracer("fusion", endpoint="http://127.0.0.1:9/v1/traces")
    assert not tracer.enabled
    assert "this step's own spans are off" in capsys.readouterr().err
