"""``nucstudy segment``: a trained model on your own images, with files to open elsewhere.

For each image (PNG, JPEG or TIFF) :func:`segment_file` writes, into the output folder, with
``<stem>`` the image's name without its suffix:

============================  ==================================================================
``<stem>_labels.npy``         H x W x 2 int32, the CoNIC layout: instance ids, class ids
``<stem>_instances.tif``      the instance map as a uint32 label image (Fiji, QuPath, napari)
``<stem>_nuclei.csv``         one row per nucleus (:func:`nucstudy.segment.export.nuclei_table`)
``<stem>_nuclei.geojson``     polygons with class names and colours, for QuPath (File > Import
                              objects from file, or drag the file onto the image)
``<stem>_overlay.png``        the image with outlines in class colours
``<stem>_segment.json``       what was run: model, resolutions, tiling, nuclei, seconds per stage
                              (read; segment; export: the table, GeoJSON and overlay)
============================  ==================================================================

All of one image's files are written together, atomically, and an image whose files exist
is refused unless ``overwrite`` is set. :func:`segment_paths` runs a list of images and
reports the ones that failed instead of stopping at the first. Whole-slide images (too large
to read at once) go through :mod:`nucstudy.segment.slide_segment` instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from nucstudy.common.io import atomic_write_many
from nucstudy.engine.model_file import TrainedModel
from nucstudy.segment.export import (
    geojson_bytes,
    nuclei_geojson,
    nuclei_table,
    overlay,
    png_bytes,
    write_label_tiff,
)
from nucstudy.segment.image import OVERLAP, TILE_SIZE, segment_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
OUTPUT_SUFFIXES = (
    "_labels.npy",
    "_instances.tif",
    "_nuclei.csv",
    "_nuclei.geojson",
    "_overlay.png",
    "_segment.json",
)
#: The largest image read, in pixels (PIL's own guard against decompression bombs is 89 M).
MAX_PIXELS = 40_000 * 40_000


class ImageError(ValueError):
    """An input image that cannot be read or is not RGB, greyscale or RGBA 8-bit."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB.

    PNG and JPEG are read with Pillow, TIFF with tifffile. Greyscale is repeated into three
    channels and an alpha channel is dropped; any other layout or bit depth is refused.

    Raises:
        ImageError: a missing, unreadable or unsupported file (one line, naming it).
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: not a PNG, JPEG or TIFF file (by its suffix)")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = tifffile.imread(path)
        else:
            array = _read_with_pillow(path)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as error:
        raise ImageError(f"{path}: cannot be read as an image ({error})") from None
    return _as_rgb(array, path)


def _read_with_pillow(path: Path) -> np.ndarray:
    """PNG or JPEG as an RGB array, up to :data:`MAX_PIXELS` (Pillow's limit raised here)."""
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with Image.open(path) as image:
            if image.mode in ("L", "LA", "RGBA"):
                image = image.convert("RGB")
            if image.mode != "RGB":
                raise ImageError(f"{path}: image mode {image.mode} is not RGB, RGBA or greyscale")
            return np.asarray(image)
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: more than {MAX_PIXELS:,} pixels") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """A decoded array as H x W x 3 uint8, or ImageError."""
    if array.dtype != np.uint8:
        raise ImageError(f"{path}: {array.dtype} pixels; only 8-bit images are supported")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        array = array[..., :1].repeat(3, -1) if array.shape[-1] == 2 else array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ImageError(
            f"{path}: shape {array.shape} is not H x W RGB, RGBA or greyscale "
            "(planar or multi-page files are not supported)"
        )
    return np.ascontiguousarray(array)


def output_paths(out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """The files :func:`segment_file` writes for an image named ``stem``."""
    return [Path(out_dir) / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


@dataclass
class SegmentOptions:
    """How :func:`segment_file` runs the model: keyword arguments of
    :func:`nucstudy.segment.image.segment_image`, with its defaults."""

    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP
    batch_size: int = 2
    device: str = "auto"
    tta: bool = False
    postprocess_workers: int = 0
    progress: bool = False
    stain_normalise: bool = False


def segment_file(
    model: TrainedModel,
    path: str | os.PathLike,
    mpp: float,
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    overwrite: bool = False,
    model_path: str = "",
) -> dict:
    """Segment one image file and write its outputs; returns the run record
    (``<stem>_segment.json``).

    Raises:
        ImageError: the image cannot be read.
        FileExistsError: its outputs exist and ``overwrite`` is not set.
        ValueError: a resolution the model cannot use or bad options.
    """
    options = options or SegmentOptions()
    path = Path(path)
    targets = output_paths(out_dir, path.stem)
    existing = [target.name for target in targets if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{path}: {existing[0]} exists in {out_dir} (pass --overwrite to replace it)"
        )
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    image = read_image(path)
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    nuclei = segment_image(model, image, mpp, **asdict(options))
    seconds["segment"] = time.perf_counter() - start
    start = time.perf_counter()
    table = nuclei_table(nuclei, model.scheme, mpp)
    table_csv = table.to_csv(index=False).encode("utf-8")
    geojson = geojson_bytes(nuclei_geojson(nuclei, model.scheme))
    overlay_png = png_bytes(overlay(image, nuclei, model.scheme))
    seconds["export"] = time.perf_counter() - start
    record = {
        "image": str(path),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "mpp": float(mpp),
        "model": model_path,
        "model_epoch": model.epoch,
        "model_mpp": model.mpp,
        "scheme": model.scheme.name,
        "tile_size": options.tile_size,
        "overlap": options.overlap,
        "tta": options.tta,
        "stain_normalise": options.stain_normalise,
        "nuclei": len(nuclei),
        "nuclei_per_class": table["class_name"].value_counts().sort_index().to_dict(),
        "seconds": {stage: round(value, 3) for stage, value in seconds.items()},
    }
    labels = np.stack([nuclei.inst_map, nuclei.class_map], axis=-1)
    # the label maps are written straight into their files, the rest as encoded above
    writers = [
        lambda f: np.save(f, labels, allow_pickle=False),
        lambda f: write_label_tiff(f, nuclei.inst_map),
        lambda f: f.write(table_csv),
        lambda f: f.write(geojson),
        lambda f: f.write(overlay_png),
        lambda f: f.write(json.dumps(record, indent=2).encode("utf-8")),
    ]
    atomic_write_many(
        out_dir, {target.name: write for target, write in zip(targets, writers, strict=True)}
    )
    return record


@dataclass
class SegmentReport:
    """What :func:`segment_paths` did: the records written and the images that failed."""

    written: list[dict] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def image_files(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Files named on the command line, folders expanded to their image files (not
    recursively, sorted). Returns (images, ignored): files in a folder without an image
    suffix are ignored; a file named directly is always tried."""
    images: list[Path] = []
    ignored: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for child in sorted(item.iterdir()):
                if not child.is_file() or child.name.startswith("."):
                    continue
                if child.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(child)
                else:
                    ignored.append(child)
        else:
            images.append(item)
    return images, ignored


def segment_paths(
    model: TrainedModel,
    inputs: Sequence[str | os.PathLike],
    mpp: float,
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    overwrite: bool = False,
    model_path: str = "",
) -> SegmentReport:
    """:func:`segment_file` over images and folders; a failure is recorded, not raised,
    so that the good images are still written. Two images with one stem are an error for
    the second (their outputs would share names)."""
    images, ignored = image_files(inputs)
    report = SegmentReport(ignored=ignored)
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            report.failed.append((path, f"{path}: same name as {seen[path.stem]}"))
            continue
        seen[path.stem] = path
        try:
            record = segment_file(model, path, mpp, out_dir, options, overwrite, model_path)
        except (ValueError, FileExistsError) as error:
            report.failed.append((path, str(error)))
            continue
        report.written.append(record)
    return report
