import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from reference_pipeline import reference_pos_embed

from bavos.errors import WeightsError
from bavos.models.backbone import TEST_BACKBONE, build_backbone, dino_pos_embed, extract_backbone_state


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(TEST_BACKBONE, num_classes=0).state_dict()


def test_keys_are_last_block_qkv_of_norm1_patch_tokens() -> None:
    backbone = build_backbone(TEST_BACKBONE, "none")
    vit = backbone.vit
    x = torch.randn(2, 3, 48, 64)
    seen = {}
    vit.blocks[-1].norm1.register_forward_hook(lambda m, i, o: seen.setdefault("u", o))
    out = backbone(x, with_cls=True)
    d = vit.embed_dim
    qkv = vit.blocks[-1].attn.qkv(seen["u"])  # (B, 1 + N, 3D)
    torch.testing.assert_close(out.keys, qkv[:, 1:, d : 2 * d])
    assert out.keys.shape == (2, 6 * 8, d)
    assert out.q.shape == (2, backbone.num_heads, 48, d // backbone.num_heads)
    torch.testing.assert_close(out.q.transpose(1, 2).reshape(2, 48, d), qkv[:, 1:, :d])
    # the output CLS token is the last block's output, before the final norm
    z = backbone.embed(x)
    for block in vit.blocks:
        z = block(z)
    torch.testing.assert_close(out.cls, z[:, 0])


def test_dino_vit_s8_layout_without_weights() -> None:
    backbone = build_backbone("vit_small_patch8_224.dino", "none")
    assert sum(p.numel() for p in backbone.parameters()) == 21_670_272
    assert (backbone.patch_size, backbone.embed_dim, backbone.num_heads) == (8, 384, 6)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.vit.training


def assert_loaded(backbone, state) -> None:
    for key, value in state.items():
        torch.testing.assert_close(backbone.vit.state_dict()[key], value)


def test_loads_backbone_only_dino_file(tmp_path: Path) -> None:
    state = tiny_state(1)
    torch.save(state, tmp_path / "dino.pth")
    assert_loaded(build_backbone(TEST_BACKBONE, str(tmp_path / "dino.pth")), state)


def test_loads_full_dino_training_checkpoint(tmp_path: Path) -> None:
    state = tiny_state(2)
    teacher = {f"backbone.{k}": v for k, v in state.items()}
    teacher["head.mlp.0.weight"] = torch.zeros(3, 3)  # the DINO projection head is dropped
    student = {f"module.backbone.{k}": v * 0 for k, v in state.items()}
    payload = {"student": student, "teacher": teacher, "epoch": 100, "args": argparse.Namespace(arch="vit_small")}
    torch.save(payload, tmp_path / "full.pth")
    assert_loaded(build_backbone(TEST_BACKBONE, str(tmp_path / "full.pth")), state)


def test_loads_encoder_of_release_checkpoint(tmp_path: Path) -> None:
    state = tiny_state(3)
    model = {f"encoder.{k}": v for k, v in state.items()}
    model["temporal_transformer.0.norm1.weight"] = torch.ones(32)
    torch.save({"iteration": 5, "model_state_dict": model, "loss": 0.1}, tmp_path / "release.pth")
    assert_loaded(build_backbone(TEST_BACKBONE, str(tmp_path / "release.pth")), state)


def test_loads_timm_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = tiny_state(4)
    save_file(state, tmp_path / "model.safetensors")
    assert_loaded(build_backbone(TEST_BACKBONE, str(tmp_path / "model.safetensors")), state)


def test_mismatched_keys_are_named(tmp_path: Path) -> None:
    state = tiny_state()
    del state["blocks.1.attn.qkv.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["pos_embed"] = torch.zeros(1, 5, 32)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        build_backbone(TEST_BACKBONE, str(tmp_path / "bad.pth"))
    message = str(info.value)
    assert "missing: blocks.1.attn.qkv.bias" in message
    assert "unexpected: extra.weight" in message
    assert "wrong shape: pos_embed" in message


def test_patch16_checkpoint_into_patch8_model_is_an_error(tmp_path: Path) -> None:
    state = tiny_state()
    state["patch_embed.proj.weight"] = torch.zeros(32, 3, 16, 16)
    torch.save(state, tmp_path / "p16.pth")
    with pytest.raises(WeightsError, match="patch_embed.proj.weight"):
        build_backbone(TEST_BACKBONE, str(tmp_path / "p16.pth"))


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        build_backbone(TEST_BACKBONE, str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("hello\nworld")
    with pytest.raises(
        WeightsError,
        match="not a weights file bavos can load: a text file, not a PyTorch file "
        r"\(it starts with 'hello world'\)$",
    ):
        build_backbone(TEST_BACKBONE, str(tmp_path / "text.pth"))
    with pytest.raises(WeightsError, match="unknown backbone"):
        build_backbone("no_such_model_xyz", "none")
    with pytest.raises(WeightsError, match="--checkpoint"):
        extract_backbone_state({"model": {}, "config": {}}, tmp_path / "bavos.pt")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(
        WeightsError,
        match=r"a PyTorch file holding Python objects \(posix.system\) that loading "
        "without running code refuses",
    ) as info:
        build_backbone(TEST_BACKBONE, str(tmp_path / "evil.pth"))
    assert "weights_only=False" not in str(info.value)  # never the advice to load it unsafely


@pytest.mark.weights
@pytest.mark.skipif(not os.environ.get("BAVOS_DINO_WEIGHTS"), reason="set BAVOS_DINO_WEIGHTS to a DINO ViT-S/8 file")
def test_real_dino_weights_load() -> None:
    backbone = build_backbone("vit_small_patch8_224.dino", os.environ["BAVOS_DINO_WEIGHTS"])
    out = backbone(torch.zeros(1, 3, 64, 96))
    assert out.keys.shape == (1, 96, 384)


@pytest.fixture(scope="module")
def vit_s8():
    return build_backbone("vit_small_patch8_224.dino", "none")


@pytest.mark.parametrize("size", [(224, 224), (320, 480), (192, 384), (64, 96), (200, 136)])
def test_positional_embedding_is_resized_as_dino_does(vit_s8, size: tuple[int, int]) -> None:
    grid = (size[0] // 8, size[1] // 8)
    pos = vit_s8.vit.pos_embed.detach()
    expected = reference_pos_embed(pos[0].numpy(), 28, grid)
    got = vit_s8.pos_embed(grid)
    assert got.shape == (1, 1 + grid[0] * grid[1], 384)
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-6)
    if grid == (28, 28):
        assert got is vit_s8.vit.pos_embed or torch.equal(got, pos)  # nothing is resized at the base grid
    # the tokens that enter the first block: [CLS, patches] + that embedding
    x = torch.randn(1, 3, *size)
    patches = vit_s8.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (1, N, D)
    tokens = torch.cat([vit_s8.vit.cls_token, patches], dim=1) + torch.from_numpy(expected).float()
    torch.testing.assert_close(vit_s8.embed(x), tokens, rtol=1e-5, atol=1e-5)


def test_dino_resize_differs_from_timms_antialiased_resize(vit_s8) -> None:
    from timm.layers import resample_abs_pos_embed

    pos = vit_s8.vit.pos_embed.detach()
    timm_pos = resample_abs_pos_embed(pos, new_size=(40, 60), old_size=(28, 28), num_prefix_tokens=1)
    dino = vit_s8.pos_embed((40, 60))
    assert (dino - timm_pos).abs().max() > 1e-3  # a real difference, the one that changed the clustering
    # and a plain exact-size bicubic (size=, no +0.1) is not DINO's either
    plain = dino_pos_embed(pos, (28, 28), (40, 60), 1)
    torch.testing.assert_close(plain, dino)
    sized = (
        torch.nn.functional.interpolate(
            pos[:, 1:].reshape(1, 28, 28, 384).permute(0, 3, 1, 2), size=(40, 60), mode="bicubic"
        )
        .permute(0, 2, 3, 1)
        .reshape(1, -1, 384)
    )
    assert (sized - dino[:, 1:]).abs().max() > 1e-4


def test_loading_weights_draws_no_random_numbers(tmp_path: Path) -> None:
    """A file's weights replace every initial value: the model is built without its random initialisation (the RNG
    is left as it was) and holds exactly the file's numbers."""
    from bavos.models.correlator import Correlator, load_correlator, save_checkpoint

    state = tiny_state(3)
    torch.save(state, tmp_path / "dino.pth")
    torch.manual_seed(11)
    correlator = Correlator(dim=64, heads=4)
    save_checkpoint(tmp_path / "correlator.pth", correlator, {})
    before = torch.get_rng_state()
    backbone = build_backbone(TEST_BACKBONE, str(tmp_path / "dino.pth"))
    loaded = load_correlator(tmp_path / "correlator.pth", dim=64, heads=4)
    assert torch.equal(before, torch.get_rng_state())
    for key, value in state.items():
        assert torch.equal(backbone.vit.state_dict()[key], value)
    for key, value in correlator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_module_with_buffers_no_file_holds_is_not_built_uninitialised() -> None:
    from bavos.models.backbone import uninitialised

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(3))
            self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)

    with pytest.raises(WeightsError, match="Scaled has buffers no weights file holds: scale"):
        uninitialised(Scaled)
    module = uninitialised(lambda: torch.nn.Linear(2, 3))
    assert module.weight.device.type == "cpu" and module.weight.shape == (3, 2)
