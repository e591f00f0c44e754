"""The temporal correlator: one pre-norm transformer block (method.md §2.3), and its checkpoints.

For ViT-S (width 384) with 8 heads the block has exactly 1,773,312 parameters. At inference only ``norm1`` and
the query/key thirds of ``attn.qkv`` are used (:meth:`Correlator.query_key`).

Checkpoints: bavos writes ``{"model": state_dict, "config": {...}, "version": ...}`` (training adds optimizer
state and more). The paper's released checkpoint (``{"model_state_dict": {"encoder.*", "temporal_transformer.0.*"}}``)
loads too; its block's key names are assumed to follow the usual timm block layout (``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), the layout this module uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bavos.errors import CheckpointError
from bavos.io.files import atomic_path
from bavos.models.backbone import check_state_keys, uninitialised, unloadable

RELEASE_PREFIX = "temporal_transformer.0."


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, clean: bool = False) -> tuple[Tensor, Tensor]:
        """x: (B, L, D) -> (out (B, L, D), attention (B, heads, L, L) after dropout, or before it if ``clean``)."""
        b, length, dim = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, L, d)
        probs = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # (B, heads, L, L)
        attn = self.attn_drop(probs)
        out = (attn @ v).transpose(1, 2).reshape(b, length, dim)  # (B, L, D)
        return self.proj_drop(self.proj(out)), probs if clean else attn


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Correlator(nn.Module):
    """One pre-norm spatio-temporal transformer block without positional embeddings.

    Parameters start from PyTorch's own defaults for ``nn.Linear`` (weights and biases uniform in
    ``+-1/sqrt(fan_in)``) and ``nn.LayerNorm`` (ones and zeros), as in the release, which sets no initialisation.

    Args:
        dim: token width (the backbone's width, 384 for ViT-S).
        heads: attention heads (8; head width ``dim // heads``).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        attn_drop: dropout on the attention probabilities (0.4 in training).
        drop: dropout after the projection and inside the MLP (0.1 in training).
    """

    def __init__(
        self, dim: int = 384, heads: int = 8, mlp_ratio: float = 4.0, attn_drop: float = 0.4, drop: float = 0.1
    ) -> None:
        super().__init__()
        if dim % heads:
            raise CheckpointError(f"correlator width {dim} is not divisible by its {heads} heads")
        self.dim, self.heads = dim, heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), drop)

    @property
    def scale(self) -> float:
        """Softmax temperature ``head_dim ** -0.5`` (48 ** -0.5 for ViT-S with 8 heads)."""
        return self.attn.scale

    def forward(self, x: Tensor, clean_attention: bool = False) -> tuple[Tensor, Tensor]:
        """x: (B, L, D) tokens -> (y (B, L, D), attention (B, heads, L, L)).

        The attention returned is the one after attention dropout (what the release's losses see), or the one
        before it with ``clean_attention``; the output y always uses the dropped-out attention.
        """
        out, attn = self.attn(self.norm1(x), clean=clean_attention)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn

    def query_key(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Inference queries and keys from backbone keys.

        Args:
            keys: (B, N, D) last-block backbone keys of B frames.

        Returns:
            q, k: (B, heads, N, d) each.
        """
        u = self.norm1(keys)
        d = self.dim
        q = u @ self.attn.qkv.weight[:d].T  # (B, N, D)
        k = u @ self.attn.qkv.weight[d : 2 * d].T  # (B, N, D)
        b, n, _ = keys.shape
        split = (b, n, self.heads, d // self.heads)
        return q.reshape(split).transpose(1, 2), k.reshape(split).transpose(1, 2)


def save_checkpoint(path: Path, model: Correlator, config: dict[str, Any], **extra: Any) -> None:
    """Write a bavos checkpoint atomically (temporary name, then rename); OutputError if it cannot be written."""
    from bavos.version import __version__

    payload = {"model": model.state_dict(), "config": config, "version": __version__, **extra}
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's writer says a short write so ("unexpected pos", "file write failed")
            raise _write_failure(tmp, e) from e


def _write_failure(tmp: Path, e: RuntimeError) -> OSError:
    """What torch's RuntimeError for a file it could not write was: a full disk where little space is left, else
    the error's first line."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"torch could not write it ({(str(e).splitlines() or [''])[0][:160]})")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file as a dict, loaded with weights_only=True (CheckpointError if missing or unsafe)."""
    if path.is_dir():
        run = " (a training run's: give its last.pt)" if (path / "last.pt").is_file() else ""
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file{run}")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a checkpoint bavos can load: {unloadable(path, e)}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def correlator_state(obj: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """The correlator's state dict from a bavos or a release checkpoint."""
    if "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    if "model_state_dict" in obj:
        state = obj["model_state_dict"]
        if any(k.startswith("module.") for k in state):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        others = sorted(k for k in state if not k.startswith(("encoder.", RELEASE_PREFIX)))
        if others:
            raise CheckpointError(
                f"{path}: release checkpoint has keys bavos does not know: {', '.join(others[:5])}"
                " (only one correlator block, temporal_transformer.0, is supported)"
            )
        block = {k[len(RELEASE_PREFIX) :]: v for k, v in state.items() if k.startswith(RELEASE_PREFIX)}
        if not block:
            raise CheckpointError(f"{path}: release checkpoint holds no {RELEASE_PREFIX}* weights")
        return block
    raise CheckpointError(f"{path}: not a bavos checkpoint (no 'model') nor the paper's (no 'model_state_dict')")


def load_correlator(path: str | Path, dim: int, heads: int = 8, loaded: dict[str, Any] | None = None) -> Correlator:
    """Build a correlator for a backbone of width ``dim`` and load a bavos or release checkpoint into it.

    Args:
        loaded: the checkpoint's contents when they were already read.

    Raises:
        CheckpointError: unreadable file, unsafe pickle, or keys/shapes that do not match (named in the message).
    """
    path = Path(path)
    obj = read_checkpoint(path) if loaded is None else loaded
    state = correlator_state(obj, path)
    config = obj.get("config")
    if isinstance(config, dict):
        model_config = config.get("ModelConfig", config)  # bavos train nests it; older files are flat
        if isinstance(model_config, dict):
            heads = int(model_config.get("correlator_heads", heads))
    model = uninitialised(lambda: Correlator(dim=dim, heads=heads))  # every weight comes from the file
    check_state_keys(model, state, f"{path} (correlator for a backbone of width {dim})", CheckpointError)
    model.load_state_dict(state, strict=True)
    return model.eval()
