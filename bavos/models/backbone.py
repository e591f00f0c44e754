"""The frozen ViT backbone (DINO ViT-S/8 through timm): last-block keys, queries and the output CLS token.

Weight sources are explicit: ``hub`` (timm downloads and caches), a local file, or ``none`` (random weights).
Local files may be the backbone-only DINO ``.pth``, the full DINO training checkpoint (teacher weights, the
``backbone.`` prefix stripped), the paper's released checkpoint (its ``encoder.*`` weights), or timm
safetensors. Every key must match: a mismatch is an error that names the keys.

The positional embedding is resized to the input's patch grid as DINO (and so the paper's release) does it, not
as timm does: bicubic by a scale factor of ``(grid + 0.1) / base grid``, without antialiasing, and not at all when
the grid is the embedding's own (28 x 28 for ViT-S/8 at 224 x 224). timm's own resize (bicubic to the exact size,
with antialiasing) moves the features enough to change the clustering (method.md §7.11).
"""

from __future__ import annotations

import argparse
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from bavos.config import DEFAULT_BACKBONE
from bavos.errors import BavosError, WeightsError

TEST_BACKBONE = "bavos_test_vit"

# timm looks up a module-level `default_cfgs` for the models this module registers.
default_cfgs = generate_default_cfgs({f"{TEST_BACKBONE}.untrained": {"num_classes": 0, "input_size": (3, 64, 64)}})


@register_model
def bavos_test_vit(pretrained: bool = False, **kwargs: object) -> VisionTransformer:
    """A tiny ViT with the layout of DINO ViT-S/8 (patch 8, CLS token, qkv bias), for tests and benchmarks."""
    if pretrained:
        raise WeightsError(f"{TEST_BACKBONE} has no pretrained weights; use --backbone-weights none")
    args = {
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "qkv_bias": True,
        "img_size": 64,
        **kwargs,
    }
    return build_model_with_cfg(VisionTransformer, TEST_BACKBONE, pretrained=False, **args)


def dino_pos_embed(pos_embed: Tensor, base_grid: tuple[int, int], grid: tuple[int, int], prefix: int) -> Tensor:
    """The positional embedding for a patch grid, resized as DINO's ``interpolate_pos_encoding`` does.

    The patch part is laid out on its base grid and resized with ``F.interpolate(mode="bicubic")`` by a scale
    factor of ``((h + 0.1) / h0, (w + 0.1) / w0)`` (no ``size=``, no antialiasing, ``align_corners=False``); the
    prefix (CLS) part is kept. At the base grid itself nothing is resized.

    Args:
        pos_embed: (1, prefix + h0 * w0, D) learned embedding.
        base_grid: (h0, w0) grid the embedding was learned for (28 x 28 for DINO ViT-S/8).
        grid: (h, w) patch grid of the input.
        prefix: leading positions that are not patches (1: the CLS token; 0 when the embedding has none).

    Returns:
        (1, prefix + h * w, D).
    """
    if tuple(grid) == tuple(base_grid):
        return pos_embed
    (h0, w0), (h, w) = base_grid, grid
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, prefix:].float().reshape(1, h0, w0, dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    resized = F.interpolate(patches, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0), mode="bicubic")
    if tuple(resized.shape[-2:]) != (h, w):  # cannot happen for integer grids: floor(h0 * (h + 0.1) / h0) == h
        raise WeightsError(f"positional embedding resized to {tuple(resized.shape[-2:])}, expected {(h, w)}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)  # (1, h*w, D)
    return torch.cat([pos_embed[:, :prefix], resized], dim=1)


@dataclass
class BackboneOutput:
    """Last-block features of a batch of frames (patch tokens only, prefix tokens removed).

    Attributes:
        keys: (B, N, D) last-block keys, heads concatenated in head-major order (the correlator's input).
        q: (B, heads, N, d) last-block queries (training-free attention).
        k: (B, heads, N, d) last-block keys split per head.
        cls: (B, D) CLS token of the last block's output (before the final norm), or None unless requested.
    """

    keys: Tensor
    q: Tensor
    k: Tensor
    cls: Tensor | None


class Backbone(nn.Module):
    """A frozen timm VisionTransformer that exposes its last block's attention inputs."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit.eval().requires_grad_(False)
        last = vit.blocks[-1].attn
        self.num_heads: int = last.num_heads
        self.embed_dim: int = vit.embed_dim
        self.head_dim: int = self.embed_dim // self.num_heads
        self.scale: float = float(last.scale)
        patch = vit.patch_embed.patch_size
        self.patch_size: int = patch[0] if isinstance(patch, tuple) else int(patch)
        if vit.pos_embed is None:
            raise WeightsError("the backbone has no learned positional embedding; bavos needs a plain ViT")
        base = getattr(vit.patch_embed, "grid_size", None)
        if base is None:  # a square grid is all the embedding can tell
            side = math.isqrt(vit.pos_embed.shape[1] - (0 if vit.no_embed_class else vit.num_prefix_tokens))
            base = (side, side)
        self.base_grid: tuple[int, int] = (int(base[0]), int(base[1]))
        self._pos_cache: dict[tuple[object, ...], Tensor] = {}

    def sharpen(self, logit_std: float = 10.0) -> float:
        """Scale the last block's query and key weights so that its attention logits spread with standard deviation
        about ``logit_std`` (for random weights only); returns the factor.

        Random weights give nearly uniform attention, which clusters into one object on every video: nothing shows
        that the pipeline works. A query and a key of a layer-normed token have entries of standard deviation
        ``s_q * sqrt(D)`` and ``s_k * sqrt(D)`` for weights of spread ``s_q``, ``s_k``, so their scaled dot product
        spreads by about ``s_q * s_k * D``: 0.15 for timm's ViT-S/8 initialisation, whose attention is then flat.
        At 10 it is peaked enough to form clusters (the clusters it gives: docs/performance.md, its opening "The
        weights"). The masks stay meaningless: they show the pipeline at work, not objects.
        """
        with torch.no_grad():
            weight = self.vit.blocks[-1].attn.qkv.weight
            d = self.embed_dim
            spread = float(weight[:d].std() * weight[d : 2 * d].std()) * d
            factor = (logit_std / max(spread, 1e-12)) ** 0.5
            weight[: 2 * d] *= factor
        return factor

    def train(self, mode: bool = True) -> Backbone:
        """The backbone always stays in eval mode (method.md §2.2)."""
        super().train(False)
        return self

    def pos_embed(self, grid: tuple[int, int]) -> Tensor:
        """(1, prefix + h * w, D) positional embedding for a patch grid (DINO's resize, computed once per grid)."""
        pos = self.vit.pos_embed
        key = (tuple(grid), pos.device, pos.dtype)
        if key not in self._pos_cache:
            prefix = 0 if self.vit.no_embed_class else self.vit.num_prefix_tokens
            self._pos_cache[key] = dino_pos_embed(pos.detach(), self.base_grid, grid, prefix)
        return self._pos_cache[key]

    def embed(self, x: Tensor) -> Tensor:
        """Patch tokens with the prefix tokens and DINO's positional embedding: (B, 3, H, W) -> (B, prefix + N, D)."""
        vit = self.vit
        z = vit.patch_embed(x)  # (B, h, w, D): dynamic_img_size gives the grid
        b, h, w, dim = z.shape
        z = z.reshape(b, h * w, dim)  # (B, N, D)
        prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        pos = self.pos_embed((h, w))
        if vit.no_embed_class:  # the embedding covers the patches only
            z = torch.cat([*prefix, z + pos], dim=1)
        else:
            z = torch.cat([*prefix, z], dim=1) + pos
        return vit.pos_drop(z)

    @torch.no_grad()
    def forward(self, x: Tensor, with_cls: bool = False) -> BackboneOutput:
        """Run the backbone up to the last block's qkv.

        Args:
            x: (B, 3, H, W) normalised frames, H and W multiples of the patch size.
            with_cls: also run the last block to return its output CLS token.
        """
        vit = self.vit
        z = vit.norm_pre(vit.patch_drop(self.embed(x)))
        for block in vit.blocks[:-1]:
            z = block(z)
        last = vit.blocks[-1]
        b, length, dim = z.shape
        qkv = last.attn.qkv(last.norm1(z)).reshape(b, length, 3, self.num_heads, self.head_dim)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, heads, L, d)
        q, k = last.attn.q_norm(q), last.attn.k_norm(k)
        p = vit.num_prefix_tokens
        q, k = q[:, :, p:], k[:, :, p:]  # (B, heads, N, d)
        keys = k.transpose(1, 2).reshape(b, length - p, dim)  # (B, N, D), head-major
        cls = last(z)[:, 0] if with_cls else None
        return BackboneOutput(keys=keys, q=q, k=k, cls=cls)


def _megabytes(path: Path) -> str:
    try:
        return f"{Path(path).stat().st_size / 2**20:.1f} MB"
    except OSError:
        return "size unknown"


def incomplete(path: Path) -> str | None:
    """Why ``path`` is an incomplete PyTorch file, or None: a zip-format file (every ``torch.save`` since 1.6) whose
    directory, written last at its end, is missing was cut short (a download or a copy that stopped)."""
    try:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        if not zipped or zipfile.is_zipfile(path):
            return None
    except OSError:
        return None
    return (
        f"an incomplete file ({_megabytes(path)}: it ends before the zip directory a complete PyTorch file ends "
        "with, a download or copy cut short); fetch it again"
    )


def safetensors_size(path: Path) -> int | None:
    """The size a safetensors file announces (its 8-byte header length, the JSON header, the largest tensor end),
    or None when ``path`` does not start as a safetensors file."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            length = struct.unpack("<Q", head)[0]
            if not 2 <= length <= 100 * 2**20 or f.read(1) != b"{":
                return None
            text = b"{" + f.read(length - 1)
    except OSError:
        return None
    try:
        header = json.loads(text)
    except ValueError:
        return 8 + length + 1 if len(text) < length else None  # the header itself cut short: at least one byte more
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return 8 + length + max(ends, default=0)


def unloadable(path: Path, error: Exception) -> str:
    """What a file that ``torch.load(weights_only=True)`` refused looks like, in a few words (never PyTorch's advice
    to load it unsafely)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    cut = incomplete(path)
    if cut is not None:
        return cut
    if isinstance(error, EOFError) or re.search(r"truncated|unexpected EOF|ran out of input", str(error), re.I):
        return (
            f"an incomplete file ({_megabytes(path)}: its data ends early, a download or copy cut short); fetch "
            "it again"
        )
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        return (
            f"a PyTorch file holding Python objects{what} that loading without running code refuses; bavos never "
            "loads a file unsafely: save its state_dict instead"
        )
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch file (it starts with bytes {head[:8].hex(' ')})"
    start = " ".join(text.split())[:30]
    return f"a text file, not a PyTorch file (it starts with {start!r})" if text.strip() else "an empty file"


def _weights_only_load(path: Path) -> object:
    try:
        # argparse.Namespace: the full DINO training checkpoint stores its arguments as one.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a weights file bavos can load: {unloadable(path, e)}") from e


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def extract_backbone_state(obj: object, path: Path) -> dict[str, Tensor]:
    """Find the backbone weights in any of the supported file layouts (see the module docstring)."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    if "teacher" in obj:  # full DINO training checkpoint
        teacher = _strip(obj["teacher"], "module.") or obj["teacher"]
        return _strip(teacher, "backbone.")
    if "model_state_dict" in obj:  # the paper's released checkpoint
        state = _strip(obj["model_state_dict"], "module.") or obj["model_state_dict"]
        encoder = _strip(state, "encoder.")
        if not encoder:
            raise WeightsError(f"{path}: the checkpoint holds no encoder.* (backbone) weights")
        return encoder
    if "model" in obj and "config" in obj:
        raise WeightsError(
            f"{path}: this is a bavos correlator checkpoint, not backbone weights; pass it with --checkpoint"
        )
    for key in ("state_dict", "model"):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj  # a plain state dict (backbone-only DINO file, timm weights)


def load_backbone_file(vit: nn.Module, path: Path, loaded: dict | None = None, hub: bool = False) -> None:
    """Load a local weights file into ``vit``; any missing, unexpected or misshapen key is an error.

    Args:
        loaded: the file's contents when they were already read (the release checkpoint holds both networks).
        hub: a file of timm's hub (or the model's original URL): passed through timm's checkpoint filter first, as
            timm does when it loads pretrained weights.
    """
    if loaded is not None:
        state = extract_backbone_state(loaded, path)
    elif not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    elif path.suffix == ".safetensors" or safetensors_size(path) is not None:  # by its content, whatever its name
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            size = safetensors_size(path)
            if size is not None and size > path.stat().st_size:
                raise WeightsError(
                    f"{path}: an incomplete file ({_megabytes(path)} of the {size / 2**20:.1f} MB its "
                    "header announces: a download or copy cut short); fetch it again"
                ) from e
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        state = extract_backbone_state(_weights_only_load(path), path)
    if hub:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, vit)
    check_state_keys(vit, state, str(path))
    vit.load_state_dict(state, strict=True)


def check_state_keys(
    module: nn.Module, state: dict[str, Tensor], source: str, error: type[BavosError] = WeightsError
) -> None:
    """Raise ``error`` naming the keys of ``state`` that do not fit ``module`` (missing, unexpected, misshapen)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
            problems.append(f"{what}: {', '.join(keys[:5])}{more}")
    if problems:
        raise error(f"{source}: weights do not fit the model ({'; '.join(problems)})")


def uninitialised(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without its random initialisation, for a module whose every weight is loaded next.

    Built on the meta device (no random draws, no memory), then given uninitialised CPU memory: the DINO ViT-S/8's
    and the correlator's initialisations cost each ``bavos segment`` time (docs/performance.md, "The demo at the
    CPU's defaults") for numbers the checkpoint replaces. Every persistent tensor must then be loaded
    (``load_state_dict(strict=True)`` after ``check_state_keys``).

    Raises:
        WeightsError: the module has a buffer that no state dict holds (it would stay uninitialised).
    """
    with torch.device("meta"):
        module = build()
    unloaded = sorted(set(dict(module.named_buffers())) - set(module.state_dict()))
    if unloaded:
        raise WeightsError(f"{type(module).__name__} has buffers no weights file holds: {', '.join(unloaded)}")
    return module.to_empty(device="cpu")


def build_backbone(
    name: str, weights: str, loaded: dict | None = None, progress: Callable[[int, int | None], None] | None = None
) -> Backbone:
    """Create the frozen backbone.

    Args:
        name: timm model name, e.g. ``vit_small_patch8_224.dino``.
        weights: ``hub``, ``none`` (random weights drawn from seed 0, the same in every run) or a path to a local
            weights file.
        loaded: the contents of that file when they were already read.
        progress: reports a download of hub weights (bytes done, bytes in all).
    """
    if weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same random weights in every run (resumable, reproducible)
            vit = _create(name)
    else:  # every weight comes from the file
        vit = uninitialised(lambda: _create(name))
    if weights == "hub":  # cached (timm's Hugging Face cache or bavos's): no network; else downloaded once
        from bavos.models.hub import hub_weights

        load_backbone_file(vit, hub_weights(name, progress), hub=True)
    elif weights != "none":
        load_backbone_file(vit, Path(weights), loaded)
    return Backbone(vit)


def _create(name: str) -> VisionTransformer:
    """timm's model ``name`` with random weights, as the backbone is built.

    Raises:
        WeightsError: a name timm does not know, or a model that is not a plain ViT (a ResNet, a Swin, ...).
    """
    not_a_vit = f"backbone {name!r} is not a plain timm VisionTransformer: give a ViT such as {DEFAULT_BACKBONE}"
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError as e:  # a model of another family refuses the ViT's keyword
        raise WeightsError(not_a_vit) from e
    except RuntimeError as e:
        raise WeightsError(f"unknown backbone {name!r}: give a timm ViT name") from e
    if not isinstance(vit, VisionTransformer):
        raise WeightsError(not_a_vit)
    return vit


def patch_size_of(name: str) -> int:
    """The patch size of a timm ViT, read from the model built on the meta device (no memory, no weights).

    Raises:
        WeightsError: as ``_create``.
    """
    with torch.device("meta"):
        vit = _create(name)
    patch = vit.patch_embed.patch_size
    return patch[0] if isinstance(patch, tuple) else int(patch)
