from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import clip_frames, write_clip
from PIL import Image

from bavos.errors import InputError
from bavos.video import OverlayWriter, VideoSource


def test_decodes_every_frame_of_an_odd_sized_clip(tmp_path: Path) -> None:
    source = VideoSource(write_clip(tmp_path / "c.mp4", n=9, height=53, width=75, fps=12))
    assert (source.info.width, source.info.height, source.info.fps) == (75, 53, 12.0)
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(9))
    assert [f.name for f in frames][:2] == ["00000", "00001"]
    assert frames[0].image.shape == (53, 75, 3) and frames[0].image.dtype == np.uint8
    assert len(list(source.frames())) == 9  # re-iterable


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    source = VideoSource(write_clip(tmp_path / "r.mp4", n=2, height=48, width=80, rotation=90))
    assert source.info.rotation == 90
    assert (source.info.width, source.info.height) == (48, 80)
    image = next(source.frames()).image
    assert image.shape == (80, 48, 3)
    expected = np.rot90(clip_frames(1, 48, 80)[0])  # counter-clockwise, as the display matrix says
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 12


def test_frame_folder_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, img in enumerate(clip_frames(11, 30, 41)):
        Image.fromarray(img).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("ignored")
    source = VideoSource(folder)
    assert source.info.frame_count == 11 and source.info.is_folder
    assert [f.name for f in source.frames()] == [str(i) for i in range(11)]


def test_frame_folder_with_mixed_sizes_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((11, 12, 3), np.uint8)).save(folder / "b.png")
    with pytest.raises(InputError, match="all frames must match"):
        list(VideoSource(folder).frames())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file or folder"),
        (lambda p: (p.mkdir(), p)[1], "folder holds no frames"),
        (lambda p: (p.write_bytes(b""), p)[1], "file is empty"),
        (lambda p: (p.write_text("this is not a video\n" * 20), p)[1], "not a video FFmpeg can read"),
        (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4096)), p)[1], "not a video FFmpeg can read"),
    ],
    ids=["missing", "empty-folder", "zero-bytes", "text", "random-bytes"],
)
def test_bad_inputs_are_input_errors(tmp_path: Path, make, message: str) -> None:  # noqa: ANN001
    path = make(tmp_path / "in.mp4")
    with pytest.raises(InputError, match=message):
        list(VideoSource(path).frames())


def test_truncated_video_is_an_input_error(tmp_path: Path) -> None:
    full = write_clip(tmp_path / "full.mp4", n=30)
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        list(VideoSource(cut).frames())


def test_audio_only_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        VideoSource(path)


@pytest.mark.parametrize(("width", "height"), [(64, 48), (75, 53)])
def test_overlay_writer_keeps_size_count_and_rate(tmp_path: Path, width: int, height: int) -> None:
    writer = OverlayWriter(tmp_path / "o.mp4", width, height, fps=12.5)
    for img in clip_frames(7, height, width):
        writer.write(img)
    writer.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        stream = c.streams.video[0]
        assert sum(1 for _ in c.decode(stream)) == 7
        assert (stream.width, stream.height) == (width, height)
        assert stream.average_rate == Fraction(25, 2)
        assert stream.codec_context.name == "h264"


def test_overlay_writer_keeps_input_timestamps(tmp_path: Path) -> None:
    writer = OverlayWriter(tmp_path / "v.mp4", 32, 32, fps=10, time_base=Fraction(1, 1000))
    pts = [0, 100, 300, 350, 800]
    for t in pts:
        writer.write(np.zeros((32, 32, 3), np.uint8), t)
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as c:
        stream = c.streams.video[0]
        got = [round(float(f.pts * f.time_base) * 1000) for f in c.decode(stream)]
    assert got == pts


def test_davis_folder_is_readable() -> None:
    folder = Path(__file__).resolve().parents[2] / "shared/data/davis-mini/JPEGImages/480p/blackswan"
    if not folder.is_dir():
        pytest.skip("../shared is absent")
    source = VideoSource(folder)
    assert (source.info.width, source.info.height) == (854, 480)
    assert next(source.frames()).name == "00000"
