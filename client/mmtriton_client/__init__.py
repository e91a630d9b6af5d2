"""Clients of the served model: gRPC library, CLI and web page."""

from .client import (
    AsyncMultimodalClient,
    ClientError,
    MultimodalClient,
    Prediction,
    RetryPolicy,
    Sample,
)

__all__ = [
    "AsyncMultimodalClient",
    "ClientError",
    "MultimodalClient",
    "Prediction",
    "RetryPolicy",
    "Sample",
]
