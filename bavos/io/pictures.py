"""Pictures of a result: ``preview.png`` (a contact sheet with a legend) and ``hierarchy.png`` (the levels).

Colours are the masks' (``bavos.io.render.palette``): a cluster of any level is drawn in the colour of the object it
belongs to at the cut level (below the cut: the cluster it goes into; above: its largest part). In hierarchy.png
the background (id 0, black in the masks) is grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bavos.io.render import palette

BACKGROUND = (150, 150, 150)  # id 0 (black in the masks) is grey in hierarchy.png, so its clusters show
UNUSED = (225, 225, 225)  # a cluster no token chose at the cut level
THUMB_WIDTH = 320
THUMB_HEIGHT = 480  # portrait video (9:16) at 270 wide; taller frames are narrower
SHEET_COLUMNS = 4
SHEET_FRAMES = 8
LEGEND_ROWS = 12  # legend entries per column
LABEL_WIDTH = 56  # a thumbnail's frame number box (52 pixels) and a gap
LEGEND_MAX = 48


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def preview_frames(frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """Up to ``count`` frame indices spread evenly from the first to the last."""
    if frames <= count:
        return list(range(frames))
    return sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)})


def thumbnail(image: np.ndarray, width: int = THUMB_WIDTH, height: int = THUMB_HEIGHT) -> Image.Image:
    """A frame (H, W, 3) uint8 scaled, its aspect kept, to fit ``width`` x ``height`` pixels: as wide as that for
    ordinary frames, never taller, so that a frame of extreme aspect (16x4096) still gives a picture every image
    tool opens."""
    picture = Image.fromarray(image)
    scale = min(width / picture.width, height / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.BILINEAR)


def share_text(share: float) -> str:
    """A share of the pixels with the digits that tell small objects apart: "43.2 %", "0.27 %", "0.0041 %"."""
    percent = 100 * share
    if percent == 0:
        return "0 %"
    return f"{percent:.1f} %" if percent >= 1 else f"{percent:.2g} %"


@dataclass(frozen=True)
class ObjectRow:
    """One legend entry: an id, its share of all pixels, and its first and last frame (numbers of the video)."""

    id: int
    share: float
    first: int
    last: int


def save_preview(path: Path, title: str, thumbs: list[tuple[int, Image.Image]], objects: list[ObjectRow]) -> None:
    """Write the contact sheet: thumbnails (frame number, picture) in rows of 4, then the legend."""
    font, small = _font(16), _font(13)
    title = "".join(c if c.isprintable() else "?" for c in title)  # a file name may hold a newline or stray bytes
    columns = min(SHEET_COLUMNS, max(1, len(thumbs)))
    tw = max(thumbs[0][1].width if thumbs else THUMB_WIDTH, LABEL_WIDTH)  # a cell holds its frame number at least
    th = max((t.height for _, t in thumbs), default=1)
    grid_rows = -(-len(thumbs) // columns)
    shown = objects[:LEGEND_MAX]
    legend_columns = max(1, -(-len(shown) // LEGEND_ROWS))
    legend_height = 24 + 20 * min(LEGEND_ROWS, max(1, len(shown))) + (20 if len(objects) > LEGEND_MAX else 0)
    title_width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)) + 16
    width = max(columns * (tw + 8) + 8, legend_columns * 260 + 16, title_width)
    sheet = Image.new("RGB", (width, 36 + grid_rows * (th + 8) + legend_height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill="black", font=font)
    for k, (number, thumb) in enumerate(thumbs):
        x, y = 8 + (k % columns) * (tw + 8), 36 + (k // columns) * (th + 8)
        sheet.paste(thumb, (x, y))
        draw.rectangle((x, y, x + 52, y + 18), fill="black")
        draw.text((x + 4, y + 2), f"{number:05d}", fill="white", font=small)
    colours = palette(max((o.id for o in objects), default=0) + 1)
    top = 36 + grid_rows * (th + 8) + 4
    draw.text((8, top), "id  area  frames" if shown else "no objects", fill="black", font=small)
    for k, row in enumerate(shown):
        x, y = 8 + (k // LEGEND_ROWS) * 260, top + 20 + (k % LEGEND_ROWS) * 20
        draw.rectangle((x, y + 2, x + 14, y + 16), fill=tuple(int(c) for c in colours[row.id]), outline="black")
        draw.text(
            (x + 20, y), f"{row.id:>3}  {share_text(row.share):>8}  {row.first}-{row.last}", fill="black", font=small
        )
    if len(objects) > LEGEND_MAX:
        rest = objects[LEGEND_MAX:]
        tiny = sum(o.share < 0.001 for o in rest)
        under = f", {tiny} of them under 0.1 %" if tiny else ""
        together = share_text(sum(o.share for o in rest))
        draw.text(
            (8, top + 20 + LEGEND_ROWS * 20),
            f"... and {len(rest)} more, {together} together{under} (summary.json)",
            fill="black",
            font=small,
        )
    _save(sheet, path)


@dataclass(frozen=True)
class Levels:
    """What hierarchy.png draws: per level the token count of each cluster, the parents, the cut, the output ids."""

    areas: list[np.ndarray]  # per level, (k_l,) tokens per cluster
    parents: list[np.ndarray]  # per level l >= 1, (k_{l-1} or k_capped_from,) the cluster each goes into
    converged: int
    cut: int
    capped_from: int | None
    output_ids: np.ndarray  # cut-level cluster -> PNG id (-1: no token chose it)


def _below(levels: Levels, level: int) -> int:
    """The level whose clusters merge into ``level``'s."""
    return levels.capped_from if levels.capped_from is not None and level == len(levels.areas) - 1 else level - 1


def object_of_clusters(levels: Levels) -> list[np.ndarray]:
    """Per level, the output id whose colour each cluster takes (-1: none).

    The cut level has the output ids; with a cap, the level it was cut from takes them through the cap's parents;
    the levels below follow their parents up; real levels above the cut take the id of their largest part.
    """
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(levels.areas)
    capped = levels.capped_from is not None
    base = levels.capped_from if capped else levels.cut  # the real level the cut is made from
    out[levels.cut] = levels.output_ids
    if capped:
        out[base] = levels.output_ids[levels.parents[-1]]
    for level in range(base - 1, -1, -1):
        out[level] = out[level + 1][levels.parents[level + 1]]
    for level in range(base + 1, levels.converged + 1):
        ids = np.full(len(levels.areas[level]), -1)
        best = np.full(len(levels.areas[level]), -1)
        for child, parent in enumerate(levels.parents[level]):
            if levels.areas[level - 1][child] > best[parent]:
                best[parent], ids[parent] = levels.areas[level - 1][child], out[level - 1][child]
        out[level] = ids
    return out


MIN_BOX = 3.0  # pixels: narrower clusters are bundled into one box per level
LABEL_BOX = 56.0  # pixels: wider boxes carry their share of the tokens


def _ink(colour: tuple[int, int, int]) -> str:
    return "black" if sum(colour) > 380 else "white"


def save_hierarchy_picture(path: Path, levels: Levels, width: int = 1200) -> list[tuple[int, int]]:
    """One row per level (0 at the top), clusters as boxes as wide as their share of the tokens, lines to where each
    merges. Readable at any count: clusters narrower than MIN_BOX pixels are bundled into one striped box per level
    (with their count and share beside the level's name), wide boxes carry their share, and lines are drawn between
    drawn boxes only.

    Returns:
        Per level, (clusters drawn as their own box, clusters bundled).
    """
    font, note_font = _font(13), _font(11)
    names = [f"level {lv}: {len(a):,}" for lv, a in enumerate(levels.areas)]
    names[0] += " (windows)"
    names[levels.converged] += " (converged)"
    if levels.capped_from is not None:
        names[-1] = f"capped: {len(levels.areas[-1]):,}"
    names[levels.cut] += "  <- cut"
    objects = object_of_clusters(levels)
    colours = palette(max(int(levels.output_ids.max()) + 1, 1))
    left, row_h, gap = 190, 36, 40
    span = width - left - 10
    sheet = Image.new("RGB", (width, 10 + len(levels.areas) * (row_h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    boxes: list[dict[int, tuple[float, float, float]]] = []  # per level: drawn cluster -> (x0, x1, y)
    drawn: list[tuple[int, int]] = []
    for level, areas in enumerate(levels.areas):
        y = 10 + level * (row_h + gap)
        total = max(1, int(areas.sum()))
        widths = span * areas.astype(np.float64) / total
        tiny = widths < MIN_BOX
        if tiny.sum() < 2:  # one narrow box alone is drawn as it is
            tiny[:] = False
        order = sorted(
            np.flatnonzero(~tiny).tolist(),
            key=lambda c, lv=level: (int(objects[lv][c]) < 0, int(objects[lv][c]), -int(areas[c]), c),
        )
        x, placed = float(left), {}
        for c in order:
            w = float(widths[c])
            obj = int(objects[level][c])
            colour = BACKGROUND if obj == 0 else tuple(int(v) for v in colours[obj]) if obj > 0 else UNUSED
            draw.rectangle((x, y, max(x + 1, x + w - 1), y + row_h), fill=colour, outline="white" if w >= 4 else None)
            if w >= LABEL_BOX:
                draw.text((x + 4, y + row_h // 2 - 6), share_text(areas[c] / total), fill=_ink(colour), font=note_font)
            placed[c] = (x, x + w, y)
            x += w
        if tiny.any():  # the bundle: striped, as wide as its share
            w = float(widths[tiny].sum())
            draw.rectangle((x, y, max(x + 1, x + w - 1), y + row_h), fill=UNUSED)
            for sx in np.arange(x + 2, x + w - 1, 5):
                draw.line(((sx, y + 4), (sx, y + row_h - 4)), fill=(165, 165, 165), width=1)
            bundled = f"{int(tiny.sum()):,} small: {share_text(float(areas[tiny].sum()) / total)}"
            draw.text((8, y + row_h // 2 + 4), bundled, fill=(90, 90, 90), font=note_font)
        boxes.append(placed)
        drawn.append((len(placed), int(tiny.sum())))
        if level == levels.cut:
            draw.rectangle((left - 3, y - 3, left + span + 3, y + row_h + 3), outline="black", width=3)
        draw.text((8, y + row_h // 2 - (12 if tiny.any() else 7)), names[level], fill="black", font=font)
    for level in range(1, len(levels.areas)):
        below = _below(levels, level)
        for child, parent in enumerate(levels.parents[level]):
            if child in boxes[below] and int(parent) in boxes[level]:
                x0, x1, y = boxes[below][child]
                p0, p1, py = boxes[level][int(parent)]
                draw.line(((x0 + x1) / 2, y + row_h, (p0 + p1) / 2, py), fill=(90, 90, 90), width=1)
    _save(sheet, path)
    return drawn


def _save(image: Image.Image, path: Path) -> None:
    """Write a PNG (an OSError goes to the caller, which names the result being written)."""
    image.save(path, format="PNG")
