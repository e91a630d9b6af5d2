"""Clients of the served model: gRPC library, CLI and web page."""

from .client import (
    AsyncMultimodalClient,
    ChannelOptions,
    ClientError,
    MultimodalClient,
    Prediction,
    RetryPolicy,
    Sample,
)

__all__ = [
    "AsyncMultimodalClient",
    "ChannelOptions",
    "ClientError",
    "MultimodalClient",
    "Prediction",
    "RetryPolicy",
    "Sample",
]
