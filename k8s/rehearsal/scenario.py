"""What a rehearsal checks for an overlay: the pods come up (or stop where expected), real
answers come back through the Service port, and the self-healing paths behave.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .events import Events
from .expand import EnvError
from .kubelet import ContainerRunner, PodRunner, run_check
from .manifests import Manifests, load, render
from .plan import Node, PodPlan
from .service import ServiceProxy
from .volumes import VolumeError, cleanup_memory_dirs

ROOT = Path(__file__).resolve().parents[2]
STUB_BINARY = "triton_python_backend_stub"
GPU_WORDS = re.compile(r"\bGPU\b|nvidia", re.IGNORECASE)


@dataclass
class Options:
    overlay: str = "cpu"
    expect: str = "ready"  # ready | gpu-missing
    pods: list[str] = field(default_factory=list)  # workload names; empty: all
    samples: int = 32
    min_accuracy: float = 0.95
    heal: bool = False
    keep: bool = False
    ready_timeout_s: float = 300.0
    out_dir: Path | None = None
    rendered: Path | None = None  # a pre-rendered YAML stream instead of the overlay dir


# -- inference through the Service ------------------------------------------------------------
def held_out_samples(n: int) -> list:
    """n test-split examples that carry all three modalities (the harness may use build code)."""
    from mmtriton.paths import artifacts_dir
    from mmtriton_build.examples import load_examples

    picked: list = []
    for example in load_examples(artifacts_dir(), max(4 * n, 64)):
        if example.image and example.text and example.audio:
            picked.append(example)
        if len(picked) == n:
            break
    if len(picked) < n:
        raise RuntimeError(f"only {len(picked)} three-modality test samples in the build")
    return picked


def grpc_service(node: Node) -> tuple[str, int, int] | None:
    """(Service name, Service port, host port) of the first gRPC Service backed by a pod."""
    candidates = []
    for svc in node.manifests.of_kind("Service"):
        headless = svc["spec"].get("clusterIP") == "None"
        for port in svc["spec"].get("ports", []):
            if port.get("appProtocol") == "grpc" or port.get("name") == "grpc":
                key = (svc["metadata"]["name"], int(port["port"]))
                if key in node.services.targets:
                    candidates.append((headless, *key, node.services.targets[key]))
    if not candidates:
        return None
    _, name, port, host = sorted(candidates)[0]
    return name, port, host


def tls_for(pod: PodPlan, node: Node) -> str | None:
    """The CA to trust when the pod serves gRPC over TLS, else None."""
    argv = " ".join(a for c in pod.containers for a in c.argv)
    if "--tls-cert" not in argv and "--grpc-use-ssl=true" not in argv:
        return None
    for data in node.secrets.rendered.values():
        if "ca.crt" in data or "tls.crt" in data:
            return data.get("ca.crt") or data["tls.crt"]
    return None


def infer(target: str, samples: list, events: Events, label: str, ca: str | None) -> dict:
    """Send the samples in batches of 8 with the project's client; accuracy vs the labels."""
    from mmtriton_client import ClientError, MultimodalClient, Sample

    correct = failed = 0
    batches = []
    with MultimodalClient(target, timeout_s=30, ssl=ca is not None, root_certificates=ca) as client:
        for i in range(0, len(samples), 8):
            chunk = samples[i : i + 8]
            t0 = time.perf_counter()
            try:
                preds = client.predict_batch(
                    [Sample(image=e.image, text=e.text, audio=e.audio) for e in chunk]
                )
            except ClientError as exc:
                failed += len(chunk)
                events(label, f"batch {i // 8 + 1}: FAILED {exc.status}: {exc}")
                batches.append({"n": len(chunk), "error": f"{exc.status}: {exc}"})
                continue
            ms = (time.perf_counter() - t0) * 1000
            ok = sum(p.label == e.label for p, e in zip(preds, chunk, strict=True))
            correct += ok
            events(label, f"batch {i // 8 + 1}: {ok}/{len(chunk)} correct ({ms:.0f} ms)")
            batches.append({"n": len(chunk), "correct": ok, "ms": round(ms, 1)})
    n = len(samples)
    return {
        "target": target,
        "samples": n,
        "correct": correct,
        "failed": failed,
        "accuracy": round(correct / n, 4) if n else 0.0,
        "batches": batches,
    }


def web_page_answers(front: int, samples: list, events: Events, label: str, workdir: Path) -> dict:
    """Ask the web page's /predict API (gradio) through its Service: page -> Triton's Service
    -> Triton, with the same held-out samples."""
    from gradio_client import Client, handle_file

    workdir.mkdir(parents=True, exist_ok=True)
    client = Client(f"http://127.0.0.1:{front}/", verbose=False)
    correct = 0
    errors = []
    for e in samples:
        image = workdir / f"{e.index}.png"
        audio = workdir / f"{e.index}.wav"
        image.write_bytes(e.image)
        audio.write_bytes(e.audio)
        try:
            answer = client.predict(
                handle_file(str(image)), e.text, handle_file(str(audio)), api_name="/predict"
            )
        except Exception as exc:  # the page's own error, reported as such
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        correct += answer.get("label") == e.label
    events(
        label,
        f"web page /predict: {correct}/{len(samples)} correct"
        + (f"; errors: {errors[:2]}" if errors else ""),
    )
    return {
        "samples": len(samples),
        "correct": correct,
        "errors": errors,
        "accuracy": round(correct / len(samples), 4) if samples else 0.0,
    }


# -- faults -----------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def stubs_of(runner: ContainerRunner) -> dict[int, str]:
    """{pid: instance name} of the Python-backend stubs inside the container."""
    assert runner.instance is not None
    out = {}
    for pid in runner.instance.pids():
        argv = _cmdline(pid)
        if argv and argv[0].endswith(STUB_BINARY):
            out[pid] = argv[8] if len(argv) > 8 else str(pid)
    return out


def _readiness_observer(
    runner: ContainerRunner,
    pod: PodRunner,
    stop: threading.Event,
    seen: list[tuple[float, bool, str]],
) -> None:
    """Poll the readiness probe's own handler every 0.25 s: exact timings of the endpoint."""
    spec = runner.plan.probes.get("readiness")
    if spec is None:
        return
    while not stop.is_set():
        r = run_check(spec, runner.plan, pod.plan, spec.timeout_s)
        seen.append((pod.events.now(), r.ok, r.detail))
        stop.wait(0.25)


def steady_ready(pod: PodRunner, events: Events, timeout_s: float = 120.0) -> bool:
    """Wait until the pod is Ready and its readiness endpoint has answered OK without a break
    for one probe period (polled every 0.25 s): a fault is only meaningful on a pod that is
    serving, not on one that is still settling or flapping."""
    runner = pod.container()
    spec = runner.plan.probes.get("readiness")
    if spec is None:
        return pod.wait_ready(True, timeout_s) is not None
    hold = spec.period_s + spec.timeout_s
    deadline = time.monotonic() + timeout_s
    ok_since: float | None = None
    last = ""
    while time.monotonic() < deadline:
        result = run_check(spec, runner.plan, pod.plan, spec.timeout_s)
        last = result.detail
        now = time.monotonic()
        ok_since = (ok_since or now) if result.ok else None
        if ok_since is not None and now - ok_since >= hold and pod.ready:
            return True
        time.sleep(0.25)
    events(
        pod.where,
        f"not steadily Ready within {timeout_s:.0f} s (last: {last[:120]}): no fault injected",
    )
    return False


def _wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def kill_stub_and_watch(pod: PodRunner, events: Events, timeout_s: float = 60.0) -> dict:
    """SIGKILL one stub. The pod's readiness endpoint must turn 503 naming the stub within 5 s
    and answer 200 again without a container restart (healed in place by `mmtriton serve`).

    Whether the kubelet's Ready condition flips too depends on how the heal time compares with
    the readiness probe's period x failureThreshold; it is recorded, with the probe's view.
    """
    if not steady_ready(pod, events):
        return {"ok": False, "error": "pod not steadily Ready before the fault"}
    runner = pod.container()
    stubs = stubs_of(runner)
    if not stubs:
        return {"ok": False, "error": "no Python-backend stub found in the container"}
    pid, name = sorted(stubs.items(), key=lambda kv: ("image_encoder" not in kv[1], kv[1]))[0]
    restarts_before = runner.restarts
    probes_before = len(runner.probe_log)
    history_before = len(pod.ready_history)
    seen: list[tuple[float, bool, str]] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_readiness_observer, args=(runner, pod, stop, seen), daemon=True
    )
    watcher.start()
    time.sleep(0.5)
    t_kill = events.now()
    os.kill(pid, signal.SIGKILL)
    events(pod.where, f"fault: SIGKILL stub {name} (pid {pid})")

    def failed_at() -> float | None:
        return next((t for t, ok, _ in list(seen) if t >= t_kill and not ok), None)

    def healed_at() -> float | None:
        first = failed_at()
        if first is None:
            return None
        return next((t for t, ok, _ in list(seen) if t > first and ok), None)

    _wait_for(lambda: failed_at() is not None, 10)
    _wait_for(lambda: healed_at() is not None, timeout_s)
    stop.set()
    watcher.join(5)
    back = pod.wait_ready(True, timeout_s)
    first_fail, healed = failed_at(), healed_at()
    failures = [d for t, ok, d in seen if t >= t_kill and not ok]
    kubelet = [p for p in runner.probe_log[probes_before:] if p["probe"] == "readiness"]
    unready = next((t for t, r in pod.ready_history[history_before:] if not r), None)
    spec = runner.plan.probes.get("readiness")
    result = {
        "stub": name,
        "pid": pid,
        "endpoint_unready_after_s": None if first_fail is None else round(first_fail - t_kill, 2),
        "endpoint_ready_again_after_s": None if healed is None else round(healed - t_kill, 2),
        # While unready, or in the first answer after it healed ("last heal: ..."); a detail
        # already seen before the kill (a stale last heal) does not count.
        "endpoint_named_the_stub": any(
            name in d
            for t, _, d in seen
            if t >= t_kill and d not in {b for u, _, b in seen if u < t_kill}
        ),
        "endpoint_reasons": list(dict.fromkeys(failures))[:3],
        "readiness_probe_failures": sum(1 for p in kubelet if not p["ok"] and p["t"] >= t_kill),
        "pod_unready_after_s": None if unready is None else round(unready - t_kill, 2),
        "readiness_probe": spec.describe() if spec else None,
        "container_restarts": runner.restarts - restarts_before,
    }
    result["healed_in_place"] = bool(
        healed is not None and back is not None and runner.restarts == restarts_before
    )
    result["ok"] = bool(
        result["healed_in_place"]
        and result["endpoint_named_the_stub"]
        and result["endpoint_unready_after_s"] is not None
        and result["endpoint_unready_after_s"] < 5
    )
    if healed is not None and unready is None and spec is not None:
        window = spec.period_s * spec.failure_threshold
        events(
            pod.where,
            f"kubelet view: the readiness probe saw {result['readiness_probe_failures']}"
            f" failure(s); healed in {healed - t_kill:.1f} s, before period x failureThreshold"
            f" ({window:g} s) could mark the pod unready",
        )
    events(
        pod.where,
        "stub kill: " + ("healed in place" if result["ok"] else "NOT healed as required"),
        **{k: v for k, v in result.items() if k != "ok"},
    )
    return result


def freeze_and_watch(pod: PodRunner, events: Events, timeout_s: float = 240.0) -> dict:
    """SIGSTOP the container's PID 1 (`mmtriton serve`): liveness must time out, the kubelet
    kill and restart the container, and the pod come back Ready."""
    if not steady_ready(pod, events):
        return {"ok": False, "error": "pod not steadily Ready before the fault"}
    runner = pod.container()
    assert runner.instance is not None
    pid = runner.instance.pid
    restarts_before = runner.restarts
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    events(
        pod.where,
        f"fault: SIGSTOP PID 1 of {runner.plan.name} (pid {pid}: {' '.join(_cmdline(pid)[:3])})",
    )
    went_false = pod.wait_ready(False, timeout_s)
    deadline = time.monotonic() + timeout_s
    while runner.restarts == restarts_before and time.monotonic() < deadline:
        time.sleep(0.2)
    restarted_after = time.monotonic() - t0 if runner.restarts > restarts_before else None
    back = pod.wait_ready(True, max(deadline - time.monotonic(), 1)) if restarted_after else None
    killed = next((t for t in reversed(runner.terminations) if "probe failed" in t.reason), None)
    result = {
        "pid": pid,
        "pod_unready_after_s": None if went_false is None else round(went_false, 2),
        "killed_by": killed.reason if killed else None,
        "kill_seconds": killed.seconds if killed else None,
        "escalated_to_sigkill": killed.escalated_to_sigkill if killed else None,
        "restarted_after_s": None if restarted_after is None else round(restarted_after, 2),
        "ready_again_after_s": None if back is None else round(time.monotonic() - t0, 2),
        "restart_count": runner.restarts,
    }
    result["ok"] = killed is not None and "liveness" in killed.reason and back is not None
    events(
        pod.where,
        "freeze: " + ("restarted by liveness, Ready again" if result["ok"] else "NOT recovered"),
        **{k: v for k, v in result.items() if k != "ok"},
    )
    return result


# -- the rehearsal ----------------------------------------------------------------------------
def _startup_budget(pod: PodPlan) -> float:
    budget = 60.0
    for c in pod.containers:
        for spec in c.probes.values():
            if spec.kind in ("startup", "readiness"):
                budget = max(budget, spec.initial_delay_s + spec.failure_threshold * spec.period_s)
    return budget + 30.0


def first_gpu_step(pod: PodPlan) -> str | None:
    """The first container (init containers in order, then main ones) that requests a GPU."""
    for c in [*pod.init, *pod.containers]:
        if c.gpu_request:
            return c.name
    return None


def describe_plan(pod: PodPlan, node: Node, events: Events) -> None:
    where = f"pod/{pod.name}"
    ports = ", ".join(f"{n} {p}->{pod.ports.ports[p]}" for n, p in pod.ports.names.items())
    events(where, f"ports (containerPort -> host): {ports or 'none'}")
    assert pod.volumes is not None
    for name, path in pod.volumes.dirs.items():
        events(where, f"volume {name} -> {path}")
    for c in [*pod.init, *pod.containers]:
        for a, b in dict.fromkeys(c.rewriter.changes):
            if len(a) < 160:
                events(f"{pod.workload}/{c.name}", f"rewrote {a!r} -> {b!r}")
        for kind, spec in c.probes.items():
            events(f"{pod.workload}/{c.name}", f"{kind} probe: {spec.describe()}")
    for note in pod.not_enforced:
        events(where, f"NOT ENFORCED: {note}")


def rehearse(opts: Options, events: Events | None = None) -> dict:
    """Play one overlay; the summary dict (its "ok" says whether it behaved as expected)."""
    events = events or Events()
    t_start = time.monotonic()
    out_dir = opts.out_dir or ROOT / "artifacts" / "rehearsal" / opts.overlay
    if opts.out_dir is None and out_dir.exists():
        shutil.rmtree(out_dir)  # only the default folder is cleared; a given one is kept
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"rehearsal-{opts.overlay}-"))
    summary: dict = {
        "overlay": opts.overlay,
        "expect": opts.expect,
        "ok": False,
        "pods": [],
        "logs": str(out_dir),
    }
    runners: list[PodRunner] = []
    proxies: list[ServiceProxy] = []
    plans: list[PodPlan] = []
    try:
        if opts.rendered is not None:
            events.section(f"load {opts.rendered}")
            manifests: Manifests = load(opts.rendered)
        else:
            events.section(f"render k8s/overlays/{opts.overlay}")
            manifests = render(ROOT / "k8s" / "overlays" / opts.overlay)
        events(
            "kubectl",
            f"kustomize: {len(manifests.objects)} objects, namespace {manifests.namespace}",
        )
        node = Node(manifests, root)
        plans = node.plan_all(opts.pods or None)
        events.section("create pod sandboxes (volumes, Secrets, env, ports)")
        failed_config: dict[str, str] = {}
        for pod in plans:
            try:
                node.materialize(pod)
            except (EnvError, VolumeError, KeyError) as exc:
                failed_config[pod.name] = f"CreateContainerConfigError: {exc}"
                events(f"pod/{pod.name}", failed_config[pod.name])
                continue
            describe_plan(pod, node, events)
        for name, keys in node.secrets.generated.items():
            events(
                "secrets",
                f"Secret {name} not rendered: generated test values for {', '.join(keys)}",
            )
        summary["generated_secrets"] = node.secrets.generated

        events.section("run pods")
        for pod in plans:
            if pod.name in failed_config:
                continue
            runner = PodRunner(pod, events, out_dir / "logs" / pod.name)
            runners.append(runner)
            if pod.kind == "Job" and runner.start():
                code = runner.wait_completed(
                    float(
                        (manifests_job(manifests, pod.workload).get("spec") or {}).get(
                            "activeDeadlineSeconds", 600
                        )
                    )
                )
                events(runner.where, f"Job finished: exit code {code}")
        long_running = [r for r in runners if r.plan.kind != "Job"]
        by_name = {r.plan.name: r for r in long_running}
        for (svc, port), front in node.services.targets.items():
            pod_name, pod_port = node.backends[(svc, port)]
            if pod_name in by_name:
                proxies.append(
                    ServiceProxy(
                        svc, port, front, pod_port, ready=lambda r=by_name[pod_name]: r.ready
                    ).start()
                )
        starters = [threading.Thread(target=r.start, daemon=True) for r in long_running]
        for t in starters:
            t.start()
        for r, t in zip(long_running, starters, strict=True):
            budget = min(_startup_budget(r.plan), opts.ready_timeout_s)
            t.join(budget)
            if not r.failed():
                took = r.wait_ready(True, budget)
                since = time.monotonic() - r.scheduled_at
                events(
                    r.where,
                    f"Ready {since:.1f} s after it was scheduled"
                    if took is not None
                    else f"NOT Ready within {budget:.0f} s",
                )

        summary["failed_config"] = failed_config
        if failed_config:  # a pod that cannot even be created fails either expectation
            summary.update(
                ok=False, outcome="; ".join(f"{k}: {v}" for k, v in failed_config.items())
            )
        elif opts.expect == "gpu-missing":
            summary.update(_check_gpu_missing(long_running))
        else:
            summary.update(_check_ready(long_running, node, opts, events))
    except Exception as exc:  # the summary still says what happened
        events("rehearsal", f"error: {type(exc).__name__}: {exc}")
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["ok"] = False
    finally:
        events.section("stop pods")
        summary["services"] = {
            f"{px.name}:{px.port}": {
                "front": px.listen_port,
                "pod_port": px.backend_port,
                "forwarded": px.forwarded,
                "refused": px.refused,
            }
            for px in proxies
        }
        for r in reversed(runners):
            stopped = r.stop() if r.containers else []
            summary["pods"].append(_pod_summary(r, stopped))
        for plan in plans:  # every sandbox made, started or not
            if plan.volumes is not None:
                cleanup_memory_dirs(plan.volumes)
        for px in proxies:
            px.stop()
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)
        summary["seconds"] = round(time.monotonic() - t_start, 1)
        summary["events"] = events.items
    return summary


def manifests_job(manifests: Manifests, name: str) -> dict:
    return next(j for j in manifests.of_kind("Job") if j["metadata"]["name"] == name)


def _check_gpu_missing(pods: list[PodRunner]) -> dict:
    """The GPU pod must stop at its first GPU step, with a message (no traceback) naming it."""
    gpu_pods = [r for r in pods if first_gpu_step(r.plan)]
    if not gpu_pods:
        return {"ok": False, "outcome": "no pod requests a GPU"}
    checks = []
    for r in gpu_pods:
        step = first_gpu_step(r.plan)
        at = r.stopped_at or {}
        ok = (
            at.get("container") == step
            and bool(GPU_WORDS.search(at.get("message", "")))
            and not at.get("traceback")
        )
        checks.append({"pod": r.plan.name, "first_gpu_step": step, "stopped_at": at, "ok": ok})
    outcome = "; ".join(
        f"stopped at {'init container' if c['stopped_at'].get('init') else 'container'} "
        f"{c['stopped_at'].get('container')}: {c['stopped_at'].get('message')}"
        if c["stopped_at"]
        else f"{c['pod']} did not stop at {c['first_gpu_step']}"
        for c in checks
    )
    return {"ok": all(c["ok"] for c in checks), "outcome": outcome, "gpu_checks": checks}


def _check_ready(pods: list[PodRunner], node: Node, opts: Options, events: Events) -> dict:
    out: dict = {"outcome": ""}
    not_ready = [r.plan.name for r in pods if not r.ready]
    if not_ready:
        stopped = [
            f"{r.plan.name} stopped at {r.stopped_at['container']}: {r.stopped_at['message']}"
            for r in pods
            if r.stopped_at
        ]
        out.update(
            ok=False,
            outcome="not Ready: "
            + ", ".join(not_ready)
            + (f" ({'; '.join(stopped)})" if stopped else ""),
        )
        return out
    svc = grpc_service(node)
    if svc is None:
        out.update(ok=False, outcome="no gRPC Service backed by a played pod")
        return out
    name, port, host = svc
    backend_pod, pod_port = node.backends[(name, port)]
    server = next(r for r in pods if r.plan.name == backend_pod)
    ca = tls_for(server.plan, node)
    samples = held_out_samples(opts.samples)
    events.section(
        f"inference through Service {name}:{port} (127.0.0.1:{host}) -> pod {backend_pod} "
        f"(127.0.0.1:{pod_port})"
    )
    first = infer(f"127.0.0.1:{host}", samples, events, f"svc/{name}", ca)
    first["service"] = f"{name}:{port}"
    out["inference"] = first
    ok = first["accuracy"] >= opts.min_accuracy and first["failed"] == 0
    for (svc, svc_port), (pod_name, _) in node.backends.items():
        web = next((r for r in pods if r.plan.name == pod_name and r is not server), None)
        if web is None or not _is_http(node, svc, svc_port):
            continue
        events.section(f"the web page through Service {svc}:{svc_port}")
        out["web_page"] = web_page_answers(
            node.services.targets[(svc, svc_port)],
            samples[:4],
            events,
            f"svc/{svc}",
            node.root / "web",
        )
        out["web_page"]["service"] = f"{svc}:{svc_port}"
        ok = ok and out["web_page"]["accuracy"] >= opts.min_accuracy
        break
    if opts.heal:
        events.section("self-healing: SIGKILL of a Python-backend stub")
        out["stub_kill"] = kill_stub_and_watch(server, events)
        out["after_stub_kill"] = infer(f"127.0.0.1:{host}", samples[:8], events, f"svc/{name}", ca)
        events.section("self-healing: SIGSTOP of the container (liveness -> restart)")
        out["freeze"] = freeze_and_watch(server, events)
        out["after_restart"] = infer(f"127.0.0.1:{host}", samples[:8], events, f"svc/{name}", ca)
        ok = (
            ok
            and out["stub_kill"]["ok"]
            and out["freeze"]["ok"]
            and all(
                out[k]["accuracy"] >= opts.min_accuracy and out[k]["failed"] == 0
                for k in ("after_stub_kill", "after_restart")
            )
        )
    out["ok"] = ok
    out["outcome"] = (
        f"Ready; {first['correct']}/{first['samples']} held-out samples correct through "
        f"{name}:{port}" + (" ; healed" if opts.heal and ok else "")
    )
    return out


def _is_http(node: Node, name: str, port: int) -> bool:
    for svc in node.manifests.of_kind("Service"):
        if svc["metadata"]["name"] == name:
            return any(
                p["port"] == port and p.get("appProtocol", "http") == "http"
                for p in svc["spec"].get("ports", [])
            )
    return False


def _pod_summary(r: PodRunner, stopped: list[dict]) -> dict:
    return {
        "name": r.plan.name,
        "workload": f"{r.plan.kind}/{r.plan.workload}",
        "ports": {name: [p, r.plan.ports.ports[p]] for name, p in r.plan.ports.names.items()},
        "init_containers": r.init_results,
        "stopped_at": r.stopped_at,
        "containers": [
            {
                "name": c.plan.name,
                "restarts": c.restarts,
                "probes": {k: s.describe() for k, s in c.plan.probes.items()},
                "probe_failures": sum(1 for p in c.probe_log if not p["ok"]),
                "shm_regions_mapped": len(set().union(*c.shm_seen.values())),
                "terminations": [t.__dict__ for t in c.terminations],
            }
            for c in r.containers
        ],
        "ready_history": r.ready_history,
        "stop": stopped,
        "shm_left": r.shm_left,
        "not_enforced": r.plan.not_enforced,
    }
