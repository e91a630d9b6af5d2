"""Idempotent build steps: a step is skipped when its outputs exist for the same inputs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def fingerprint(*parts: object) -> str:
    """A short, stable hash of JSON-serialisable parts (config sections, upstream keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class StepRunner:
    """Runs named steps, skipping those whose stamp matches, and records each step's time."""

    stamp_dir: Path
    force: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, key: str, outputs: list[Path], fn: Callable[[], None]) -> bool:
        """Run `fn` unless every output exists and the stamp for `name` equals `key`.

        Returns True when the step ran.
        """
        stamp = self.stamp_dir / f"{name}.stamp"
        fresh = stamp.exists() and stamp.read_text() == key and all(p.exists() for p in outputs)
        if fresh and not self.force:
            print(f"[{name}] up to date, skipped", flush=True)
            self.timings[name] = 0.0
            return False
        print(f"[{name}] running", flush=True)
        start = time.perf_counter()
        fn()
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise RuntimeError(f"step {name} did not produce {missing}")
        self.timings[name] = time.perf_counter() - start
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
        print(f"[{name}] done in {self.timings[name]:.1f} s", flush=True)
        return True
