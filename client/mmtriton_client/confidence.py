""" "Not sure": the served model's confidence threshold, read from its Triton model config.

The build chooses the threshold on validation data and writes it into the ensemble's
config.pbtxt as a `parameters` entry named `spec.CONFIDENCE_THRESHOLD_PARAMETER`; an answer
whose top probability is below it is reported as not confident. A repository without the entry
gets `spec.DEFAULT_CONFIDENCE_THRESHOLD`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mmtriton import spec


class ThresholdError(ValueError):
    """The served model's threshold parameter is not a number from 0 to 1."""


def threshold_from_config(config: Mapping[str, Any]) -> float:
    """The threshold in a model config as tritonclient returns it (``as_json=True``).

    Takes the gRPC answer (``{"config": {...}}``) or the config itself; the default when the
    parameter is absent; ThresholdError (naming the parameter) when it is not a number in [0, 1]:
    a wrongly written threshold must not silently become another one.
    """
    config = config.get("config", config)
    entry = (config.get("parameters") or {}).get(spec.CONFIDENCE_THRESHOLD_PARAMETER)
    if entry is None:
        return spec.DEFAULT_CONFIDENCE_THRESHOLD
    raw = entry.get("string_value", "") if isinstance(entry, Mapping) else entry
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses nan
        name = config.get("name", spec.ENSEMBLE.name)
        raise ThresholdError(
            f"model '{name}' has {spec.CONFIDENCE_THRESHOLD_PARAMETER} = {raw!r} in its config; "
            "it must be a number from 0 to 1"
        )
    return value


def is_confident(top_probability: float, threshold: float) -> bool:
    """The contract: an answer is confident when its top probability reaches the threshold."""
    return top_probability >= threshold
