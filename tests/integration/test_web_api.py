"""The web page without a browser: its logic, /predict API, /metrics and password."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from prometheus_client import CollectorRegistry

from mmtriton import spec
from mmtriton_build.examples import load_examples
from mmtriton_client.client import ClientError
from mmtriton_client.web.command import auth_from_env
from mmtriton_client.web.handlers import (
    Classifier,
    PageError,
    build_sample,
    classify,
    error_for,
    server_detail,
    sketch_png,
)
from mmtriton_client.web.metrics import WEB_ERROR_KINDS, WebMetrics

from ..conftest import free_port, start_triton

# ---------------------------------------------------------------- page logic, no server needed


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_no_input_is_a_friendly_message():
    with pytest.raises(PageError) as err:
        build_sample(None, None, "   ", None)
    assert err.value.kind == "no_input"
    assert "Nothing to classify" in err.value.message


def test_too_large_files_are_refused_before_sending(tmp_path):
    small = spec.Limits(max_image_bytes=100, max_audio_bytes=100)
    big = _write(tmp_path / "big.png", b"x" * 150)
    with pytest.raises(PageError, match=r"image file is too large: 150 bytes; the limit is 100"):
        build_sample(big, None, None, None, limits=small)
    with pytest.raises(PageError, match="audio file is too large"):
        build_sample(None, None, None, big, limits=small)
    with pytest.raises(PageError, match="empty"):
        build_sample(_write(tmp_path / "empty.wav", b""), None, None, None)


def test_the_tab_in_front_chooses_between_upload_and_drawing(tmp_path):
    ink = np.zeros((28, 28, 4), np.uint8)
    ink[5:20, 12:15] = (0, 0, 0, 255)
    white = np.full((28, 28, 4), 255, np.uint8)
    sketch = {"background": None, "layers": [ink], "composite": white}
    upload = _write(tmp_path / "a.png", b"PNG bytes")
    assert build_sample(upload, sketch, None, None, "upload").image_source == "upload"
    assert build_sample(upload, sketch, None, None, "draw").image_source == "drawing"
    assert build_sample(None, sketch, None, None, "upload").image_source == "drawing"
    png = build_sample(None, sketch, "", None, "draw").sample.image
    assert Image.open(io.BytesIO(png)).size == (28, 28)


def test_an_empty_pad_is_no_image():
    blank = np.zeros((28, 28, 4), np.uint8)
    assert sketch_png(None) is None
    assert sketch_png({"background": None, "layers": [blank], "composite": blank}) is None
    with pytest.raises(PageError, match="Nothing to classify"):
        build_sample(None, {"layers": [blank], "composite": blank}, None, None, "draw")


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        ("INVALID_ARGUMENT", "invalid_input", "could not be used: Image could not be read"),
        ("UNAVAILABLE", "server_unavailable", "not reachable right now"),
        ("RESOURCE_EXHAUSTED", "server_busy", "busy"),
        ("DEADLINE_EXCEEDED", "timeout", "did not answer within 5 s"),
        ("INTERNAL", "internal", "(INTERNAL)"),
    ],
)
def test_server_errors_become_friendly_messages(status, kind, words):
    exc = ClientError("in ensemble 'multimodal', sample 0: image could not be read", status)
    err = error_for(exc, "triton:8001", 5)
    assert err.kind == kind and kind in WEB_ERROR_KINDS
    assert words in err.message


def test_server_detail_strips_routing_prefixes_and_reprs():
    assert server_detail("in ensemble 'multimodal', sample 3: audio is empty") == "Audio is empty"
    raw = "image could not be read (cannot identify image file <_io.BytesIO object at 0x7f31>)"
    assert server_detail(raw) == "Image could not be read (cannot identify image file)"


def test_an_unreachable_server_is_counted_and_the_client_replaced():
    created = []

    class Down:
        def predict(self, sample):
            raise ClientError("connection refused", "UNAVAILABLE")

        def close(self):
            pass

    def factory():
        created.append(Down())
        return created[-1]

    metrics = WebMetrics(CollectorRegistry())
    classifier = Classifier("nowhere:1", factory=factory)
    for _ in range(2):
        result = classify(classifier, metrics, None, None, "seven", None)
        assert result.error_kind == "server_unavailable" and not result.ok
    assert len(created) == 2  # a fresh client (and gRPC channel) for each try after a failure
    registry = metrics.registry
    assert registry.get_sample_value("mmtriton_web_requests_total", {"modalities": "text"}) == 2
    assert registry.get_sample_value("mmtriton_web_errors_total", {"kind": "server_unavailable"})
    assert registry.get_sample_value("mmtriton_web_request_seconds_count") == 2


def test_password_comes_from_the_environment():
    assert auth_from_env({}) is None
    assert auth_from_env({"MMTRITON_WEB_PASSWORD": "pw"}) == ("admin", "pw")
    env = {"MMTRITON_WEB_PASSWORD": "pw", "MMTRITON_WEB_USER": "ops"}
    assert auth_from_env(env) == ("ops", "pw")


# ---------------------------------------------------------------- against a real tritonserver


@pytest.fixture(scope="module")
def example(built_artifacts):
    return next(e for e in load_examples(built_artifacts, 32) if e.image and e.text and e.audio)


@pytest.fixture(scope="module")
def page(triton_server, tmp_path_factory):
    from mmtriton_client.web.app import WebSettings, launch

    settings = WebSettings(
        triton_url=triton_server.grpc_url,
        n_examples=2,
    )
    server = launch(host="127.0.0.1", port=free_port(), block=False, settings=settings)
    yield server
    server.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.mark.integration
def test_predict_api_and_metrics(page, example, tmp_path):
    image = _write(tmp_path / "digit.png", example.image)
    audio = _write(tmp_path / "digit.wav", example.audio)
    client = Client(page.url, verbose=False)
    assert "/predict" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]

    answer = client.predict(handle_file(str(image)), example.text, handle_file(str(audio)))
    assert answer["label"] == example.label
    assert answer["modalities"] == ["image", "text", "audio"]
    assert abs(sum(answer["weights"].values()) - 1) < 1e-3

    only_text = client.predict(None, example.text, None, api_name="/predict")
    assert only_text["modalities"] == ["text"]

    broken = _write(tmp_path / "broken.png", b"\x89PNG\r\n\x1a\n not really an image")
    refused = client.predict(handle_file(str(broken)), "", None, api_name="/predict")
    assert refused["error"]["kind"] == "invalid_input"
    assert "could not be read" in refused["error"]["message"]

    metrics = _get(page.url + "/metrics")
    assert 'mmtriton_web_requests_total{modalities="image+text+audio"} 1.0' in metrics
    assert 'mmtriton_web_requests_total{modalities="text"} 1.0' in metrics
    assert 'mmtriton_web_errors_total{kind="invalid_input"} 1.0' in metrics
    assert "mmtriton_web_request_seconds_count 3.0" in metrics


@pytest.mark.integration
def test_mmtriton_web_with_a_password(triton_server, tmp_path):
    port = free_port()
    env = {**os.environ, "MMTRITON_WEB_PASSWORD": "s3cret", "MMTRITON_WEB_USER": "ops"}
    cmd = [sys.executable, "-m", "mmtriton.cli", "web", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--triton-url", triton_server.grpc_url, "--examples", "0"]
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()
            try:
                _get(url + "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "mmtriton web did not start"
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as denied:
            _get(url + "/config")
        assert denied.value.code == 401
        with pytest.raises(ValueError):
            Client(url, verbose=False)
        with pytest.raises(ValueError):
            Client(url, auth=("ops", "wrong"), verbose=False)
        client = Client(url, auth=("ops", "s3cret"), verbose=False)
        assert client.predict(None, "the digit seven", None, api_name="/predict")["label"] == "7"
        assert "mmtriton_web_requests_total" in _get(url + "/metrics")  # scrapeable without login
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(command: str) -> None:
        subprocess.run(["openssl", *command.split()], cwd=folder, check=True, capture_output=True)

    new_key = "-newkey rsa:2048 -nodes -days 1"
    openssl(f"req -x509 {new_key} -keyout ca.key -out ca.crt -subj /CN=mmtriton-test-ca")
    openssl(f"req {new_key} -keyout server.key -out server.csr -subj /CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
        "-out server.crt -extfile san.ext"
    )
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_grpc_tls_with_a_ca_certificate(tmp_path):
    from mmtriton_client.web.app import WebSettings, launch

    ca, cert, key = _tls_files(tmp_path / "tls")
    triton = start_triton(tmp_path / "triton", tls_cert=str(cert), tls_key=str(key))
    pages = []
    try:
        for root in (str(ca), None):  # trusting the CA, then plaintext (refused)
            settings = WebSettings(triton_url=triton.grpc_url, root_certificates=root, n_examples=0)
            pages.append(launch(host="127.0.0.1", port=free_port(), block=False, settings=settings))
        secure, plain = (Client(p.url, verbose=False) for p in pages)
        assert secure.predict(None, "the digit seven", None, api_name="/predict")["label"] == "7"
        refused = plain.predict(None, "the digit seven", None, api_name="/predict")
        assert refused["error"]["kind"] == "server_unavailable"
    finally:
        for page in pages:
            page.stop()
        triton.stop()
