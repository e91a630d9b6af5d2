"""Admission at the first step: bounded waiting inside the pipeline, the excess refused fast.

Triton queues work in front of every step, and only the first step may refuse (a refusal
after the ensemble's fan-out leaks the request in Triton 2.51). Without a bound, the queues
behind preprocess grow under overload and every accepted request waits seconds. So preprocess
admits a request only while the samples admitted and not yet finished by fusion stay below a
bound, and refuses the rest at once with UNAVAILABLE, which callers retry.

The bound follows the pipeline's measured pace: by Little's law a new sample waits about
(samples in flight) / (samples finished per second), so the bound is the finishing rate of
the last second times the wait budget, clamped to [min_in_flight, max_in_flight]. The budget
and the clamps come from the build's export/policy.py (the capacity they derive from is
measured there); adapting to the pace keeps the wait bounded when the cores are shared or
slower than where the policy was measured.

The counters live in a small file under /dev/shm, mapped by every preprocess and fusion stub
of one tritonserver (named after its pid, so a restarted server starts from zero). Each stub
instance writes only its own slot (single writer: no locks); readers add the slots up:

- preprocess instance i: samples admitted, per epoch (EPOCH_S) of their PIPELINE_START
  stamp, and the samples it is decoding right now (reserved when admitted);
- fusion instance j: samples finished, per epoch of the same stamp (read from its input), and
  per epoch of the time they finished (the pace).

A sample is in flight while its stamp epoch's admissions exceed its completions. Epochs older
than `max_age_s` no longer count: a request lost in a step (a stub killed, a failure after the
fan-out that Triton never finishes) ages out instead of shrinking the bound for good. A slot's
ring entry is reused for a newer epoch by its one writer: count zeroed first, then the tag, so
a reader that catches the switch sees a mismatched tag and skips the entry.
"""

from __future__ import annotations

import mmap
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Where the ledgers live: tmpfs, shared by the stubs of one pod (an emptyDir in Kubernetes).
LEDGER_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
LEDGER_PREFIX = "mmtriton_admission_"
# Epoch length of the counters, and how many epochs a slot's ring holds.
EPOCH_S = 0.25
RING = 64  # 16 s: more than any max_age_s the policy uses
# The pace is the samples finished over this many whole epochs before the current one (1 s).
PACE_EPOCHS = 4
# Writer slots per role (instances of preprocess, of fusion): more than any config uses.
MAX_WRITERS = 16
# The refusal's message; the reliability harness and the client's retry key on UNAVAILABLE.
REFUSAL = "server overloaded: the pipeline holds its bound of {bound} samples now; retry later"
# Custom metrics (Triton serves them next to nv_*): refusals, and the bound and flight at the
# last admission decision.
REFUSED_METRIC = "mmtriton_admission_refused_total"
IN_FLIGHT_METRIC = "mmtriton_admission_in_flight"
BOUND_METRIC = "mmtriton_admission_bound"

# Roles of the rings: admitted and completed per stamp epoch; finished per completion epoch.
_ADMITTED, _COMPLETED, _FINISHED = 0, 1, 2
_ROLES = 3
# int64 layout: [role, writer, ring entry, (tag, count)] then [writer, (since_us, rows)].
_RING_WORDS = _ROLES * MAX_WRITERS * RING * 2
_PENDING_WORDS = MAX_WRITERS * 2
_BYTES = 8 * (_RING_WORDS + _PENDING_WORDS)
_INSTANCE_INDEX = re.compile(r"_(\d+)$")


# The preprocess config's parameters that carry AdmissionSettings, by field.
PARAMETERS: dict[str, str] = {
    "wait_budget_s": "admission_wait_budget_s",
    "min_in_flight": "admission_min_in_flight",
    "max_in_flight": "admission_max_in_flight",
    "max_age_s": "admission_max_age_s",
    "stall_after_s": "admission_stall_after_s",
}


@dataclass(frozen=True)
class AdmissionSettings:
    """What preprocess reads from its config's parameters (written by export/policy.py)."""

    wait_budget_s: float  # the wait inside the pipeline a new sample may expect
    min_in_flight: int  # always admitted up to this (the pace is low when traffic is)
    max_in_flight: int  # never more than this, whatever the pace
    max_age_s: float  # in-flight entries older than this no longer count
    stall_after_s: float  # nothing finished while a sample waited this long: stuck, admit

    def __post_init__(self) -> None:
        if not 1 <= self.min_in_flight <= self.max_in_flight:
            raise ValueError("admission needs 1 <= min_in_flight <= max_in_flight")
        if self.wait_budget_s <= 0:
            raise ValueError("admission needs wait_budget_s > 0")
        if not 0 < self.max_age_s < (RING - PACE_EPOCHS - 2) * EPOCH_S:
            raise ValueError(f"max_age_s must be in (0, {(RING - PACE_EPOCHS - 2) * EPOCH_S:g})")
        if not PACE_EPOCHS * EPOCH_S < self.stall_after_s < self.max_age_s:
            raise ValueError("stall_after_s must exceed the pace window and be below max_age_s")

    def as_parameters(self) -> dict[str, str]:
        """The config.pbtxt parameters that carry these settings."""
        return {key: str(getattr(self, field)) for field, key in PARAMETERS.items()}

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> AdmissionSettings | None:
        """The settings from a model's parameters; None when the config carries none."""
        given = [key for key in PARAMETERS.values() if key in params]
        if not given:
            return None
        if len(given) < len(PARAMETERS):
            missing = sorted(set(PARAMETERS.values()) - set(given))
            raise ValueError(f"admission parameters missing from the config: {missing}")
        return cls(
            wait_budget_s=float(params[PARAMETERS["wait_budget_s"]]),
            min_in_flight=int(params[PARAMETERS["min_in_flight"]]),
            max_in_flight=int(params[PARAMETERS["max_in_flight"]]),
            max_age_s=float(params[PARAMETERS["max_age_s"]]),
            stall_after_s=float(params[PARAMETERS["stall_after_s"]]),
        )


def ledger_path(server_pid: int | None = None, directory: Path | None = None) -> Path:
    """The ledger of the tritonserver `server_pid` (default: this stub's parent, the server)."""
    return (directory or LEDGER_DIR) / f"{LEDGER_PREFIX}{server_pid or os.getppid()}"


def instance_slot(instance_name: str) -> int:
    """A stub instance's writer slot from Triton's instance name ("preprocess_0_1" -> 1)."""
    match = _INSTANCE_INDEX.search(instance_name)
    index = int(match.group(1)) if match else 0
    if index >= MAX_WRITERS:
        raise ValueError(f"instance {instance_name!r}: at most {MAX_WRITERS} instances per step")
    return index


def remove_stale_ledgers(directory: Path | None = None) -> list[Path]:
    """Delete the ledgers of tritonservers that no longer run (a SIGKILL leaves them)."""
    removed = []
    for path in (directory or LEDGER_DIR).glob(f"{LEDGER_PREFIX}*"):
        pid = path.name[len(LEDGER_PREFIX) :]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass  # another stub removed it first
    return removed


def _started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None if unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def open_ledger(server_pid: int | None = None, directory: Path | None = None) -> Ledger:
    """This server's ledger, fresh for a fresh server: ledgers of dead servers are removed,
    and so is one left under this pid by an earlier server (pid reuse), i.e. older than the
    server itself. Called by every preprocess and fusion stub as it initialises."""
    pid = server_pid or os.getppid()
    remove_stale_ledgers(directory)
    path = ledger_path(pid, directory)
    started = _started_at(pid)
    try:
        if started is not None and path.stat().st_mtime < started - 1.0:
            path.unlink()
    except OSError:
        pass  # absent (the usual case), or a sibling stub replaced it first
    return Ledger(path)


def _epoch(stamp: float) -> int:
    return int(stamp // EPOCH_S)


class Ledger:
    """The mapped counters of one server's pipeline (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Every stub opens (and the first creates) the file; ftruncate to the same size is
        # harmless when another stub did it first, and a fresh file reads as zeros.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _BYTES:
                os.ftruncate(fd, _BYTES)
            self._map = mmap.mmap(fd, _BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        words = np.frombuffer(self._map, dtype=np.int64)
        self._rings = words[:_RING_WORDS].reshape(_ROLES, MAX_WRITERS, RING, 2)
        self._pending = words[_RING_WORDS:].reshape(MAX_WRITERS, 2)

    def close(self) -> None:
        """Unmap (the file stays for the other stubs)."""
        del self._rings, self._pending
        self._map.close()

    # ------------------------------------------------------------------ writers
    def _add(self, role: int, slot: int, epoch: int, count: int) -> None:
        entry = self._rings[role, slot, epoch % RING]
        tag = int(entry[0])
        if tag > epoch:
            return  # the ring moved on: that epoch has aged out already
        if tag < epoch:
            entry[1] = 0
            entry[0] = epoch
        entry[1] += count

    def admit(self, slot: int, stamp: float, rows: int) -> None:
        """Preprocess instance `slot` let `rows` samples stamped `stamp` into the pipeline."""
        self._add(_ADMITTED, slot, _epoch(stamp), rows)

    def complete(self, slot: int, stamps: Iterable[float], now: float | None = None) -> None:
        """Fusion instance `slot` finished one sample per stamp (stamp 0: a warm-up, skipped)."""
        epochs = np.array([_epoch(s) for s in stamps if s > 0], dtype=np.int64)
        if not epochs.size:
            return
        self._add(_FINISHED, slot, _epoch(now or time.time()), int(epochs.size))
        for epoch, count in zip(*np.unique(epochs, return_counts=True), strict=True):
            self._add(_COMPLETED, slot, int(epoch), int(count))

    def reserve(self, slot: int, rows: int, now: float | None = None) -> None:
        """Preprocess instance `slot` holds `rows` admitted samples still decoding (0: none)."""
        pending = self._pending[slot]
        pending[1] = 0
        pending[0] = int((now or time.time()) * 1e6) if rows else 0
        pending[1] = rows

    # ------------------------------------------------------------------ readers
    def snapshot(self, max_age_s: float, now: float | None = None) -> Snapshot:
        """The pipeline now, counting only entries of the last `max_age_s` (see Snapshot)."""
        now = now or time.time()
        rings = np.array(self._rings)  # one copy: the sums below see one moment
        pending = np.array(self._pending)
        newest, oldest = _epoch(now), _epoch(now - max_age_s)
        span = newest - oldest + 1
        per_epoch = np.zeros((2, span), dtype=np.int64)
        for role in (_ADMITTED, _COMPLETED):
            tags, counts = rings[role, ..., 0].ravel(), rings[role, ..., 1].ravel()
            live = (tags >= oldest) & (tags <= newest)
            np.add.at(per_epoch[role], tags[live] - oldest, counts[live])
        # Each stamp epoch's completions never exceed its admissions; the difference dips
        # below 0 only while a reader catches an entry being reset, so clip per epoch.
        waiting = np.clip(per_epoch[_ADMITTED] - per_epoch[_COMPLETED], 0, None)
        flight = int(waiting.sum())
        busy = np.flatnonzero(waiting)
        oldest_s = 0.0 if not busy.size else max(now - (oldest + busy[0]) * EPOCH_S, 0.0)
        fresh = pending[:, 0] >= int((now - max_age_s) * 1e6)
        flight += int(pending[fresh, 1].sum())
        tags, counts = rings[_FINISHED, ..., 0], rings[_FINISHED, ..., 1]
        paced = (tags >= newest - PACE_EPOCHS) & (tags < newest)
        pace = float(counts[paced].sum()) / (PACE_EPOCHS * EPOCH_S)
        return Snapshot(flight, pace, oldest_s)

    def in_flight(self, max_age_s: float, now: float | None = None) -> int:
        """Samples admitted and not finished, counting only the last `max_age_s`."""
        return self.snapshot(max_age_s, now).flight


@dataclass(frozen=True)
class Snapshot:
    """What admission decides on."""

    flight: int  # samples admitted (or decoding) and not finished
    pace: float  # samples finished per second over the last PACE_EPOCHS whole epochs
    oldest_s: float  # age of the oldest unfinished sample (its stamp epoch's start), 0: none


@dataclass(frozen=True)
class Decision:
    """One batch's admission: per request whether it is admitted, and what it was based on."""

    admitted: list[bool]
    flight: int  # samples in flight before this batch
    bound: int  # the bound at this moment


class Admission:
    """One preprocess instance's admission decisions against the shared ledger."""

    def __init__(self, ledger: Ledger, slot: int, settings: AdmissionSettings):
        self.ledger, self.slot, self.settings = ledger, slot, settings

    def bound(self, pace: float) -> int:
        """Samples the pipeline may hold at this pace (samples finished per second)."""
        s = self.settings
        return int(min(max(pace * s.wait_budget_s, s.min_in_flight), s.max_in_flight))

    def choose(self, rows: list[int], now: float | None = None) -> Decision:
        """Which requests of a batch (their sample counts) to admit, in arrival order.

        A request is admitted while the pipeline holds fewer samples than the bound, counting
        the ones admitted before it in this batch; so one large request can exceed the bound
        once, but it is never refused forever for being larger than the bound. The admitted
        samples are reserved at once, so that the sibling instance sees them.
        """
        snap = self.ledger.snapshot(self.settings.max_age_s, now)
        flight, bound = snap.flight, self.bound(snap.pace)
        # Nothing finished for a while although samples wait: the pipeline is stuck (a hung
        # step), not overloaded. Refusing would hide that from the supervisor's probe, which
        # counts a refusal as an answer; admitting lets the probe meet the hang and heal it.
        stalled = snap.pace == 0 and snap.oldest_s > self.settings.stall_after_s
        admitted, held = [], flight
        for n in rows:
            admit = stalled or held < bound
            admitted.append(admit)
            held += n if admit else 0
        self.ledger.reserve(self.slot, held - flight, now)
        return Decision(admitted, flight, bound)

    def admitted(self, stamp: float, rows: int, still_decoding: int) -> None:
        """An admitted request left preprocess: its `rows` samples stamped `stamp` now count
        as admitted, and `still_decoding` samples of the batch remain reserved."""
        self.ledger.admit(self.slot, stamp, rows)
        self.ledger.reserve(self.slot, still_decoding)

    def done(self) -> None:
        """The batch is out of preprocess: nothing of it stays reserved."""
        self.ledger.reserve(self.slot, 0)
