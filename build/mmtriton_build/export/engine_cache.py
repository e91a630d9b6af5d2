"""A crash-safe, shared cache of built files (TensorRT plans), one lock per key.

Many pods share the cache volume and any of them can be killed mid-build (node drain, OOM,
eviction), so:

- a build writes to a temporary file in the entry's own folder, fsyncs it and renames it into
  place (rename is atomic within one file system, also over NFSv4);
- the entry's metadata JSON is written the same way, last: it is the commit record. An entry
  counts as a hit only when its metadata parses, names the same key, and the plan's size and
  SHA-256 match it, so a partial or foreign file is never served;
- builders of one key take an exclusive `flock` on `<key>.lock` beside the plan, so two pods
  never build the same engine at once: the second waits, then finds the first one's result.
  The kernel drops the lock when its holder dies, so a killed build never blocks the others,
  and the next holder removes the temporary files the dead one left.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp."
POLL_S = 0.2


class LockTimeout(TimeoutError):
    """Another builder held the key's lock past the deadline."""


def file_sha256(path: Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A temporary name beside `final` (same folder, so rename is atomic), unique per process."""
    return final.with_name(f".{final.name}{TMP_MARK}{socket.gethostname()}.{os.getpid()}")


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it over `final`, fsync the folder: all or nothing, even on power loss."""
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write `data` to `final` through a temporary file and `commit`."""
    tmp = temp_path(final)
    tmp.write_bytes(data)
    commit(tmp, final)


@contextlib.contextmanager
def exclusive_lock(
    lock_path: Path,
    deadline: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if needed) until the block ends.

    Waits for another holder until `deadline` (time.monotonic()), then raises LockTimeout.
    `on_wait` is called once with the current holder's note (host and pid) when it must wait.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    on_wait(holder or "another builder")
                waited = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"{lock_path} is still held by another builder") from None
                time.sleep(POLL_S)
        # Who holds it, for the messages of those who wait (informative only).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


@dataclass(frozen=True)
class CacheEntry:
    """The files of one key: `<key>.plan`, `<key>.json` (metadata, the commit record), lock."""

    folder: Path
    key: str

    @property
    def plan(self) -> Path:
        return self.folder / f"{self.key}.plan"

    @property
    def metadata(self) -> Path:
        return self.folder / f"{self.key}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.key}.lock"

    def read_metadata(self) -> dict[str, Any] | None:
        """The committed metadata, or None when absent or unreadable."""
        try:
            meta = json.loads(self.metadata.read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def valid(self, verify_hash: bool = True) -> bool:
        """A complete, committed entry: metadata for this key and a plan that matches it."""
        meta = self.read_metadata()
        if meta is None or meta.get("key") != self.key:
            return False
        try:
            size = self.plan.stat().st_size
        except OSError:
            return False
        if size <= 0 or size != meta.get("plan_bytes"):
            return False
        return not verify_hash or file_sha256(self.plan) == meta.get("plan_sha256")

    def remove_leftovers(self) -> list[Path]:
        """Delete temporary files of dead builders of this key (call only under the lock)."""
        removed = []
        for path in self.folder.glob(f".{self.key}.*{TMP_MARK}*"):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed


def get_or_build(
    entry: CacheEntry,
    metadata: dict[str, Any],
    build: Callable[[Path], None],
    *,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, bool]:
    """The entry's plan, built by `build(tmp_path)` unless a valid one exists.

    Returns (plan path, True if this call built it). `metadata` (JSON-serialisable facts about
    the build) is stored beside the plan with its size and hash, once the plan is in place.
    """
    if entry.valid():
        return entry.plan, False
    entry.folder.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        log(f"{entry.key}: waiting for {holder}, which is building it")

    with exclusive_lock(entry.lock, deadline, on_wait=waiting):
        # Another pod may have finished it while this one waited.
        if entry.valid():
            return entry.plan, False
        for path in entry.remove_leftovers():
            log(f"{entry.key}: removed {path.name}, left by an interrupted build")
        tmp = temp_path(entry.plan)
        try:
            build(tmp)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise RuntimeError(f"the builder wrote no plan for {entry.key}")
            commit(tmp, entry.plan)
        finally:
            tmp.unlink(missing_ok=True)
        record = {
            **metadata,
            "key": entry.key,
            "plan_bytes": entry.plan.stat().st_size,
            "plan_sha256": file_sha256(entry.plan),
            "built_by": f"{socket.gethostname()} pid {os.getpid()}",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_bytes(entry.metadata, (json.dumps(record, indent=2) + "\n").encode())
        return entry.plan, True


def snapshot(shared: Path) -> Path:
    """A private copy of a shared file (the timing cache) for a tool that rewrites it in place.

    When `shared` does not exist yet, the returned path does not either (the tool creates it).
    """
    tmp = temp_path(shared)
    tmp.unlink(missing_ok=True)
    if shared.exists():
        tmp.write_bytes(shared.read_bytes())
    return tmp


def publish(tmp: Path, shared: Path, deadline: float | None = None) -> bool:
    """Replace `shared` by the updated private copy `tmp`, atomically; False if tmp is empty.

    Concurrent builders of different keys may each publish: the last one wins, which is fine
    for a timing cache (it only speeds builds up), and readers never see a partial file.
    """
    if not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return False
    with exclusive_lock(shared.with_name(shared.name + ".lock"), deadline):
        commit(tmp, shared)
    return True
