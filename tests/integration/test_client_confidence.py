""" "Not sure" through a real tritonserver: the client (sync and async), `mmtriton infer` and the
page's logic read the confidence threshold from the served ensemble's config, or use the default
when the config has none.

Each case serves a copy of the exported repository whose ensemble config carries the threshold
(or, for the default, none at all, whatever the build wrote): 0.999, which the inputs below never
reach, so every answer is "not sure"; 0.0, which every answer reaches.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from mmtriton import spec
from mmtriton_build.examples import load_examples
from mmtriton_client import AsyncMultimodalClient, MultimodalClient, Sample
from mmtriton_client.web.handlers import NOT_SURE, Classifier, classify

from ..conftest import require_repository, start_triton
from .repository_variant import repository_with_threshold

MMTRITON = Path(sys.executable).with_name("mmtriton")


def _blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buffer, format="PNG")
    return buffer.getvalue()


# Inputs that carry no clear digit: their top probability is well below 0.999.
UNCLEAR = {
    "two digits in text": Sample(text="is it a one or a seven"),
    "blank image": Sample(image=_blank_png()),
}


@dataclass(frozen=True)
class Case:
    written: str | None  # what config.pbtxt says; None: no parameter
    threshold: float  # what the client must use


CASES = {
    "absent": Case(None, spec.DEFAULT_CONFIDENCE_THRESHOLD),
    "never-confident": Case("0.999", 0.999),
    "always-confident": Case("0.0", 0.0),
}


@dataclass(frozen=True)
class Served:
    case: Case
    url: str


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def served(request, tmp_path_factory) -> Iterator[Served]:
    case = CASES[request.param]
    root = tmp_path_factory.mktemp(f"threshold-{request.param}")
    repository = repository_with_threshold(require_repository(), root / "repo", case.written)
    server = start_triton(root / "triton", repository=repository)
    yield Served(case, server.grpc_url)
    server.stop()


@pytest.fixture(scope="module")
def example(built_artifacts):
    return next(e for e in load_examples(built_artifacts, 32) if e.image and e.text and e.audio)


def _samples(example) -> list[Sample]:
    return [Sample(example.image, example.text, example.audio), *UNCLEAR.values()]


def _infer(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MMTRITON, "infer", "--url", url, *args], capture_output=True, text=True, timeout=120
    )


def test_client_reads_the_served_threshold_and_marks_each_answer(served, example):
    with MultimodalClient(served.url) as client:
        assert client.confidence_threshold() == served.case.threshold
        predictions = client.predict_batch(_samples(example))
    for p in predictions:
        top = max(p.probabilities.values())
        assert p.threshold == served.case.threshold
        assert p.confident is (top >= served.case.threshold), (p.label, top)
        assert p.as_dict()["confident"] is p.confident
    unclear = predictions[1:]
    if served.case.threshold == 0.999:
        assert not any(p.confident for p in unclear), [p.top(1) for p in unclear]
    if served.case.threshold == 0.0:
        assert all(p.confident for p in predictions)


def test_async_client_gives_the_same_verdicts(served, example):
    async def main():
        async with AsyncMultimodalClient(served.url) as client:
            return await client.confidence_threshold(), await client.predict_batch(
                _samples(example)
            )

    threshold, answers = asyncio.run(main())
    with MultimodalClient(served.url) as client:
        expected = client.predict_batch(_samples(example))
    assert threshold == served.case.threshold
    assert [(a.label, a.confident) for a in answers] == [(e.label, e.confident) for e in expected]


def test_cli_json_and_text_say_whether_the_model_is_sure(served):
    text = "is it a one or a seven"
    result = _infer(served.url, "--text", text, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    top = max(answer["probabilities"].values())
    assert answer["threshold"] == served.case.threshold
    assert answer["confident"] is (top >= served.case.threshold)
    shown = _infer(served.url, "--text", text)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    if answer["confident"]:
        assert first.startswith(f"label: {answer['label']} "), shown.stdout
        assert "not sure" not in shown.stdout
    else:
        assert first.startswith(f"label: not sure (best guess {answer['label']} at "), first
        assert f"{100 * top:.2f} %" in first
    if served.case.threshold == 0.999:
        assert answer["confident"] is False


def test_page_shows_not_sure_instead_of_a_label(served):
    classifier = Classifier(served.url, timeout_s=30)
    try:
        result = classify(classifier, None, None, None, "is it a one or a seven", None)
    finally:
        classifier.close()
    assert result.ok, result.message
    shown = result.label_value()
    if result.prediction.confident:
        assert result.message.startswith("Predicted **")
        assert NOT_SURE not in result.status
        assert shown == result.prediction.probabilities
    else:
        top3 = result.prediction.top(3)
        assert result.status.startswith(f"? **{NOT_SURE}**: best guess **{top3[0][0]}** at ")
        assert shown["label"] == NOT_SURE
        assert [(c["label"], c["confidence"]) for c in shown["confidences"]] == top3
    assert result.as_dict()["confident"] is result.prediction.confident
    if served.case.threshold == 0.999:
        assert not result.prediction.confident
    if served.case.threshold == 0.0:
        assert result.prediction.confident
