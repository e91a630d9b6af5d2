"""The rehearsal's step-by-step log: one line per event, also kept for the JSON summary."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Events:
    """Timestamped events (seconds since the rehearsal started), printed as they happen."""

    stream: TextIO | None = sys.stdout
    t0: float = field(default_factory=time.monotonic)
    items: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def __call__(self, where: str, message: str, **data) -> dict:
        item = {"t": self.now(), "where": where, "message": message, **data}
        with self._lock:
            self.items.append(item)
            if self.stream is not None:
                print(f"{item['t']:8.2f}s  {where:<28} {message}", file=self.stream, flush=True)
        return item

    def section(self, title: str) -> None:
        with self._lock:
            if self.stream is not None:
                print(f"\n== {title}", file=self.stream, flush=True)
