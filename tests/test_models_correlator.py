from pathlib import Path

import pytest
import torch

from bavos.errors import CheckpointError
from bavos.models.correlator import Correlator, load_correlator, save_checkpoint


def test_exact_size_and_scale() -> None:
    model = Correlator(384, 8)
    assert sum(p.numel() for p in model.parameters()) == 1_773_312
    assert model.scale == pytest.approx(48**-0.5)
    assert model.attn.qkv.bias is None


def test_initialisation_is_pytorchs_default_as_in_the_release() -> None:
    torch.manual_seed(0)
    model = Correlator(384, 8)
    for name, fan_in in (("attn.qkv", 384), ("attn.proj", 384), ("mlp.fc1", 384), ("mlp.fc2", 1536)):
        layer = model.get_submodule(name)
        bound = fan_in**-0.5  # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases the same
        for tensor in (layer.weight, layer.bias):
            if tensor is None:
                continue
            values = tensor.detach().flatten()
            assert values.abs().max() <= bound
            assert values.abs().max() > 0.95 * bound  # uniform over the whole range, not a narrow normal
            assert float(values.std()) == pytest.approx(bound / 3**0.5, rel=0.05 if values.numel() > 10_000 else 0.2)
            assert abs(float(values.mean())) < 0.1 * bound
    for norm in (model.norm1, model.norm2):
        assert torch.equal(norm.weight, torch.ones(384)) and torch.equal(norm.bias, torch.zeros(384))
    assert model.norm1.eps == 1e-5


def test_forward_shapes_and_query_key_match_the_block(device: str) -> None:
    torch.manual_seed(0)
    model = Correlator(32, 8).eval().to(device)
    x = torch.randn(2, 10, 32, device=device)
    y, attn = model(x)
    assert y.shape == (2, 10, 32) and attn.shape == (2, 8, 10, 10) and y.device.type == device
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 8, 10, device=device))
    q, k = model.query_key(x)
    assert q.shape == (2, 8, 10, 4)
    torch.testing.assert_close(torch.softmax(q @ k.transpose(-2, -1) * model.scale, -1), attn)


def test_attention_dropout_is_active_in_training_only() -> None:
    model = Correlator(32, 8)
    x = torch.randn(1, 12, 32)
    model.train()
    _, attn = model(x)
    assert (attn == 0).any()
    model.eval()
    _, attn = model(x)
    assert not (attn == 0).any()


def test_bavos_checkpoint_roundtrip(tmp_path: Path, device: str) -> None:
    model = Correlator(32, 8).to(device)
    save_checkpoint(tmp_path / "c.pt", model, {"correlator_heads": 8, "backbone": "bavos_test_vit"}, step=3)
    loaded = load_correlator(tmp_path / "c.pt", dim=32)  # on the CPU, wherever it was saved
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.cpu())
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_release_layout_loads(tmp_path: Path) -> None:
    model = Correlator(32, 8)
    state = {f"temporal_transformer.0.{k}": v for k, v in model.state_dict().items()}
    state["encoder.cls_token"] = torch.zeros(1, 1, 32)
    torch.save(
        {"iteration": 1000, "model_state_dict": state, "optimizer_state_dict": {}, "loss": 1.0},
        tmp_path / "release.pth",
    )
    loaded = load_correlator(tmp_path / "release.pth", dim=32)
    torch.testing.assert_close(loaded.attn.qkv.weight, model.attn.qkv.weight)
    ddp = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model_state_dict": ddp}, tmp_path / "ddp.pth")
    load_correlator(tmp_path / "ddp.pth", dim=32)


def test_release_with_more_blocks_or_unknown_keys_is_an_error(tmp_path: Path) -> None:
    model = Correlator(32, 8)
    state = {f"temporal_transformer.0.{k}": v for k, v in model.state_dict().items()}
    state["temporal_transformer.1.norm1.weight"] = torch.ones(32)
    torch.save({"model_state_dict": state}, tmp_path / "two.pth")
    with pytest.raises(CheckpointError, match="temporal_transformer.1.norm1.weight"):
        load_correlator(tmp_path / "two.pth", dim=32)


def test_mismatch_and_bad_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", Correlator(32, 8), {"correlator_heads": 8})
    with pytest.raises(CheckpointError, match="wrong shape: attn.proj.bias"):
        load_correlator(tmp_path / "c.pt", dim=64)
    torch.save({"model": {"norm1.weight": torch.ones(32)}, "config": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing: attn.proj.bias"):
        load_correlator(tmp_path / "partial.pt", dim=32)
    with pytest.raises(CheckpointError, match="not found"):
        load_correlator(tmp_path / "nope.pt", dim=32)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a bavos checkpoint"):
        load_correlator(tmp_path / "other.pt", dim=32)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_with_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"model": Payload(), "config": {}}, tmp_path / "evil.pt")
    with pytest.raises(
        CheckpointError,
        match=r"not a checkpoint bavos can load: a PyTorch file holding Python "
        r"objects \(print\)",
    ) as info:
        load_correlator(tmp_path / "evil.pt", dim=32)
    assert "weights_only=False" not in str(info.value)
    assert "code ran" not in capsys.readouterr().out
