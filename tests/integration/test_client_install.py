"""`pip install ./client` in a fresh venv: the library and `mmtriton infer` without torch,
onnx or pytriton, reaching a real server."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnx", "onnxruntime", "nvidia-pytriton", "gradio")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A new venv with only the client distribution installed (pins from requirements.lock)."""
    where = tmp_path_factory.mktemp("client-venv")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "requirements.lock"),
            str(ROOT / "client"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return where


def test_client_installs_without_the_training_or_serving_stack(client_venv):
    python = client_venv / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "mmtriton-client" in names
    assert not names & set(HEAVY), f"pulled in {sorted(names & set(HEAVY))}"
    imported = subprocess.run(
        [str(python), "-c", "import mmtriton_client, sys; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=client_venv,  # not the project folder: nothing from the checkout leaks in
    )
    assert "mmtriton_client" in imported.stdout
    assert "torch" not in imported.stdout and "mmtriton_build" not in imported.stdout


def test_client_infer_reaches_a_running_server(client_venv, triton_server, built_artifacts):
    from mmtriton_build.examples import load_examples

    example = next(e for e in load_examples(built_artifacts, 32) if e.image)
    image = client_venv / "digit.png"
    image.write_bytes(example.image)
    out = subprocess.run(
        [
            str(client_venv / "bin" / "mmtriton"),
            "infer",
            "--url",
            triton_server.grpc_url,
            "--image",
            str(image),
            "--text",
            example.text or "a digit",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=client_venv,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["label"] == example.label
    assert answer["modalities"] == ["image", "text"]
    helped = subprocess.run(
        [str(client_venv / "bin" / "mmtriton"), "--help"], capture_output=True, text=True
    )
    listed = {line.split()[0] for line in helped.stdout.splitlines() if line.startswith("    ")}
    assert listed == {"infer", "web"}, helped.stdout
