"""The one exception preprocessing raises for bad client input.

Serving turns it into an INVALID_ARGUMENT response and counts it by ``reason``; anything
else escaping preprocessing is a bug (INTERNAL).
"""

from __future__ import annotations

from mmtriton.spec import INPUT_ERROR_REASONS

# Every machine-readable reason InvalidInput may carry (metrics pre-register these labels).
REASONS: tuple[str, ...] = INPUT_ERROR_REASONS


class InvalidInput(ValueError):
    """A client sent something preprocessing refuses.

    Attributes:
        modality: "image", "text", "audio", or "request" (for problems of the whole sample).
        reason: a short slug, stable for metrics and clients (``REASONS`` lists the known ones;
            an unknown one is kept as given rather than turning a client error into a crash).
        detail: the human message without the sample prefix, naming the problem and the limit.
        index: the sample's position in the batch, once known.
    """

    def __init__(self, modality: str, reason: str, detail: str, index: int | None = None):
        self.modality = modality
        self.reason = reason
        self.detail = detail
        self.index = index
        prefix = f"sample {index}: " if index is not None else ""
        super().__init__(f"{prefix}{detail}")

    @property
    def message(self) -> str:
        """The full message, including the sample index when known."""
        return str(self)

    def at(self, index: int) -> InvalidInput:
        """The same error, attributed to sample ``index`` of a batch."""
        return InvalidInput(self.modality, self.reason, self.detail, index)

    def __reduce__(self):  # keep it picklable across process boundaries
        return (InvalidInput, (self.modality, self.reason, self.detail, self.index))
