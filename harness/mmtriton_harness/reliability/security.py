"""What a client cannot do: change the model repository, touch shared memory or the server's
settings, send oversized inputs, or talk to a TLS server in plaintext."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from mmtriton import spec
from mmtriton.server.flags import ADMIN_HEADER
from mmtriton.server.process import TritonProcess
from mmtriton_client.client import ClientError, MultimodalClient, Sample

from .hostile import choose_reference, judge, send
from .payloads import Case, one
from .servers import is_ready

# Triton prefixes the gRPC metadata key of a restricted protocol.
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"

HTTP_ADMIN_CALLS = (
    ("POST", "/v2/repository/index", {}),
    ("POST", f"/v2/repository/models/{spec.ENSEMBLE.name}/load", {}),
    ("POST", "/v2/repository/models/fusion/unload", {}),
    ("POST", "/v2/systemsharedmemory/region/evil/register", {"key": "/evil", "byte_size": 64}),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/logging", {"log_verbose_level": 3}),
    ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
)


def http_call(base: str, method: str, path: str, body=None, headers=None) -> tuple[int, str]:
    """(status code, body) of one HTTP request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def grpc_admin_calls(client, headers: dict | None) -> dict[str, tuple[str, str]]:
    """{call: (status, message)} of the gRPC admin calls, with these headers."""
    calls = {
        "get_model_repository_index": lambda: client.get_model_repository_index(headers=headers),
        "load_model": lambda: client.load_model(spec.ENSEMBLE.name, headers=headers),
        "unload_model": lambda: client.unload_model("fusion", headers=headers),
        "register_system_shared_memory": lambda: client.register_system_shared_memory(
            "evil", "/evil", 64, headers=headers
        ),
        "get_system_shared_memory_status": lambda: client.get_system_shared_memory_status(
            headers=headers
        ),
        "update_log_settings": lambda: client.update_log_settings(
            {"log_verbose_level": 3}, headers=headers
        ),
    }
    return {name: _status_of(call) for name, call in calls.items()}


def _status_of(call) -> tuple[str, str]:
    """("OK", "") or the (status, message) of the error `call()` raised."""
    try:
        call()
    except Exception as exc:
        return str(exc.status()).replace("StatusCode.", ""), exc.message()[:160]
    return "OK", ""


def run_admin_apis(server: TritonProcess) -> dict:
    """Every admin API without the header (refused), and load/unload with it (refused too:
    the repository is fixed at start, --model-control-mode=none)."""
    import tritonclient.grpc as grpcclient

    http = {f"{m} {p}": http_call(server.http_url, m, p, b)[0] for m, p, b in HTTP_ADMIN_CALLS}
    admin = {ADMIN_HEADER: server.settings.admin_key}
    http_admin = {
        f"{m} {p}": http_call(server.http_url, m, p, b, admin) for m, p, b in HTTP_ADMIN_CALLS[:3]
    }
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        grpc = grpc_admin_calls(client, None)
        admin_grpc = {GRPC_ADMIN_HEADER: server.settings.admin_key}
        grpc_admin_load = {
            "load_model": _status_of(
                lambda: client.load_model(spec.ENSEMBLE.name, headers=admin_grpc)
            ),
            "unload_model": _status_of(lambda: client.unload_model("fusion", headers=admin_grpc)),
        }
        still_ready = client.is_server_ready() and client.is_model_ready(spec.ENSEMBLE.name)
    return {
        "http_without_header": http,
        "grpc_without_header": {k: v[0] for k, v in grpc.items()},
        "grpc_message": next(iter(grpc.values()))[1],
        "http_with_admin_header": {k: [v[0], v[1][:120]] for k, v in http_admin.items()},
        "grpc_with_admin_header": {k: list(v) for k, v in grpc_admin_load.items()},
        "models_still_ready": still_ready,
    }


def admin_apis_refused(result: dict) -> bool:
    """No admin call got through without the header, and no model could be (un)loaded."""
    http_ok = all(code == 403 for code in result["http_without_header"].values())
    grpc_ok = all(s != "OK" for s in result["grpc_without_header"].values())
    admin = result["http_with_admin_header"]
    index_code = admin["POST /v2/repository/index"][0]
    no_load = all(v[0] >= 400 for k, v in admin.items() if k.endswith(("load", "unload")))
    no_grpc_load = all(v[0] != "OK" for v in result["grpc_with_admin_header"].values())
    return (
        http_ok
        and grpc_ok
        and index_code == 200
        and no_load
        and no_grpc_load
        and result["models_still_ready"]
    )


def run_upload_limits(url: str, examples: Sequence) -> dict:
    """Oversized inputs: refused by the server (sent raw) and by the client library (before
    sending). A 32 MB image checks that gRPC hands it over and preprocessing refuses it."""
    import tritonclient.grpc as grpcclient

    limits = spec.LIMITS
    big_text = b"x" * (limits.max_text_chars + 1)
    cases = [
        Case(
            "image_limit_plus_1",
            "image",
            one(image=b"\0" * (limits.max_image_bytes + 1)),
            "invalid",
            ("limit",),
        ),
        Case("image_32mb", "image", one(image=b"\0" * (32 * 2**20)), "invalid", ("limit",)),
        Case(
            "audio_limit_plus_1",
            "audio",
            one(audio=b"\0" * (limits.max_audio_bytes + 1)),
            "invalid",
            ("limit",),
        ),
        Case("text_limit_plus_1", "text", one(text=big_text), "invalid", ("limit",)),
    ]
    server_side = {}
    with grpcclient.InferenceServerClient(url) as raw:
        for case in cases:
            ok, status, message = judge(case, send(raw, case))
            server_side[case.name] = {"refused": ok, "status": status, "message": message[:160]}
    client_side = {}
    with MultimodalClient(url) as client:
        ref = choose_reference(client, examples)
        for name, sample in {
            "image": Sample(image=b"\0" * (limits.max_image_bytes + 1)),
            "audio": Sample(audio=b"\0" * (limits.max_audio_bytes + 1)),
            "text": Sample(text="x" * (limits.max_text_chars + 1)),
        }.items():
            try:
                client.predict(sample)
                client_side[name] = "sent"
            except ClientError as exc:
                client_side[name] = exc.status
        after = client.predict(Sample(image=ref.image)).label == ref.label
    return {
        "limits": {
            "max_image_bytes": limits.max_image_bytes,
            "max_image_pixels": limits.max_image_pixels,
            "max_text_chars": limits.max_text_chars,
            "max_audio_bytes": limits.max_audio_bytes,
            "max_audio_seconds": limits.max_audio_seconds,
        },
        "server_refuses": server_side,
        "client_refuses": client_side,
        "served_after": after,
    }


# --------------------------------------------------------------------------- TLS


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1 (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = {
        n: folder / f"{n}.pem"
        for n in ("ca", "ca_key", "cert", "key", "csr", "other_ca", "other_key")
    }
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    for ca, key, cn in (("ca", "ca_key", "mmtriton test CA"), ("other_ca", "other_key", "other")):
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(p[key]),
            "-out",
            str(p[ca]),
        )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(p["key"]),
        "-out",
        str(p["csr"]),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(p["csr"]),
        "-CA",
        str(p["ca"]),
        "-CAkey",
        str(p["ca_key"]),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(ext),
        "-out",
        str(p["cert"]),
    )
    return p


def run_tls(folder: Path, examples: Sequence, start) -> dict:
    """A server with gRPC TLS: the CA-verified client is served; plaintext and a client
    trusting another CA are not. (Triton has no TLS on HTTP: keep port 8000 internal.)"""
    certs = make_certificates(folder / "certs")
    server = start(folder / "logs", tls_cert=str(certs["cert"]), tls_key=str(certs["key"]))
    out: dict = {}
    try:
        with MultimodalClient(server.grpc_url, ssl=True, root_certificates=str(certs["ca"])) as c:
            ref = choose_reference(c, examples)
            out["tls_client_label_correct"] = c.predict(Sample(image=ref.image)).label == ref.label
        for name, kwargs in {
            "plaintext": {},
            "tls_other_ca": {"ssl": True, "root_certificates": str(certs["other_ca"])},
        }.items():
            with MultimodalClient(server.grpc_url, timeout_s=5, **kwargs) as c:
                c.retry.attempts = 1
                try:
                    c.predict(Sample(image=ref.image))
                    out[name] = "served"
                except ClientError as exc:
                    out[name] = exc.status
        # Triton serves HTTP without TLS: inference stays reachable in plaintext on port 8000.
        out["http_plaintext_open"] = is_ready(server)
    finally:
        out["exit_code"] = server.stop()
        out["shm_regions_left"] = len(server.leaked_at_exit)
    return out


def tls_ok(result: dict) -> bool:
    return (
        result["tls_client_label_correct"]
        and result["plaintext"] != "served"
        and result["tls_other_ca"] != "served"
        and result["exit_code"] == 0
    )
