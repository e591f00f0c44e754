from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import clip_frames, write_clip
from PIL import Image

from bavos.errors import InputError
from bavos.io.video import OverlayWriter, VideoSource


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
def test_bad_inputs_are_input_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "in.mp4")
    with pytest.raises(InputError, match=message):
        list(VideoSource(path).frames())


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
        # odd sizes one pixel larger: 4:2:0, which every player plays (matplotlib#5345: yuv444p is not)
        assert (stream.width, stream.height) == (width + width % 2, height + height % 2)
        assert stream.average_rate == Fraction(25, 2)
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


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


def _one_frame_folder(tmp_path: Path, image: Image.Image, name: str = "00000.png", **save: object) -> Path:
    folder = tmp_path / "seq"
    folder.mkdir()
    image.save(folder / name, **save)
    return folder


def _first(folder: Path) -> np.ndarray:
    return next(VideoSource(folder).frames()).image


def test_palette_with_transparency_gives_the_palette_colours(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image = _first(_one_frame_folder(tmp_path, im, transparency=0))
    assert image[0, 0].tolist() == [10, 20, 30] and image[0, 1].tolist() == [200, 100, 50]  # alpha dropped


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("LA", (77, 10), [77, 77, 77]),  # grey with alpha: the grey, alpha dropped (FFmpeg's ya8 to rgb24)
        ("RGBA", (1, 2, 3, 4), [1, 2, 3]),  # alpha dropped, not blended
        ("1", 1, [255, 255, 255]),  # 1-bit: 0 or 255
        ("L", 200, [200, 200, 200]),
    ],
)
def test_image_modes_become_8_bit_rgb(tmp_path: Path, mode: str, pixel: object, expected: list[int]) -> None:
    image = _first(_one_frame_folder(tmp_path, Image.new(mode, (4, 3), pixel)))
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    assert image[1, 2].tolist() == expected


def test_cmyk_uses_the_standard_conversion(tmp_path: Path) -> None:
    c, m, y, k = 51, 0, 255, 102
    image = _first(_one_frame_folder(tmp_path, Image.new("CMYK", (4, 3), (c, m, y, k)), "00000.jpg", quality=100))
    expected = [(255 - v) * (255 - k) / 255 for v in (c, m, y)]  # (255 - C)(255 - K) / 255 per channel
    np.testing.assert_allclose(image[1, 2], expected, atol=3)  # JPEG's rounding


def test_sixteen_bit_rgb_keeps_its_high_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    pixels = np.zeros((4, 6, 3), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 0x1234, 0xFFFF, 0x00FF
    with av.open(str(folder / "00000.png"), "w", format="image2") as c:  # a 48-bit PNG, written by FFmpeg
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 6, 4, "rgb48be"
        for p in [*s.encode(av.VideoFrame.from_ndarray(pixels, format="rgb48le")), *s.encode()]:
            c.mux(p)
    assert _first(folder)[2, 3].tolist() == [0x12, 0xFF, 0x00]  # full range: 65535 -> 255


def test_float_grey_is_read_as_0_to_1(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5], [1.0, 2.0]], np.float32)
    image = _first(_one_frame_folder(tmp_path, Image.fromarray(values, mode="F"), "00000.tif"))
    assert image[..., 0].tolist() == [[0, 128], [255, 255]]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone's portrait JPEG stored landscape with orientation 6 (rotate 90 degrees clockwise to show): bavos
    applies it, as photo viewers do and as it applies a video's rotation metadata, and reports the upright size."""
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:, :10] = 255  # a white band on the left of the stored picture
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = _one_frame_folder(tmp_path, Image.fromarray(stored), "00000.jpg", exif=exif.tobytes(), quality=95)
    source = VideoSource(folder)
    assert (source.info.width, source.info.height) == (30, 40)
    image = next(source.frames()).image
    assert image.shape == (40, 30, 3)
    assert image[:8].mean() > 200 and image[-20:].mean() < 30  # the left band is now on top


def test_a_decoder_short_of_memory_is_not_called_damage(tmp_path: Path) -> None:
    """A trial under ``ulimit -v``: FFmpeg could not start its decoding threads (EAGAIN), and a sound video was said
    to be "damaged or truncated", its --json line "failed" as a bad file."""
    import subprocess
    import sys

    video = write_clip(tmp_path / "v.mp4", n=4, height=96, width=128)
    code = (
        "import resource, sys; from bavos.models import costs; from bavos.io.video import VideoSource\n"
        "vm = costs._proc_bytes('/proc/self/status', 'VmSize')\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 2**20, resource.RLIM_INFINITY))\n"
        "try:\n    VideoSource(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    said = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True).stdout
    assert said.startswith("ResourceError ") and "for want of resources" in said and "damaged" not in said, said


def test_memory_that_runs_out_is_named_so() -> None:
    from bavos.errors import internal_error

    for e in (
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you"),
        ImportError("libtorch_cpu.so: failed to map segment from shared object"),
    ):
        assert internal_error(e).startswith("out of memory (") and "ulimit -v, a cgroup" in internal_error(e)
    assert (
        internal_error(ValueError("x\ny")) == "internal error: ValueError: x (run with BAVOS_DEBUG=1 for the traceback)"
    )


def test_the_overlay_is_bt709_tagged_and_its_index_comes_first(tmp_path: Path) -> None:
    """A trial after video2x#403: the overlay was converted with BT.601's matrix and left untagged, which players
    show as BT.709 for HD: its saturated object colours shifted ((0, 255, 0) showed as (0, 215, 0)). Its index came
    last, so a browser needed the whole file before playing it."""
    import av
    from av.video.reformatter import ColorRange, Colorspace

    from bavos.io.video import OverlayWriter

    colours = np.array([[0, 255, 0], [255, 0, 0], [0, 0, 255], [200, 120, 40]], np.uint8)
    image = np.repeat(np.repeat(colours[None], 16, axis=0), 16, axis=1).reshape(16, 64, 3)
    writer = OverlayWriter(tmp_path / "o.mp4", 64, 16, 10.0)
    for _ in range(3):
        writer.write(image)
    writer.close()
    data = (tmp_path / "o.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart
    with av.open(str(tmp_path / "o.mp4")) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert (context.colorspace, context.color_primaries, context.color_trc, context.color_range) == (1, 1, 1, 1)
        frame = next(container.decode(stream))
        shown = frame.reformat(
            format="rgb24", src_colorspace=Colorspace.ITU709, src_color_range=ColorRange.MPEG
        ).to_ndarray()  # as a player that honours the tags shows it
    centres = shown[8, 8::16].astype(int)
    assert np.abs(centres - colours.astype(int)).max() <= 8, centres
