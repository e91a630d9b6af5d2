"""Pure logic behind the Python-backend models and the client, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from mmtriton import spec
from mmtriton.backend.batched import run_batched
from mmtriton.backend.preprocess_model import request_samples
from mmtriton.preprocess.errors import InvalidInput
from mmtriton.server.flags import ServerSettings, triton_args
from mmtriton_client.client import ClientError, Sample, build_inputs


def test_request_samples_fills_absent_modalities() -> None:
    images, texts, audios = request_samples(
        {
            "image": np.array([[b"png"], [b""]], dtype=object),
            "text": np.array([[b"seven"], [b"7"]], dtype=object),
            "audio": None,
        }
    )
    assert images == [b"png", None]
    assert texts == [b"seven", b"7"]
    assert audios == [None, None]


def test_request_samples_rejects_mismatched_batches_and_shapes() -> None:
    with pytest.raises(InvalidInput, match="batch sizes"):
        request_samples(
            {
                "image": np.array([[b"a"]], dtype=object),
                "text": np.array([[b"a"], [b"b"]], dtype=object),
                "audio": None,
            }
        )
    with pytest.raises(InvalidInput, match=r"\[batch, 1\]"):
        request_samples(
            {"image": np.array([[b"a", b"b"]], dtype=object), "text": None, "audio": None}
        )
    with pytest.raises(InvalidInput) as info:
        request_samples({"image": None, "text": None, "audio": None})
    assert info.value.reason == "no_input"


def test_run_batched_splits_outputs_back_per_request() -> None:
    out = run_batched(
        lambda feed: {"Y": feed["X"] * 2}, [{"X": np.ones((2, 3))}, {"X": np.full((1, 3), 5.0)}]
    )
    assert [o["Y"].shape for o in out] == [(2, 3), (1, 3)]
    assert out[1]["Y"][0, 0] == 10.0


def test_flags_for_each_profile() -> None:
    cpu = triton_args(ServerSettings(model_repository="/r", admin_key="k"))
    gpu = triton_args(ServerSettings(model_repository="/r", profile="gpu", admin_key="k"))
    assert "--model-control-mode=none" in cpu
    assert "--pinned-memory-pool-byte-size=0" in cpu and "--allow-gpu-metrics=false" in cpu
    assert "--model-config-name=gpu" in gpu and "--allow-gpu-metrics=true" in gpu
    assert not any("pinned" in a for a in gpu)
    assert any(a.startswith("--grpc-restricted-protocol=") and a.endswith("=k") for a in cpu)
    with pytest.raises(ValueError, match="profile"):
        ServerSettings(model_repository="/r", profile="tpu")
    with pytest.raises(ValueError, match="key"):
        ServerSettings(model_repository="/r", tls_cert="c.pem")


def test_admin_key_is_random_per_settings() -> None:
    assert ServerSettings("/r").admin_key != ServerSettings("/r").admin_key


def test_client_builds_only_the_given_modalities() -> None:
    import tritonclient.grpc as grpcclient

    inputs = build_inputs(
        [Sample(text="seven"), Sample(text="7", image=b"x")], grpcclient.InferInput
    )
    names = [i.name() for i in inputs]
    assert names == [spec.RAW_IMAGE.name, spec.RAW_TEXT.name]
    assert inputs[0].shape() == [2, 1]


def test_client_validation_names_the_limit() -> None:
    with pytest.raises(ClientError, match="at least one"):
        Sample().validate()
    with pytest.raises(ClientError, match=str(spec.LIMITS.max_audio_bytes)):
        Sample(audio=b"x" * (spec.LIMITS.max_audio_bytes + 1)).validate()


def test_one_conversion_of_request_elements_to_bytes() -> None:
    from mmtriton.preprocess.errors import InvalidInput
    from mmtriton.preprocess.pipeline import element_bytes

    assert element_bytes("text", "seven") == b"seven"
    assert element_bytes("image", np.array(b"png", dtype=object)) == b"png"
    assert element_bytes("audio", bytearray(b"wav")) == b"wav"
    assert element_bytes("image", b"") is None and element_bytes("text", None) is None
    with pytest.raises(InvalidInput, match="IMAGE must be BYTES, got int") as info:
        element_bytes("image", 7)
    assert info.value.reason == "bad_tensor"
