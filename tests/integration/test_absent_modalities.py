"""Absent modalities cost nothing on the CPU profile, on a real tritonserver (cache off, so that
no response cache hides an encoder's work): a text-only request runs neither the image nor the
audio encoder's ONNX Runtime session, and every subset's answer equals a full-compute reference
(every encoder run on every row, placeholders included) within 1e-6."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mmtriton import spec
from mmtriton.backend.fusion import NumpyFusion
from mmtriton.backend.onnx_encoder import ROWS_METRIC, make_session
from mmtriton.layout import FUSION_WEIGHTS, ONNX_FILE, TOKENIZER_FILE, VAD_FILE
from mmtriton.preprocess.pipeline import Preprocessor
from mmtriton_build.examples import load_examples
from mmtriton_client.client import Sample, build_inputs
from tests.conftest import require_repository

pytestmark = pytest.mark.integration

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def examples(built_artifacts):
    return [e for e in load_examples(built_artifacts, 40) if e.image and e.text and e.audio][:3]


@pytest.fixture(scope="module")
def reference():
    """The answer with every encoder run on every row: what the pipeline computed before
    absent rows were skipped (preprocessing's own zero / "" placeholders, fed to ONNX Runtime)."""
    repo = require_repository()
    version = repo / "preprocess" / "1"
    pre = Preprocessor(version / TOKENIZER_FILE, version / VAD_FILE)
    sessions = {
        m: make_session(str(repo / e.name / "1" / ONNX_FILE), 1) for m, e in spec.ENCODERS.items()
    }
    fusion = NumpyFusion(repo / "fusion" / "1" / FUSION_WEIGHTS)

    def answer(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        columns = {m: [getattr(s, m) or None for s in samples] for m in spec.MODALITIES}
        texts = [t.encode() if isinstance(t, str) else t for t in columns["text"]]
        tensors = pre.preprocess_batch(columns["image"], texts, columns["audio"])
        embeddings = {}
        for m, encoder in spec.ENCODERS.items():
            feed = {t.name: tensors[t.name] for t in encoder.inputs}
            embeddings[m] = sessions[m].run([encoder.outputs[0].name], feed)[0]
        return fusion(embeddings, tensors[spec.PRESENT.name])

    return answer


def served(server, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        result = client.infer(
            spec.ENSEMBLE.name,
            build_inputs(samples, grpcclient.InferInput),
            outputs=[grpcclient.InferRequestedOutput(t.name) for t in spec.ENSEMBLE.outputs],
        )
    finally:
        client.close()
    return result.as_numpy(spec.PROBABILITIES.name), result.as_numpy(spec.WEIGHTS.name)


def encoder_rows(server) -> dict[tuple[str, str], float]:
    """{(encoder, "encoded" | "placeholder"): rows} from the metrics port."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    rows = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == ROWS_METRIC:
                rows[(s.labels["model"], s.labels["outcome"])] = s.value
    return rows


def sample(example, subset) -> Sample:
    return Sample(**{m: getattr(example, m) for m in subset})


def test_a_text_only_request_runs_neither_the_image_nor_the_audio_encoder(uncached, examples):
    before = encoder_rows(uncached)
    served(uncached, [Sample(text=examples[0].text)])
    after = encoder_rows(uncached)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta[("text_encoder", "encoded")] == 1, delta
    for encoder in ("image_encoder", "audio_encoder"):
        assert delta.get((encoder, "encoded"), 0) == 0, delta
        assert delta[(encoder, "placeholder")] == 1, delta


@pytest.mark.parametrize("subset", spec.SUBSETS, ids=spec.subset_name)
def test_each_subset_answers_as_the_full_compute_reference(uncached, examples, reference, subset):
    before = encoder_rows(uncached)
    for example in examples:
        probs, weights = served(uncached, [sample(example, subset)])
        ref_probs, ref_weights = reference([sample(example, subset)])
        np.testing.assert_allclose(probs, ref_probs, atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(weights, ref_weights, atol=TOLERANCE, rtol=0)
    after = encoder_rows(uncached)
    for modality, encoder in spec.ENCODERS.items():
        encoded = after.get((encoder.name, "encoded"), 0) - before.get((encoder.name, "encoded"), 0)
        assert encoded == (len(examples) if modality in subset else 0), (encoder.name, encoded)


def test_a_batch_mixing_subsets_answers_as_the_reference_row_by_row(uncached, examples, reference):
    rows = [sample(examples[i % len(examples)], s) for i, s in enumerate(spec.SUBSETS)]
    probs, weights = served(uncached, rows)
    ref_probs, ref_weights = reference(rows)
    np.testing.assert_allclose(probs, ref_probs, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(weights, ref_weights, atol=TOLERANCE, rtol=0)
