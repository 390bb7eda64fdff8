"""Whole-slide images: pyramidal files read level by level, region by region.

A whole slide is too large to hold in memory (a 15 x 15 mm section at 0.25 um/px is 3.6
gigapixels, 10.8 GB of RGB), so it is read through a slide reader that decodes only the
tiles a region needs, at one level of the file's resolution pyramid.

**The reader is tiffslide** (``pip install tiffslide``; pure Python on top of tifffile,
zarr and imagecodecs), chosen over OpenSlide (``openslide-python`` with the
``openslide-bin`` wheel) after trying both on this project's CPU (2 shared cores, beside two
training runs, ``OMP_NUM_THREADS=1``):

- *Speed.* 1024 x 1024 px regions read at level 0 of an 8192 x 8192 px JPEG-compressed
  Aperio-style file (256 px tiles, three levels), best of three passes over the whole
  level: tiffslide 110 megapixels/s aligned to the tiles, 79 unaligned; OpenSlide 43 and 41
  (OpenSlide converts every pixel to premultiplied ARGB and then to a PIL image). A
  thumbnail from the smallest level took a few milliseconds with either.
- *Formats.* Both read Aperio .svs and generic tiled TIFF with its levels in consecutive
  pages. tiffslide (through tifffile) also reads the levels of pyramids stored in SubIFDs
  and of OME-TIFF, which is how ``tifffile``, QuPath and bfconvert write pyramids;
  OpenSlide 4.0 saw only level 0 of those, so a thumbnail would have meant decoding the
  whole slide. tiffslide 3.0 lists Leica .scn as fully supported, and Hamamatsu .ndpi and
  Ventana .bif as partly (they open; see its README). OpenSlide reads formats tiffslide
  does not (MIRAX .mrxs, Hamamatsu .vms, Sakura .svslide, DICOM): convert those to OME-TIFF
  first (QuPath: *File > Export images > OME TIFF*; or ``bfconvert``). The tests here
  write and read .svs, SubIFD-pyramid TIFF and OME-TIFF.
- *Installation.* A pure-Python wheel with wheels for its codecs on every platform, and it
  reuses tifffile, which the project already needs.

The resolution comes from the file's metadata (tiffslide's ``mpp-x``/``mpp-y``: Aperio's
``MPP``, TIFF resolution tags in cm or inch; OME-TIFF's ``PhysicalSizeX``/``Y`` read here),
or from the caller, which overrides it. A slide without one is refused.

Coordinates follow OpenSlide's convention: a level's pixel (row r, column c) covers level-0
pixels [c x d, (c + 1) x d) horizontally, with d the level's downsample; the downsample of
each axis is level 0's size over the level's.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nucstudy.segment.images import IMAGE_SUFFIXES

#: Suffixes always read as whole slides (a .tif or .tiff only when pyramidal or very large).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif")
#: A tiled TIFF with one level but more pixels than this is read as a slide too.
LARGE_TIFF_PIXELS = 10_000 * 10_000
#: Side of the pieces a level is read in when it is reduced to a thumbnail, in px.
CHUNK = 4096


class SlideError(ValueError):
    """A file that cannot be read as a whole-slide image (one line, naming the file)."""


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's logged warnings (about damaged files, which raise here anyway)."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class Level:
    """One level of a slide's pyramid.

    Attributes:
        width, height: its size in px.
        downsample: (x, y) level-0 px per px of this level (level 0's size over this one's).
    """

    width: int
    height: int
    downsample: tuple[float, float]


class Slide:
    """An open whole-slide file (see the module's notes on the reader).

    Args:
        path: the file.
        mpp: level 0's resolution in um/px; None: from the file's metadata.

    Attributes:
        path: the file.
        levels: the pyramid, level 0 first (finest).
        mpp: level 0's resolution in um/px (the mean of x and y).
        mpp_source: ``"metadata"`` or ``"given"``.

    Raises:
        SlideError: not a readable slide, not 8-bit RGB, or no resolution known.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        import tiffslide

        self.path = Path(path)
        if not self.path.is_file():
            raise SlideError(f"{self.path}: no such file")
        try:
            with _quiet_tifffile():
                self._slide = tiffslide.TiffSlide(self.path)
                dims = self._slide.level_dimensions
                tif = self._slide.ts_tifffile
                series = tif.series[self._slide.properties.get("tiffslide.series-index") or 0]
                dtype, shape = series.dtype, series.shape
        except Exception as error:  # tiffslide raises many kinds on a file it cannot parse
            raise SlideError(f"{self.path}: not a whole-slide image ({_short(error)})") from None
        if dtype != np.uint8 or len(shape) != 3 or shape[-1] not in (3, 4):
            self.close()
            raise SlideError(
                f"{self.path}: {dtype} pixels of shape {tuple(shape)}; only 8-bit RGB slides "
                "(brightfield H&E) are supported"
            )
        width0, height0 = dims[0]
        self.levels = [Level(w, h, (width0 / w, height0 / h)) for w, h in dims]
        if mpp is None:
            self.mpp, self.mpp_source = self._metadata_mpp(tif), "metadata"
        else:
            self.mpp, self.mpp_source = float(mpp), "given"
        if not (self.mpp is not None and math.isfinite(self.mpp) and self.mpp > 0):
            self.close()
            raise SlideError(
                f"{self.path}: no resolution (um/px) in the file's metadata; pass --mpp"
                if mpp is None
                else f"{self.path}: mpp must be > 0 um/px, got {mpp!r}"
            )

    def _metadata_mpp(self, tif: tifffile.TiffFile) -> float | None:
        """Level 0's um/px from tiffslide's properties or OME-XML; None if absent."""
        props = self._slide.properties
        values = [props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")]
        values = [float(v) for v in values if v is not None]
        if not values and tif.is_ome and tif.ome_metadata:
            values = _ome_mpp(tif.ome_metadata)
        values = [v for v in values if math.isfinite(v) and v > 0]
        return float(np.mean(values)) if values else None

    @property
    def size(self) -> tuple[int, int]:
        """Level 0's (width, height) in px."""
        return self.levels[0].width, self.levels[0].height

    def level_mpp(self, level: int) -> float:
        """A level's resolution in um/px (mean of its two axes)."""
        return self.mpp * float(np.mean(self.levels[level].downsample))

    def nearest_level(self, mpp: float) -> int:
        """The level whose resolution is nearest ``mpp`` (um/px) by ratio, either way; of
        two within 5 % of a tie, the finer (shrinking loses less than enlarging)."""
        ratios = [abs(math.log(self.level_mpp(k) / mpp)) for k in range(len(self.levels))]
        best = min(ratios)
        return min(k for k, r in enumerate(ratios) if r <= best + math.log(1.05))

    def read(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """A region of a level as height x width x 3 uint8 RGB.

        Args:
            level: the pyramid level.
            top, left, height, width: the region in px of that level, inside it.

        Raises:
            SlideError: a region outside the level, or tiles that cannot be decoded
                (a truncated or damaged file).
        """
        info = self.levels[level]
        if top < 0 or left < 0 or top + height > info.height or left + width > info.width:
            raise SlideError(f"{self.path}: region outside level {level}")
        ds_x, ds_y = info.downsample
        location = (round(left * ds_x), round(top * ds_y))
        try:
            with _quiet_tifffile():
                array = self._slide.read_region(location, level, (width, height), as_array=True)
        except Exception as error:  # decoders raise many kinds on damaged data
            raise SlideError(
                f"{self.path}: cannot read {width} x {height} px at ({left}, {top}) of level "
                f"{level}; the file may be truncated or damaged ({_short(error)})"
            ) from None
        return np.ascontiguousarray(np.asarray(array, dtype=np.uint8)[..., :3])

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at about ``mpp`` um/px as H x W x 3 uint8 RGB, with H and W level
        0's size times ``self.mpp / mpp``, rounded (at least 1). Read from the coarsest level
        at least as fine as ``mpp``, in pieces of :data:`CHUNK` px, so no more than a piece
        of that level and the thumbnail are held."""
        width0, height0 = self.size
        scale = self.mpp / mpp
        out_w, out_h = max(1, round(width0 * scale)), max(1, round(height0 * scale))
        fine = [k for k in range(len(self.levels)) if self.level_mpp(k) <= mpp * 1.001]
        level = max(fine) if fine else 0
        info = self.levels[level]
        thumb = np.zeros((out_h, out_w, 3), np.uint8)
        row_edges = _edges(info.height, out_h)
        col_edges = _edges(info.width, out_w)
        for rows in _pieces(row_edges):
            for cols in _pieces(col_edges):
                top, bottom = row_edges[rows[0]], row_edges[rows[1]]
                left, right = col_edges[cols[0]], col_edges[cols[1]]
                piece = self.read(level, top, left, bottom - top, right - left)
                size = (cols[1] - cols[0], rows[1] - rows[0])
                thumb[rows[0] : rows[1], cols[0] : cols[1]] = cv2.resize(
                    piece, size, interpolation=cv2.INTER_AREA
                )
        return thumb

    def close(self) -> None:
        """Release the file."""
        slide = getattr(self, "_slide", None)
        if slide is not None:
            slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _edges(length: int, out: int) -> np.ndarray:
    """Level px where each of ``out`` thumbnail px starts, and ``length`` last (int64)."""
    return np.round(np.arange(out + 1) * length / out).astype(np.int64)


def _pieces(edges: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive ranges of thumbnail px whose level px span at most :data:`CHUNK`."""
    pieces, start = [], 0
    n = len(edges) - 1
    while start < n:
        stop = start + 1
        while stop < n and edges[stop + 1] - edges[start] <= CHUNK:
            stop += 1
        pieces.append((start, stop))
        start = stop
    return pieces


def _ome_mpp(xml: str) -> list[float]:
    """Level 0's PhysicalSizeX and Y of an OME-XML description, in um (nm and mm converted)."""
    units = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}
    pixels = re.search(r"<Pixels\b[^>]*>", xml)
    if pixels is None:
        return []
    values = []
    for axis in ("X", "Y"):
        size = re.search(rf'PhysicalSize{axis}="([^"]+)"', pixels.group(0))
        unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', pixels.group(0))
        factor = units.get(unit.group(1) if unit else "µm")
        if size is not None and factor is not None:
            values.append(float(size.group(1)) * factor)
    return values


def _short(error: BaseException) -> str:
    """An exception as a short single line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def is_slide_file(path: str | os.PathLike) -> bool:
    """Whether ``nucstudy segment`` reads ``path`` as a whole slide: a slide suffix
    (:data:`SLIDE_SUFFIXES`), or a TIFF that is pyramidal (several levels) or tiled with more
    than :data:`LARGE_TIFF_PIXELS` px. A TIFF that cannot be parsed is left to the image
    reader (which reports it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.keyframe
            pixels = int(np.prod(series.shape[:2]))
            return len(series.levels) > 1 or (page.is_tiled and pixels > LARGE_TIFF_PIXELS)
    except Exception:  # not a TIFF tifffile can parse: the image reader says why
        return False


def split_inputs(
    inputs: Sequence[str | os.PathLike],
) -> tuple[list[Path], list[Path], list[Path]]:
    """Files named on the command line, folders expanded (not recursively, sorted), as
    (images, slides, ignored): slides by :func:`is_slide_file`; in a folder, other files
    with an image suffix are images and the rest ignored; a file named directly that is not
    a slide is always tried as an image."""
    images: list[Path] = []
    slides: list[Path] = []
    ignored: list[Path] = []
    for item in map(Path, inputs):
        children = sorted(item.iterdir()) if item.is_dir() else [item]
        for child in children:
            if item.is_dir() and (not child.is_file() or child.name.startswith(".")):
                continue
            if is_slide_file(child):
                slides.append(child)
            elif not item.is_dir() or child.suffix.lower() in IMAGE_SUFFIXES:
                images.append(child)
            else:
                ignored.append(child)
    return images, slides, ignored


def slide_stem(path: str | os.PathLike) -> str:
    """A slide's name without its suffix (and without ``.ome`` before ``.tif``)."""
    stem = Path(path).stem
    return stem[:-4] if stem.lower().endswith(".ome") else stem
