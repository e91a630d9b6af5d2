"""The rendered manifests played here the way a kubelet would (k8s/rehearsal).

One rehearsal of the CPU overlay (with the self-healing steps) and one of the GPU overlay run
through the real CLI (`python -m k8s.rehearsal`, what `make rehearse` runs); each test checks
one thing the summary records. Real tritonserver, real probes over HTTP, real gRPC answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k8s.rehearsal.manifests import render

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _require_repository() -> None:
    if not (ROOT / "model_repository" / "image_encoder" / "1" / "model.onnx").exists():
        pytest.fail("model_repository is not exported; run `make repository`")


def _rehearse(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "k8s.rehearsal",
            *args,
            "--json",
            str(summary_path),
            "--out-dir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    log = done.stdout + done.stderr
    (tmp_path / "rehearsal.log").write_text(log)
    assert summary_path.exists(), f"no summary written:\n{log[-4000:]}"
    return done.returncode, json.loads(summary_path.read_text()), log


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> dict:
    """`python -m k8s.rehearsal --overlay cpu --heal`, once for the module."""
    _require_repository()
    args = ["--overlay", "cpu", "--samples", "32", "--heal"]  # every Deployment, then faults
    code, summary, log = _rehearse(tmp_path_factory.mktemp("cpu"), *args)
    summary["_exit"], summary["_log"] = code, log
    summary["_readiness"] = _triton_probe("cpu", "readinessProbe")
    return summary


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> dict:
    _require_repository()
    code, summary, log = _rehearse(
        tmp_path_factory.mktemp("gpu"),
        "--overlay",
        "gpu",
        "--pods",
        "triton",
        "--expect",
        "gpu-missing",
    )
    summary["_exit"], summary["_log"] = code, log
    return summary


def _triton(summary: dict) -> dict:
    return next(p for p in summary["pods"] if p["workload"] == "Deployment/triton")


def _explain(summary: dict) -> str:
    """The outcome and the step log's events (the JSON summary that follows them is left out)."""
    steps = summary["_log"].split("\n== summary")[0]
    lines = [ln for ln in steps.splitlines() if "NOT ENFORCED" not in ln and "rewrote" not in ln]
    return f"{summary.get('outcome') or summary.get('error')}\n" + "\n".join(lines[-60:])


def test_cpu_overlay_comes_up_ready_and_answers_held_out_samples(cpu_run):
    pod = _triton(cpu_run)
    assert all(i["exit_code"] == 0 for i in pod["init_containers"]), _explain(cpu_run)
    assert pod["stopped_at"] is None, _explain(cpu_run)
    assert [t for t, ready in pod["ready_history"] if ready], _explain(cpu_run)
    inference = cpu_run.get("inference")
    assert inference is not None, _explain(cpu_run)
    assert inference["service"] == "triton-grpc:8001"
    assert inference["samples"] == 32 and inference["failed"] == 0
    assert inference["accuracy"] >= 0.95, inference


def test_web_page_answers_through_its_service_which_reaches_triton_through_its_service(cpu_run):
    page = cpu_run.get("web_page")
    assert page is not None, _explain(cpu_run)
    assert page["service"] == "mmtriton-web:7860"
    assert page["errors"] == [] and page["accuracy"] >= 0.95, page
    assert cpu_run["services"]["mmtriton-web:7860"]["forwarded"] >= 1


def test_cpu_pod_stops_gracefully_in_its_grace_period_leaving_no_shm_region(cpu_run):
    pod = _triton(cpu_run)
    [stop] = [s for s in pod["stop"] if s["container"] == "triton"]
    grace = _grace("cpu")
    assert not stop["escalated_to_sigkill"], stop
    assert stop["exit_code"] == 0, stop
    assert stop["seconds"] < grace, stop
    if _triton_container("cpu").get("lifecycle", {}).get("preStop"):
        assert stop["pre_stop"] is not None and stop["pre_stop"].startswith("exit 0"), stop
    # Nothing of the last instance is left in /dev/shm (the Python backend's regions).
    [container] = [c for c in pod["containers"] if c["name"] == "triton"]
    assert container["shm_regions_mapped"] > 0
    assert pod["shm_left"]["after_graceful_stop"] == [], pod["shm_left"]


def _triton_container(overlay: str) -> dict:
    """The Triton container as rendered."""
    for obj in render(ROOT / "k8s" / "overlays" / overlay).of_kind("Deployment"):
        if obj["metadata"]["name"] == "triton":
            containers = obj["spec"]["template"]["spec"]["containers"]
            return next(c for c in containers if c["name"] == "triton")
    raise AssertionError("no triton Deployment")


def _triton_probe(overlay: str, kind: str) -> dict:
    """The Triton container's probe as rendered, with Kubernetes' defaults filled in."""
    probe = _triton_container(overlay)[kind]
    return {"periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3, **probe}


def _grace(overlay: str) -> float:
    for obj in render(ROOT / "k8s" / "overlays" / overlay).of_kind("Deployment"):
        if obj["metadata"]["name"] == "triton":
            return float(obj["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))
    raise AssertionError("no triton Deployment")


def test_dead_stub_turns_readiness_false_naming_it_then_heals_in_place(cpu_run):
    kill = cpu_run["stub_kill"]
    assert "error" not in kill, _explain(cpu_run)
    # The pod's readiness endpoint (what the kubelet probes) said 503 within 5 s, naming it...
    assert kill["endpoint_unready_after_s"] is not None, kill
    assert kill["endpoint_unready_after_s"] < 5, kill
    assert kill["endpoint_named_the_stub"], kill
    # ...and 200 again within 30 s of the death, healed without a container restart.
    assert kill["endpoint_ready_again_after_s"] < 30, kill
    assert kill["container_restarts"] == 0 and kill["healed_in_place"], kill
    # The kubelet's view agrees with the endpoint: when the endpoint stayed unready longer
    # than the probe needs (period x failureThreshold + period), the pod left the endpoints.
    probe = cpu_run["_readiness"]
    outage = kill["endpoint_ready_again_after_s"] - kill["endpoint_unready_after_s"]
    if outage > probe["periodSeconds"] * (probe["failureThreshold"] + 1) + probe["timeoutSeconds"]:
        assert kill["pod_unready_after_s"] is not None, kill
    after = cpu_run["after_stub_kill"]
    assert after["failed"] == 0 and after["accuracy"] >= 0.95, after


def test_liveness_failure_restarts_the_container(cpu_run):
    freeze = cpu_run["freeze"]
    assert "error" not in freeze, _explain(cpu_run)
    assert freeze["killed_by"] and freeze["killed_by"].startswith("liveness"), freeze
    assert freeze["pod_unready_after_s"] is not None, freeze
    assert freeze["restart_count"] >= 1 and freeze["ready_again_after_s"] is not None, freeze
    container = next(c for c in _triton(cpu_run)["containers"] if c["name"] == "triton")
    assert container["restarts"] == freeze["restart_count"]
    after = cpu_run["after_restart"]
    assert after["failed"] == 0 and after["accuracy"] >= 0.95, after
    assert cpu_run["ok"] and cpu_run["_exit"] == 0, _explain(cpu_run)


def test_gpu_overlay_stops_at_engine_step_naming_missing_gpu(gpu_run):
    pod = _triton(gpu_run)
    at = pod["stopped_at"]
    assert at is not None, _explain(gpu_run)
    [check] = gpu_run["gpu_checks"]
    assert at["container"] == check["first_gpu_step"], _explain(gpu_run)  # the first GPU step
    assert at["init"] and at["exit_code"] != 0
    assert "GPU" in at["message"] or "nvidia" in at["message"].lower(), at
    assert not at["traceback"], "a user-facing failure must not be a traceback"
    before = [i for i in pod["init_containers"] if i["name"] != at["container"]]
    assert before and all(i["exit_code"] == 0 for i in before), pod["init_containers"]
    assert gpu_run["ok"] and gpu_run["_exit"] == 0, _explain(gpu_run)
