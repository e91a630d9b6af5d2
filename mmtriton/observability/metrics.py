"""The pipeline's own Prometheus metrics, defined once, and their recorder for Python models.

Triton exports request counters and cumulative durations but no latency histograms and no
batch sizes; the Python-backend models add those through `pb_utils.MetricFamily`, which Triton
serves on its metrics port next to its own `nv_*` metrics. Every name, label and bucket bound
is spelled here and nowhere else: the recording rules, the dashboard, `mmtriton top` and the
tests all refer to these constants.

Histograms use the Python backend's native HISTOGRAM metric kind (verified on Triton 2.51; older
stubs lack it). With a stub that only offers COUNTER and GAUGE, the same series are written as
cumulative counters (`<name>_bucket{le}`, `<name>_count`, `<name>_sum`), so PromQL,
`histogram_quantile()` and aggregation across replicas work the same either way.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mmtriton import spec

# --- names ---------------------------------------------------------------------------------
MODALITY_REQUESTS = "mmtriton_modality_requests_total"
PREPROCESS_FAILURES = "mmtriton_preprocess_failures_total"
BATCH_SIZE = "mmtriton_batch_size"
EXECUTE_SECONDS = "mmtriton_execute_seconds"
PIPELINE_SECONDS = "mmtriton_pipeline_seconds"

# --- bucket upper bounds (+Inf is implicit) -----------------------------------------------
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)
EXECUTE_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
PIPELINE_SECONDS_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip

# The p99 latency objective of the whole pipeline on CPU. The alert rule
# `MmtritonLatencyP99AboveObjective` compares against the recording rule
# `mmtriton:pipeline_p99_objective:seconds`, which a unit test keeps equal to this value, and
# PIPELINE_SECONDS_BUCKETS has a bound exactly here so the estimate is sharp at the threshold.
PIPELINE_P99_OBJECTIVE_SECONDS = 0.5

# --- label values -------------------------------------------------------------------------
# Why preprocess rejected a sample (spec.INPUT_ERROR_REASONS) and "internal" for a bug.
# Other slugs are accepted too; these are created at zero when preprocess starts.
FAILURE_REASONS: tuple[str, ...] = (*spec.INPUT_ERROR_REASONS, "internal")
OTHER_REASON = "other"
_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def modality_label(present: Iterable[Any]) -> str | None:
    """The `modalities` label of one presence row (image, text, audio); None when all absent.

    Values above 0.5 count as present, so float masks (PRESENT tensor) and bools both work.
    """
    flags = [float(v) > 0.5 for v in present]
    if len(flags) != len(spec.MODALITIES):
        raise ValueError(f"a presence row has {len(spec.MODALITIES)} values, got {len(flags)}")
    chosen = [m for m, on in zip(spec.MODALITIES, flags, strict=True) if on]
    return "+".join(chosen) if chosen else None


# All seven non-empty subsets in canonical order: "image", "text", "audio", "image+text", ...
MODALITY_LABELS: tuple[str, ...] = tuple(spec.subset_name(s) for s in spec.SUBSETS)


def count_modality_labels(rows: Iterable[Iterable[Any]]) -> Counter[str]:
    """How many rows carry each modality combination (rows with nothing present are skipped)."""
    counts: Counter[str] = Counter()
    for row in rows:
        label = modality_label(row)
        if label is not None:
            counts[label] += 1
    return counts


def failure_reason(reason: str) -> str:
    """`reason` if it is a short lower-case slug, else "other" (keeps label cardinality low)."""
    return reason if _SLUG.match(reason) else OTHER_REASON


# --- histogram math -----------------------------------------------------------------------
def format_le(bound: float) -> str:
    """An `le` label value as Prometheus writes it: "1", "0.005", "+Inf"."""
    bound = float(bound)
    if math.isinf(bound):
        return "+Inf"
    return str(int(bound)) if bound.is_integer() else repr(bound)


def bucket_increments(value: float, buckets: Sequence[float]) -> tuple[str, ...]:
    """The `le` labels whose cumulative counter a single observation of `value` increments.

    Prometheus buckets are cumulative and inclusive: an observation counts in every bucket
    whose upper bound is >= the value, and always in "+Inf".
    """
    return (*(format_le(b) for b in sorted(buckets) if value <= b), "+Inf")


def quantile_from_buckets(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """`histogram_quantile(q, ...)` over (upper bound, cumulative count) pairs, as Prometheus does.

    Linear interpolation inside the bucket that holds the rank; the first bucket starts at 0
    (when its bound is positive); a rank in the +Inf bucket returns the highest finite bound.
    NaN without observations or without a +Inf bucket.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs = sorted((float(b), float(c)) for b, c in buckets)
    if len(pairs) < 2 or not math.isinf(pairs[-1][0]):
        return math.nan
    # Counts read at slightly different moments can dip; Prometheus forces them monotonic.
    fixed: list[tuple[float, float]] = []
    running = 0.0
    for bound, count in pairs:
        running = max(running, count)
        fixed.append((bound, running))
    total = fixed[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_, c) in enumerate(fixed) if c >= rank)
    if index == len(fixed) - 1:
        return fixed[-2][0]
    if index == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    lower_bound, lower_count = (0.0, 0.0) if index == 0 else fixed[index - 1]
    upper_bound, upper_count = fixed[index]
    if upper_count == lower_count:
        return upper_bound
    return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (
        upper_count - lower_count
    )


# --- metric definitions ----------------------------------------------------------------------
@dataclass(frozen=True)
class HistogramDef:
    """A histogram: its base name, help text, `le` bounds (without +Inf) and other labels."""

    name: str
    description: str
    buckets: tuple[float, ...]
    labels: tuple[str, ...]


BATCH_SIZE_HISTOGRAM = HistogramDef(
    BATCH_SIZE,
    "Rows (samples, over all requests) in each execute() call of a Python-backend model",
    BATCH_SIZE_BUCKETS,
    ("model",),
)
EXECUTE_SECONDS_HISTOGRAM = HistogramDef(
    EXECUTE_SECONDS,
    "Wall time of each execute() call of a Python-backend model, in seconds",
    EXECUTE_SECONDS_BUCKETS,
    ("model",),
)
PIPELINE_SECONDS_HISTOGRAM = HistogramDef(
    PIPELINE_SECONDS,
    "Per request, seconds from the start of preprocess to the end of fusion",
    PIPELINE_SECONDS_BUCKETS,
    (),
)
HISTOGRAMS: tuple[HistogramDef, ...] = (
    BATCH_SIZE_HISTOGRAM,
    EXECUTE_SECONDS_HISTOGRAM,
    PIPELINE_SECONDS_HISTOGRAM,
)
COUNTER_DESCRIPTIONS: dict[str, str] = {
    MODALITY_REQUESTS: "Samples accepted by preprocess, by the modalities they carry",
    PREPROCESS_FAILURES: "Samples preprocess rejected, by reason",
}
COUNTER_LABELS: dict[str, str] = {MODALITY_REQUESTS: "modalities", PREPROCESS_FAILURES: "reason"}


class _Histogram:
    """One histogram family on `pb_utils.MetricFamily`: native, or emulated with counters."""

    def __init__(self, definition: HistogramDef, factory: Callable[..., Any], native: bool):
        self.definition, self.native = definition, native
        self._bounds = tuple(sorted(float(b) for b in definition.buckets))
        self._metrics: dict[tuple[str, ...], Any] = {}
        if native:
            self._family = factory(
                name=definition.name, description=definition.description, kind=factory.HISTOGRAM
            )
        else:
            self._families = {
                part: factory(
                    name=f"{definition.name}_{part}",
                    description=f"{definition.description} ({part})",
                    kind=factory.COUNTER,
                )
                for part in ("bucket", "count", "sum")
            }

    def _series(self, label_values: tuple[str, ...]) -> Any:
        series = self._metrics.get(label_values)
        if series is None:
            labels = dict(zip(self.definition.labels, label_values, strict=True))
            if self.native:
                series = self._family.Metric(labels=labels, buckets=list(self._bounds))
            else:
                series = {
                    "bucket": {
                        le: self._families["bucket"].Metric(labels={**labels, "le": le})
                        for le in (*(format_le(b) for b in self._bounds), "+Inf")
                    },
                    "count": self._families["count"].Metric(labels=labels),
                    "sum": self._families["sum"].Metric(labels=labels),
                }
            self._metrics[label_values] = series
        return series

    def touch(self, *label_values: str) -> None:
        """Create the series (at zero) so rates start from the first observation."""
        self._series(tuple(label_values))

    def observe(self, value: float, *label_values: str) -> None:
        series = self._series(tuple(label_values))
        if self.native:
            series.observe(float(value))
            return
        for le in bucket_increments(value, self._bounds):
            series["bucket"][le].increment(1)
        series["count"].increment(1)
        series["sum"].increment(float(value))


class ModelMetrics:
    """The custom metrics one Python-backend model records. Keep it on the model object.

    `family_factory` is `pb_utils.MetricFamily` inside Triton. Triton merges series with the
    same name and labels, so every instance of a model (and every model) shares one family:
    counts aggregate across instances without extra labels.

        self.metrics = ModelMetrics(args["model_name"], pb_utils.MetricFamily, inputs=True)
        with self.metrics.time_execute(batch_size):
            ...

    `inputs=True` (preprocess) creates every modality and failure series at zero up front;
    `pipeline=True` (fusion) does the same for the pipeline histogram. Calling a method the
    flag did not announce still works: its series are created on first use.
    """

    def __init__(
        self,
        model_name: str,
        family_factory: Callable[..., Any],
        *,
        inputs: bool = False,
        pipeline: bool = False,
        native_histograms: bool | None = None,
    ) -> None:
        self.model_name = model_name
        self._factory = family_factory
        self.native_histograms = (
            hasattr(family_factory, "HISTOGRAM") if native_histograms is None else native_histograms
        )
        self._histograms: dict[str, _Histogram] = {}
        self._counter_families: dict[str, Any] = {}
        self._counters: dict[tuple[str, str], Any] = {}
        self._histogram(BATCH_SIZE_HISTOGRAM).touch(model_name)
        self._histogram(EXECUTE_SECONDS_HISTOGRAM).touch(model_name)
        if inputs:
            for label in MODALITY_LABELS:
                self._counter(MODALITY_REQUESTS, label)
            for reason in FAILURE_REASONS:
                self._counter(PREPROCESS_FAILURES, reason)
        if pipeline:
            self._histogram(PIPELINE_SECONDS_HISTOGRAM).touch()

    def _histogram(self, definition: HistogramDef) -> _Histogram:
        if definition.name not in self._histograms:
            self._histograms[definition.name] = _Histogram(
                definition, self._factory, self.native_histograms
            )
        return self._histograms[definition.name]

    def _counter(self, name: str, label_value: str) -> Any:
        key = (name, label_value)
        if key not in self._counters:
            if name not in self._counter_families:
                self._counter_families[name] = self._factory(
                    name=name, description=COUNTER_DESCRIPTIONS[name], kind=self._factory.COUNTER
                )
            family = self._counter_families[name]
            self._counters[key] = family.Metric(labels={COUNTER_LABELS[name]: label_value})
        return self._counters[key]

    def observe_execute(self, batch_size: int, seconds: float) -> None:
        """One execute() call: its batch size (rows over all requests) and wall time."""
        self._histogram(BATCH_SIZE_HISTOGRAM).observe(batch_size, self.model_name)
        self._histogram(EXECUTE_SECONDS_HISTOGRAM).observe(max(seconds, 0.0), self.model_name)

    @contextlib.contextmanager
    def time_execute(self, batch_size: int) -> Iterator[None]:
        """Time the block and record it with `batch_size` (also when the block raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_execute(batch_size, time.perf_counter() - start)

    def count_modalities(self, present_mask_rows: Iterable[Iterable[Any]]) -> Counter[str]:
        """Count each accepted sample by the modalities it carries; returns what was counted."""
        counts = count_modality_labels(present_mask_rows)
        for label, n in counts.items():
            self._counter(MODALITY_REQUESTS, label).increment(n)
        return counts

    def count_failure(self, reason: str, n: int = 1) -> None:
        """Count `n` samples rejected for `reason` (a slug such as "image_decode")."""
        self._counter(PREPROCESS_FAILURES, failure_reason(reason)).increment(n)

    def observe_pipeline(self, seconds: float) -> None:
        """One request's end-to-end time, preprocess start to fusion end."""
        self._histogram(PIPELINE_SECONDS_HISTOGRAM).observe(max(seconds, 0.0))


def histogram_series_names(definition: HistogramDef) -> tuple[str, str, str]:
    """The three sample names a histogram exposes."""
    return (f"{definition.name}_bucket", f"{definition.name}_count", f"{definition.name}_sum")


def custom_metric_names() -> tuple[str, ...]:
    """Every sample name the Python models export (for checks and docs)."""
    names: list[str] = [MODALITY_REQUESTS, PREPROCESS_FAILURES]
    for definition in HISTOGRAMS:
        names += histogram_series_names(definition)
    return tuple(names)
