"""Inputs without a digit get a top probability below the threshold the served ensemble
carries ("not sure"), through a real tritonserver; a clear digit stays confident."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import tritonclient.grpc as grpcclient

from mmtriton import spec
from mmtriton_build.data.unseen import NO_DIGIT_TEXTS_HELD_OUT, no_digit_image
from mmtriton_build.examples import load_examples
from mmtriton_client.client import MultimodalClient, Sample

pytestmark = pytest.mark.integration

IMAGE_KINDS = ("white", "black", "grey", "colour", "transparent", "blank_paper")


def _wav(samples: np.ndarray, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _no_digit_inputs() -> dict[str, Sample]:
    rng = np.random.default_rng(123)
    images = {f"image {k}": no_digit_image(k, rng) for k in IMAGE_KINDS}
    audio = {
        "silence": _wav(np.zeros(16_000)),
        "white noise": _wav(0.1 * rng.standard_normal(24_000)),
        "quiet hum 44.1 kHz": _wav(
            0.05 * np.sin(2 * np.pi * 50 * np.arange(44_100) / 44_100), 44_100
        ),
    }
    texts = {f"text {t!r}": t for t in NO_DIGIT_TEXTS_HELD_OUT}
    cases = {name: Sample(image=data) for name, data in images.items()}
    cases |= {name: Sample(audio=data) for name, data in audio.items()}
    cases |= {name: Sample(text=text) for name, text in texts.items()}
    cases["blank image + silence + no-digit text"] = Sample(
        image=images["image white"], audio=audio["silence"], text=NO_DIGIT_TEXTS_HELD_OUT[0]
    )
    cases["transparent image + noise"] = Sample(
        image=images["image transparent"], audio=audio["white noise"]
    )
    return cases


NO_DIGIT = _no_digit_inputs()


@pytest.fixture(scope="module")
def served_threshold(triton_server) -> float:
    """The threshold as a client reads it: from the served ensemble's config."""
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as c:
        config = c.get_model_config(spec.ENSEMBLE.name, as_json=True)["config"]
    value = config["parameters"][spec.CONFIDENCE_THRESHOLD_PARAMETER]["string_value"]
    return float(value)


@pytest.fixture(scope="module")
def client(triton_server):
    with MultimodalClient(triton_server.grpc_url) as c:
        yield c


def test_served_ensemble_carries_the_threshold_chosen_by_the_build(
    served_threshold, built_artifacts
) -> None:
    import json

    chosen = json.loads((built_artifacts / "model" / "calibration.json").read_text())
    assert served_threshold == pytest.approx(chosen["confidence_threshold"], abs=0.005)
    assert 0.0 < served_threshold < 1.0


@pytest.mark.parametrize("name", list(NO_DIGIT))
def test_input_without_a_digit_stays_below_one_half(client, name) -> None:
    prediction = client.predict(NO_DIGIT[name])
    top = prediction.top(1)[0][1]
    assert top < 0.5, f"{name}: label {prediction.label} at {top:.3f}"


@pytest.mark.parametrize("name", list(NO_DIGIT))
def test_input_without_a_digit_is_below_the_served_threshold(
    client, served_threshold, name
) -> None:
    prediction = client.predict(NO_DIGIT[name])
    top = prediction.top(1)[0][1]
    assert top < served_threshold, f"{name}: label {prediction.label} at {top:.3f}"


def test_clear_digits_stay_confident_and_right(client, served_threshold, built_artifacts) -> None:
    examples = [e for e in load_examples(built_artifacts, 40) if e.text][:12]
    for e in examples:
        prediction = client.predict(Sample(image=e.image, text=e.text, audio=e.audio))
        top = prediction.top(1)[0][1]
        assert prediction.label == e.label
        assert top >= served_threshold, f"example {e.index}: {top:.3f}"
