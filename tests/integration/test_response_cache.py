"""The encoders' response cache on a real tritonserver: hits per modality, same answers.

Two servers on the same repository: the default (cache on, as `mmtriton serve` starts it) and
one started with `response_cache_bytes=0` (off), whose answers are the uncached reference.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from mmtriton import spec
from mmtriton.server.flags import DEFAULT_RESPONSE_CACHE_BYTES
from mmtriton_build.examples import encode_png, load_examples
from mmtriton_client.client import MultimodalClient, Sample
from tests.conftest import start_triton

pytestmark = pytest.mark.integration

ENCODERS = [m.name for m in spec.ENCODERS.values()]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    server = start_triton(tmp_path_factory.mktemp("cached"))
    assert server.settings.response_cache_bytes == DEFAULT_RESPONSE_CACHE_BYTES
    yield server
    server.stop()


@pytest.fixture(scope="module")
def examples(built_artifacts):
    return [e for e in load_examples(built_artifacts, 40) if e.text and e.audio][:8]


def cache_counts(server) -> dict[str, dict[str, int]]:
    """{model: {"hit": n, "miss": n, "executed": n}} from /v2/models/<m>/stats (gRPC)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    counts = {}
    for model in ENCODERS:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        infer = stats["inference_stats"]
        counts[model] = {
            "hit": int(infer.get("cache_hit", {}).get("count", 0)),
            "miss": int(infer.get("cache_miss", {}).get("count", 0)),
            "executed": int(stats.get("execution_count", 0)),
        }
    client.close()
    return counts


def delta(after: dict, before: dict) -> dict[str, dict[str, int]]:
    return {m: {k: after[m][k] - before[m][k] for k in after[m]} for m in after}


def test_same_image_with_two_texts_skips_the_image_encoder(cached, examples):
    image = examples[0].image
    before = cache_counts(cached)
    with MultimodalClient(cached.grpc_url) as client:
        client.predict(Sample(image=image, text="the digit one"))
        client.predict(Sample(image=image, text="a seven, handwritten"))
    d = delta(cache_counts(cached), before)
    # First sight of the image: a miss and one execution; second: a hit, not executed.
    assert d["image_encoder"] == {"hit": 1, "miss": 1, "executed": 1}, d
    # Two different texts: two misses, the text encoder ran for both.
    assert d["text_encoder"]["hit"] == 0 and d["text_encoder"]["miss"] == 2, d
    # Audio absent twice: its zero placeholder is looked up both times.
    assert d["audio_encoder"]["hit"] + d["audio_encoder"]["miss"] == 2, d


def test_repeated_text_and_audio_hit_their_encoders(cached, examples):
    a, b = examples[1], examples[2]
    with MultimodalClient(cached.grpc_url) as client:
        client.predict(Sample(image=a.image, text=a.text, audio=a.audio))
        before = cache_counts(cached)
        client.predict(Sample(image=b.image, text=a.text, audio=a.audio))
    d = delta(cache_counts(cached), before)
    assert d["text_encoder"] == {"hit": 1, "miss": 0, "executed": 0}, d
    assert d["audio_encoder"] == {"hit": 1, "miss": 0, "executed": 0}, d
    assert d["image_encoder"]["miss"] == 1, d


def test_cached_answers_equal_uncached_answers(cached, uncached, examples):
    # Every image twice (with its own text, then another's): the second answer comes from the
    # cache for the image, from the text encoder for the text.
    samples = []
    for i, e in enumerate(examples):
        other = examples[(i + 1) % len(examples)]
        samples += [Sample(image=e.image, text=e.text), Sample(image=e.image, text=other.text)]
    before = cache_counts(cached)
    with MultimodalClient(cached.grpc_url) as c, MultimodalClient(uncached.grpc_url) as u:
        got = [c.predict(s) for s in samples]
        want = [u.predict(s) for s in samples]
    hits = delta(cache_counts(cached), before)["image_encoder"]["hit"]
    assert hits >= len(examples), f"only {hits} image cache hits for {len(examples)} repeats"
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert g.probabilities == w.probabilities
        assert g.weights == w.weights


def test_cache_off_runs_every_request(uncached, examples):
    image = examples[3].image
    before = cache_counts(uncached)
    with MultimodalClient(uncached.grpc_url) as client:
        for text in ("one", "two", "one"):
            client.predict(Sample(image=image, text=text))
    d = delta(cache_counts(uncached), before)
    assert d["image_encoder"] == {"hit": 0, "miss": 0, "executed": 3}, d


def test_cache_hits_and_misses_are_exported_per_model(cached, examples):
    with MultimodalClient(cached.grpc_url) as client:
        client.predict(Sample(image=examples[4].image))
        client.predict(Sample(image=examples[4].image))
    text = urllib.request.urlopen(cached.metrics_url, timeout=5).read().decode()
    lines = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("nv_cache_num_")
    }
    for model in ENCODERS:
        assert f'nv_cache_num_hits_per_model{{model="{model}",version="1"}}' in lines
        assert f'nv_cache_num_misses_per_model{{model="{model}",version="1"}}' in lines
    assert lines['nv_cache_num_hits_per_model{model="image_encoder",version="1"}'] >= 1
    # Steps that must not be cached (see export/repository.py) have no cache series at all.
    assert not any('model="preprocess"' in k or 'model="fusion"' in k for k in lines)


def test_top_shows_each_encoders_hit_ratio(cached, examples):
    from mmtriton.observability import top

    image = encode_png(np.tri(28, 28, dtype=np.uint8) * 255)  # sent by no other test
    before = top.scrape(cached.metrics_url)
    with MultimodalClient(cached.grpc_url) as client:
        for text in ("one", "two", "three"):  # one new image, three new texts
            client.predict(Sample(image=image, text=f"the digit {text}, top"))
    view = top.build_view(before, top.scrape(cached.metrics_url))
    assert view.cache is not None
    assert view.cache["image_encoder"] == (2.0, 1.0)
    assert view.cache["text_encoder"] == (0.0, 3.0)
    assert "cache      " in top.render(view) and "image_encoder 67% of" in top.render(view)


def test_the_cache_and_tracing_bench_runs(tmp_path):
    """`mmtriton bench --cache-trace --quick`: real servers, the report's JSON as it ships."""
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    command = ["bench", "--cache-trace", "--quick", "--json", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "mmtriton.cli", *command],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {r["config"]: r for r in report["rows"]}
    assert rows["cache on"]["image_hit_ratio"] > 0.9  # 8 repeating images
    assert rows["cache off"]["image_hit_ratio"] is None  # no lookups at all
    assert all(r["errors"] == 0 and r["rps"] > 0 and r["cpu_ms"] > 0 for r in rows.values())
    assert report["otlp_exports"] > 0  # the traced server exported to the sink
