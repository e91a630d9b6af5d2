"""What a container image holds, for a container played on this machine.

The image config (ENTRYPOINT, CMD, ENV, USER, WORKDIR) is read from k8s/images/Dockerfile: the
manifests' image `registry/.../<target>:<tag>` is the Dockerfile stage `<target>`, and a stage
inherits from the stage or base image it is built FROM. The image's files are the project's:
`COPY <context path> <image path>` maps the image path back to the context path, and what RUN
steps and NVIDIA's base image produce is listed in IMAGE_FILES (the venv that `make venv`
builds from the same requirements.lock, the tritonserver of the nvidia-pytriton wheel).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
SHIM = Path(__file__).resolve().parent / "passthrough-entrypoint.sh"

_STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Config of the external base images, as their publishers define it.
BASE_IMAGES: dict[str, dict] = {
    # NGC Triton: a shell entrypoint that execs its arguments; tritonserver on PATH.
    "nvcr.io/nvidia/tritonserver": {
        "entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"],
        "cmd": [],
        "env": {
            "PATH": "/opt/tritonserver/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:" + _STD_PATH
        },
    },
    # Docker Official python image: no entrypoint, `python3` as CMD.
    "python": {"entrypoint": [], "cmd": ["python3"], "env": {"PATH": _STD_PATH, "LANG": "C.UTF-8"}},
}


def _venv_site() -> Path:
    return (
        VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )


def image_files() -> dict[str, Path]:
    """Image paths produced by RUN steps or the base image -> their stand-ins here."""
    pytriton = _venv_site() / "pytriton"
    return {
        "/opt/mmtriton/venv": VENV,  # RUN python3.11 -m venv + pip install -c requirements.lock
        "/opt/mmtriton/stub/pytriton": pytriton,  # RUN ...extract the 3.11 stub from the wheel
        "/opt/tritonserver": pytriton / "tritonserver",  # the NGC base image's Triton 2.51
        "/opt/nvidia/nvidia_entrypoint.sh": SHIM,  # the NGC base image's entrypoint
    }


@dataclass
class ImageConfig:
    """The parts of an image config a container runtime uses, plus its file map."""

    name: str
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str = "/"
    files: dict[str, Path] = field(default_factory=dict)  # image path -> host path


@dataclass
class _Stage:
    base: str
    lines: list[str]


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse_stages(dockerfile: Path) -> dict[str, _Stage]:
    """{stage name: its base and instructions} of a multi-stage Dockerfile."""
    stages: dict[str, _Stage] = {}
    current: _Stage | None = None
    for line in _logical_lines(dockerfile.read_text()):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
            current = _Stage(parts[0], [])
            stages[name] = current
        elif current is not None:
            current.lines.append(line)
    return stages


def _json_or_shell(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        return list(json.loads(rest))
    return ["/bin/sh", "-c", rest]  # shell form


def _env_pairs(rest: str, env: dict[str, str]) -> dict[str, str]:
    out = {}
    for token in shlex.split(rest):
        key, sep, value = token.partition("=")
        if sep:
            out[key] = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value
            )
    return out


def _base_config(base: str) -> ImageConfig:
    repo = base.split("@")[0].rsplit(":", 1)[0] if ":" in base.split("/")[-1] else base
    known = BASE_IMAGES.get(repo) or BASE_IMAGES.get(repo.split("/")[-1])
    if known is None:
        raise KeyError(f"base image {base!r} is not described in BASE_IMAGES")
    return ImageConfig(
        name=base,
        entrypoint=list(known["entrypoint"]),
        cmd=list(known["cmd"]),
        env=dict(known["env"]),
    )


def stage_config(stages: dict[str, _Stage], name: str, context: Path = ROOT) -> ImageConfig:
    """The config of stage `name`, inheriting from its FROM chain as Docker does."""
    stage = stages[name]
    parent = (
        stage_config(stages, stage.base, context)
        if stage.base in stages
        else _base_config(stage.base)
    )
    config = ImageConfig(
        name=name,
        entrypoint=list(parent.entrypoint),
        cmd=list(parent.cmd),
        env=dict(parent.env),
        user=parent.user,
        workdir=parent.workdir,
        files=dict(parent.files),
    )
    for line in stage.lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ENV":
            config.env.update(_env_pairs(rest, config.env))
        elif word == "ENTRYPOINT":
            config.entrypoint = _json_or_shell(rest)
            config.cmd = []  # Docker: a new ENTRYPOINT resets an inherited CMD
        elif word == "CMD":
            config.cmd = _json_or_shell(rest)
        elif word == "USER":
            config.user = rest.strip()
        elif word == "WORKDIR":
            config.workdir = rest.strip()
        elif word == "COPY" and "--from=" not in rest:
            *sources, dest = [t for t in shlex.split(rest) if not t.startswith("--")]
            if len(sources) == 1:
                config.files[dest.rstrip("/")] = context / sources[0]
    return config


DOCKERFILE = ROOT / "k8s" / "images" / "Dockerfile"


def image_config(image: str, dockerfile: Path = DOCKERFILE) -> ImageConfig:
    """The config of a manifest image `registry/path/<target>:<tag>` (or `@sha256:`)."""
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    target = last.split(":")[0]
    stages = parse_stages(dockerfile)
    if target not in stages:
        raise KeyError(f"image {image!r}: no stage {target!r} in {dockerfile}")
    config = stage_config(stages, target)
    config.name = image
    config.files = {**image_files(), **config.files}
    return config
