"""Shared fixtures: clips written with PyAV, tiny random ViT weights, an in-process CLI runner."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# the paper's pipeline at a tiny size (a CPU's own defaults: test_cli.py)
TINY = [
    "--backbone",
    "bavos_test_vit",
    "--checkpoint",
    "none",
    "--resolution",
    "64",
    "96",
    "--device",
    "cpu",
    "--stride",
    "1",
    "--max-key-frames",
    "30",
]
CUDA = torch.cuda.is_available()
# Every test that runs a network, the attention or the clustering takes ``device``: the CPU, and CUDA (marked gpu)
# where there is one. ``pytest -m gpu`` runs the CUDA half alone.
DEVICES = ["cpu", *([pytest.param("cuda", marks=pytest.mark.gpu)] if CUDA else [])]


@pytest.fixture(scope="session", params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """ "cpu", then "cuda" when CUDA is present (TensorFloat-32 is off under float32 on CUDA, as in bavos)."""
    return request.param


def on(device: str, args: list[str]) -> list[str]:
    """CLI arguments with ``--device cpu`` replaced by ``--device DEVICE``."""
    out = list(args)
    out[out.index("--device") + 1] = device
    return out


def clip_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """A red square moving right and a static green block on a grey background."""
    frames = []
    for i in range(n):
        img = np.full((height, width, 3), 90, dtype=np.uint8)
        top, side = height // 5, max(4, height // 3)
        left = min(width - side, 2 + 2 * i)
        img[top : top + side, left : left + side] = (230, 20, 20)
        img[height - side :, width - side :] = (20, 200, 40)
        frames.append(img)
    return frames


def write_clip(
    path: Path,
    n: int = 12,
    height: int = 53,
    width: int = 75,
    fps: int = 12,
    rotation: int | None = None,
    pix_fmt: str | None = None,
) -> Path:
    """Write an H.264 clip with PyAV; odd sizes use 4:4:4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or ("yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p")
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for img in clip_frames(n, height, width):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_shape(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) of a video as a player decodes it."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").shape[:2] for f in container.decode(video=0)]
    return (len(frames), *frames[0]) if frames else (0, 0, 0)


def comparable(path: Path) -> object:
    """A result file's content as two runs of the same work must give it: its bytes; a video's frame count and size
    (``EncoderInputs``); the manifest of bavos's files (``.bavos-files``) without the sizes of summary.json (its
    timings) and of the videos. summary.json itself is each test's to compare."""
    if path.suffix == ".mp4":
        return video_shape(path)
    if path.name == ".bavos-files":
        files = json.loads(path.read_text())["files"]
        return {k: None if k.endswith(("summary.json", ".mp4")) else v for k, v in files.items()}
    return path.read_bytes()


class EncoderInputs:
    """What bavos gave its video writers (``OverlayWriter``) since the last ``take``, by file name (overlay.mp4,
    masks.mp4): the writer's size, rate, time base and aspect, then each frame's pixels, timestamp and duration, hashed.

    x264 does not always give the same bitstream for the same frames. Measured with PyAV's x264 (with one thread
    too), the same 9 frames given 40 times: at 48x64, a second bitstream once in 3 of 6 processes; at 144x192, one
    bitstream per process, a different one in each of 3 processes; decoded, such encodes differed by a level or a few,
    and once (in this suite) by 17 levels on 9 % of the values. So two runs' videos compare by what bavos gave the
    encoder, byte for byte, and by the decoded frames' count and size (``video_shape``).
    """

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def record(self, name: str, data: bytes) -> None:
        self.seen.setdefault(name, []).append(hashlib.sha256(data).hexdigest())

    def take(self) -> dict[str, list[str]]:
        seen, self.seen = self.seen, {}
        return seen


@pytest.fixture
def encoder_inputs(monkeypatch: pytest.MonkeyPatch) -> EncoderInputs:
    from bavos.io.video import OverlayWriter

    inputs = EncoderInputs()
    init, write = OverlayWriter.__init__, OverlayWriter.write

    def recorded_init(self: OverlayWriter, path: Path, *args: Any, **kwargs: Any) -> None:
        inputs.record(Path(path).name, repr((args, kwargs)).encode())
        init(self, path, *args, **kwargs)

    def recorded_write(
        self: OverlayWriter, image: np.ndarray, pts: int | None = None, duration: int | None = None
    ) -> None:
        said = repr((image.shape, pts, duration)).encode()
        inputs.record(self._path.name, np.ascontiguousarray(image).tobytes() + said)
        write(self, image, pts, duration)

    monkeypatch.setattr(OverlayWriter, "__init__", recorded_init)
    monkeypatch.setattr(OverlayWriter, "write", recorded_write)
    return inputs


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


@pytest.fixture(scope="session")
def sharp_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random bavos_test_vit weights with scaled qkv and patch embedding, so attention is peaked, not uniform."""
    import timm

    import bavos.models.backbone  # noqa: F401 - registers bavos_test_vit

    torch.manual_seed(0)
    state = timm.create_model("bavos_test_vit", num_classes=0).state_dict()
    for key in state:
        if key.endswith("qkv.weight") or key == "patch_embed.proj.weight":
            state[key] = state[key] * 24
    path = tmp_path_factory.mktemp("weights") / "sharp.pth"
    torch.save(state, path)
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `bavos ARGS` in-process; returns exit code, stdout and stderr."""
    from bavos.cli import main

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def make_release_checkpoint(path: Path, seed: int = 0, sharpness: float = 1.0) -> Path:
    """A file in the paper's release layout with random weights: a ViT-S/8 encoder and one correlator block.

    ``model_state_dict`` holds ``encoder.*`` (DINO's backbone keys) and ``temporal_transformer.0.*`` (the block);
    ``sharpness`` scales the correlator's q/k weights (sharper attention, more clusters).
    """
    import timm

    from bavos.models.correlator import Correlator

    torch.manual_seed(seed)
    encoder = timm.create_model("vit_small_patch8_224.dino", pretrained=False, num_classes=0).state_dict()
    block = Correlator(384, 8).state_dict()
    block["attn.qkv.weight"][:768] *= sharpness
    state = {
        **{f"encoder.{k}": v for k, v in encoder.items()},
        **{f"temporal_transformer.0.{k}": v for k, v in block.items()},
    }
    torch.save(
        {"iteration": 60000, "model_state_dict": state, "optimizer_state_dict": {"state": {}}, "loss": 0.5}, path
    )
    return path


@pytest.fixture(scope="session")
def release_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight checkpoint in the release's layout (about 95 MB)."""
    return make_release_checkpoint(tmp_path_factory.mktemp("release") / "checkpoint_dino-s-8.pth")


def segment_in_process(*args: str | Path) -> None:
    """`bavos segment ARGS` in this process; AssertionError unless it exits 0."""
    from bavos.cli import main

    try:
        main(["segment", *(str(a) for a in args)])
    except SystemExit as e:
        assert not e.code, f"bavos segment exited {e.code}"


@pytest.fixture(scope="session")
def view_result(tmp_path_factory: pytest.TempPathFactory, sharp_weights: Path) -> Path:
    """A finished result for the viewer's tests: 9 frames, three levels of 58, 34 and 33 clusters capped to 20
    (copy it before writing into it)."""
    root = tmp_path_factory.mktemp("view")
    video = write_clip(root / "clip.mp4", n=9, height=48, width=64)
    segment_in_process(video, "-o", root / "out", *TINY, "--backbone-weights", sharp_weights, "--tau", "0.2", "-q")
    return root / "out" / "clip"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """Marks a test whose call failed (``item.failed_call``): the browser tests then keep a screenshot."""
    if call.when == "call" and call.excinfo is not None:
        item.failed_call = True  # type: ignore[attr-defined]
