"""The fusion model: masking, modes, and the numpy twin used inside Triton."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmtriton import spec
from mmtriton.backend.fusion import NumpyFusion
from mmtriton_build.fusion import EMBED_DIMS, FusionModel, load_fusion, save_fusion
from mmtriton_build.train import subset_mask

MODES = spec.FUSION_MODES
SUBSETS = spec.SUBSETS


def _batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, EMBED_DIMS[m], generator=g) for m in spec.MODALITIES}


def _model(mode: str) -> FusionModel:
    torch.manual_seed(1)
    model = FusionModel(mode).eval()
    with torch.no_grad():  # non-trivial learned logits so "weighted" is not uniform
        model.modality_logits.copy_(torch.tensor([0.5, -0.3, 0.2]))
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_absent_modality_changes_nothing(mode: str, subset: tuple[str, ...]) -> None:
    model = _model(mode)
    feats = _batch(4)
    present = torch.tensor([[float(m in subset) for m in spec.MODALITIES]] * 4)
    other = dict(feats)
    for m in spec.MODALITIES:
        if m not in subset:  # garbage, even inf, in an absent slot must not matter
            other[m] = torch.full_like(feats[m], float("inf"))
    with torch.no_grad():
        logits_a, w_a = model(**feats, present=present)
        logits_b, w_b = model(**other, present=present)
    assert torch.equal(logits_a, logits_b)
    assert torch.equal(w_a, w_b)
    absent = present == 0
    assert torch.all(w_a[absent] == 0)
    assert torch.allclose(w_a.sum(dim=1), torch.ones(4))


def test_attention_weights_depend_on_features() -> None:
    model = _model("attention")
    present = torch.ones(2, 3)
    with torch.no_grad():
        _, w = model(**_batch(2, seed=3), present=present)
    assert not torch.allclose(w[0], w[1])


@pytest.mark.parametrize("mode", MODES)
def test_numpy_twin_matches_torch(mode: str, tmp_path) -> None:
    model = _model(mode)
    path = tmp_path / f"{mode}.npz"
    save_fusion(model, path)
    twin = NumpyFusion(path)
    feats = _batch(32, seed=5)
    rng = np.random.default_rng(0)
    present = rng.integers(0, 2, size=(32, 3)).astype(np.float32)
    present[present.sum(axis=1) == 0, 0] = 1.0
    with torch.no_grad():
        logits, w_torch = model(**feats, present=torch.from_numpy(present))
    probs, w_np = twin({m: t.numpy() for m, t in feats.items()}, present)
    assert np.abs(probs - torch.softmax(logits, 1).numpy()).max() <= 1e-5
    assert np.abs(w_np - w_torch.numpy()).max() <= 1e-5
    reloaded = load_fusion(path)
    with torch.no_grad():
        again, _ = reloaded(**feats, present=torch.from_numpy(present))
    assert torch.equal(again, logits)


def test_serving_refuses_weights_with_an_unknown_fusion_mode(tmp_path) -> None:
    """An unknown mode must fail the model load, never be served as some other mode."""
    path = tmp_path / "attention.npz"
    save_fusion(_model("attention"), path)
    data = dict(np.load(path))
    data["__mode__"] = np.array("concat")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)
    with pytest.raises(ValueError, match="unknown fusion mode 'concat'"):
        NumpyFusion(bad)
    with pytest.raises(ValueError, match="unknown fusion mode"):
        FusionModel("concat")


@pytest.mark.parametrize("mode", ["sum", "attention"])
def test_each_row_is_divided_by_the_temperature_of_its_modality_subset(mode, tmp_path) -> None:
    """Every subset has its own calibration temperature; a row gets the one of the
    modalities it carries, in PyTorch and in the served numpy twin alike."""
    model = _model(mode)
    n = 7 * 4
    feats = _batch(n, seed=7)
    present = torch.from_numpy(np.repeat([subset_mask(s, 1)[0] for s in spec.SUBSETS], 4, 0))
    temperatures = {s: 0.3 + 0.4 * i for i, s in enumerate(spec.SUBSETS)}
    with torch.no_grad():
        plain, _ = model(**feats, present=present)
        for s, t in temperatures.items():
            model.temperature[spec.presence_code(s)] = t
        scaled, _ = model(**feats, present=present)
    expected = torch.tensor([temperatures[s] for s in spec.SUBSETS for _ in range(4)])
    assert torch.allclose(scaled, plain / expected.unsqueeze(1), atol=1e-5)
    path = tmp_path / "t.npz"
    save_fusion(model, path)
    probs, _ = NumpyFusion(path)({m: t.numpy() for m, t in feats.items()}, present.numpy())
    assert np.abs(probs - torch.softmax(scaled, 1).numpy()).max() <= 1e-5
    loaded = load_fusion(path).temperature
    for s, t in temperatures.items():
        assert float(loaded[spec.presence_code(s)]) == pytest.approx(t)


def test_weights_saved_before_calibration_load_with_temperature_one(tmp_path) -> None:
    model = _model("sum")
    path = tmp_path / "old.npz"
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if k != "temperature"}
    np.savez(path, __mode__=np.array("sum"), **arrays)
    assert (load_fusion(path).temperature == 1.0).all()
    assert (NumpyFusion(path).temperature == 1.0).all()


def test_weights_with_one_temperature_apply_it_to_every_subset(tmp_path) -> None:
    """Builds before per-subset calibration saved a single temperature."""
    model = _model("attention")
    path = tmp_path / "scalar.npz"
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if k != "temperature"}
    np.savez(path, __mode__=np.array("attention"), temperature=np.float32(0.6), **arrays)
    feats, present = _batch(8, seed=3), torch.ones(8, 3)
    with torch.no_grad():
        plain, _ = model(**feats, present=present)
    probs, _ = NumpyFusion(path)({m: t.numpy() for m, t in feats.items()}, present.numpy())
    assert np.abs(probs - torch.softmax(plain / 0.6, 1).numpy()).max() <= 1e-5
    assert torch.allclose(load_fusion(path).temperature, torch.full((spec.PRESENCE_CODES,), 0.6))
