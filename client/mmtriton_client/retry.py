"""Which failed requests the client retries, and how long it keeps trying.

Inference is idempotent, so a retry never does harm; the question is only which errors are
transient:

- ``UNAVAILABLE``: nothing listening (server starting or restarting, a pod gone), the
  connection broke under the request, the queue is full or the server is stopping;
- a dead Python-backend stub: Triton 2.51 answers ``INTERNAL`` "Stub process '<instance>' is
  not healthy" until ``mmtriton serve`` notices and restarts tritonserver (healed in ~10 s);
- ``NOT_FOUND`` "... has no available versions": the model is unloading or loading while the
  server stops or starts (a model that does not exist says "is not found" and is not retried);
- ``CANCELLED``: a stopping server cancels the calls it still holds (seen when a server is
  drained and stopped under load). A caller that cancelled its own call is not waiting for a
  retry, so retrying this status harms nobody.

The default budget (``HEAL_BUDGET_S``) covers a heal: the next answer after a stub death
comes within it.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mmtriton import spec

# Triton 2.51's Python backend says "Stub process '<instance>' is not healthy." or, from the
# request path, "Stub process is not healthy." (both strings are in libtriton_python.so).
STUB_NOT_HEALTHY = re.compile(r"Stub process(?: '[^']*')? is not healthy")
# A model that is being loaded or unloaded (server starting or stopping), as opposed to an
# unknown model name ("... is not found").
MODEL_NOT_LOADED = re.compile(r"has no available versions")

# Seconds a caller keeps retrying by default: a stub death is detected in < 1 s and the server
# is back ~10 s later (`mmtriton serve`); twice that leaves room for a slow restart.
HEAL_BUDGET_S = 20.0


def is_retryable(status: str, message: str) -> bool:
    """True when a request that failed with this gRPC status name and message may succeed
    if sent again (see the module docstring for the cases)."""
    if status in ("UNAVAILABLE", "CANCELLED"):
        return True
    if status == "INTERNAL":
        return bool(STUB_NOT_HEALTHY.search(message))
    if status == "NOT_FOUND":
        return bool(MODEL_NOT_LOADED.search(message))
    return False


@dataclass
class RetryPolicy:
    """Exponential backoff on retryable errors (see `is_retryable`), within a time budget.

    A retry is made while the time since the first attempt plus the next delay stays within
    ``budget_s`` and, when ``attempts`` is given, while fewer than ``attempts`` requests were
    sent. The default (``attempts=None``, ``budget_s=HEAL_BUDGET_S``) rides out a server heal;
    ``RetryPolicy(attempts=1)`` never retries. Delays start at ``initial_backoff_s``, grow by
    ``multiplier`` up to ``max_backoff_s``, and each is shortened by a random fraction of up to
    ``jitter`` so that many clients do not retry in step.
    """

    attempts: int | None = None
    initial_backoff_s: float = 0.2
    max_backoff_s: float = spec.RETRY_MAX_BACKOFF_S
    budget_s: float | None = HEAL_BUDGET_S
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be >= 1 (got {self.attempts})")
        if self.attempts is None and self.budget_s is None:
            raise ValueError("give attempts or budget_s: retrying forever is never the default")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1) (got {self.jitter})")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The backoff delays before retries 1, 2, ... (cut by ``attempts`` and ``budget_s``,
        counting the delays only; `Attempts` also counts the time the requests took)."""
        rng = rng or random.Random()
        delay, slept, n = self.initial_backoff_s, 0.0, 1
        while self.attempts is None or n < self.attempts:
            actual = delay * (1 - self.jitter * rng.random())
            if self.budget_s is not None and slept + actual > self.budget_s:
                return
            yield actual
            slept, n = slept + actual, n + 1
            delay = min(delay * self.multiplier, self.max_backoff_s)

    def start(self, clock: Callable[[], float] = time.monotonic) -> Attempts:
        """The retry state of one call."""
        return Attempts(self, clock)


class Attempts:
    """The retry decisions of one call: after each failure, how long to wait, or give up.

    Shared by the sync and async clients so that their retry behaviour cannot drift.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy, self._clock = policy, clock
        self._started = clock()
        self._delays = policy.delays()
        self.failures: list[tuple[str, str]] = []  # (status, message) of each failed attempt

    def next_delay(self, status: str, message: str) -> float | None:
        """Seconds to wait before sending again, or None when this failure is final."""
        self.failures.append((status, message))
        if not is_retryable(status, message):
            return None
        delay = next(self._delays, None)
        if delay is None:
            return None
        budget = self.policy.budget_s
        if budget is not None and self._clock() - self._started + delay > budget:
            return None
        return delay
