"""``nucstudy segment SLIDE``: the nuclei of a whole slide, in bounded memory, resumable.

:func:`segment_slide` runs in four steps:

1. **Level and tissue.** The slide is opened (:class:`nucstudy.segment.slides.Slide`); the level
   nearest the model's resolution is chosen; a thumbnail at about 4 um/px gives the tissue
   mask (:func:`nucstudy.segment.tissue.tissue_mask`, or the user's own mask).
2. **Regions.** That level is cut into overlapping *regions* exactly as an image is cut into
   tiles (:func:`nucstudy.segment.tiling.tile_grid`: every pixel belongs to the core of one region;
   regions overlap by the tiles' overlap). A region whose core touches tissue is processed;
   the rest are skipped.
3. **One region at a time.** Its pixels are read, segmented by
   :func:`nucstudy.segment.image.segment_image` (which tiles it and merges its tiles), and
   merged with the regions already finished by the rule that merges tiles
   (:class:`nucstudy.segment.tiling.SeamlessMerge`): a region keeps the nuclei whose centroid lies
   in its core, and drops one that overlaps nuclei of an earlier, neighbouring region on
   more than half its pixels; the pixels those nuclei hold are taken
   (:meth:`~nucstudy.segment.tiling.SeamlessMerge.reserve`). The nuclei it keeps are written at
   once to a file of its own (:mod:`nucstudy.segment.regions`, in ``OUT/.regions/<stem>/``), and
   the earlier neighbours are read back from theirs; nothing else outlives the region. An
   interrupted run, started again with the same settings, skips the regions on disk and
   ends with the very nuclei an uninterrupted run finds.
4. **Files** (:mod:`nucstudy.segment.slide_export`), written together, atomically, from the region
   files; then the region files are removed. Existing outputs are refused unless
   ``overwrite``.

Memory is that of one region (its pixels, :func:`segment_image`'s maps at the region's
size, and the network on a batch of tiles), whatever the slide's size.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nucstudy.data.stain import StainReference, reinhard_normalise, stain_reference
from nucstudy.engine.model_file import TrainedModel
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.postprocess import Nuclei
from nucstudy.segment.image import check_resolution, segment_image
from nucstudy.segment.images import SegmentOptions
from nucstudy.segment.regions import RegionNuclei, RegionStore
from nucstudy.segment.slide_export import LARGE_NUCLEI, SlideFiles, SlideFrame, output_names
from nucstudy.segment.slides import Slide, SlideError, slide_stem
from nucstudy.segment.tiling import SeamlessMerge, Tile, tile_grid
from nucstudy.segment.tissue import box_has_tissue, read_mask, thumbnail_mpp, tissue_mask

#: Folder of the region stores, inside the output folder.
REGIONS_DIR = ".regions"
#: Options that do not change the nuclei found: an unfinished run may resume with others.
_NO_EFFECT = ("progress", "batch_size", "postprocess_workers")


@dataclass
class SlideOptions:
    """How :func:`segment_slide` covers a slide.

    Attributes:
        region_size: a region's side in px at the model's resolution; None: two tiles
            (``2 x tile_size - overlap``).
        tissue_mask: an image of the slide's tissue (non-zero), any size; None: Otsu's
            mask (:func:`nucstudy.segment.tissue.tissue_mask`).
        gzip: gzip the GeoJSON whatever the number of nuclei.
        progress: show a tqdm bar over the tissue regions.
        keep_regions: keep the region files (``OUT/.regions/<stem>/``) once the outputs are
            written (they are removed by default).
    """

    region_size: int | None = None
    tissue_mask: str | os.PathLike | None = None
    gzip: bool = False
    progress: bool = False
    keep_regions: bool = False


@dataclass(frozen=True)
class Region:
    """One region of the segmented level: its index in the grid (row by row) and its
    window and core (a :class:`~nucstudy.segment.tiling.Tile`, in px of that level)."""

    index: int
    tile: Tile


class _Stages:
    """Seconds spent per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def plan_regions(height: int, width: int, size: int, overlap: int) -> list[Region]:
    """The regions covering a level of ``height`` x ``width`` px (row by row), each
    ``size`` px (or the level's side) overlapping by ``overlap`` px."""
    return [Region(k, tile) for k, tile in enumerate(tile_grid(height, width, size, overlap))]


def model_fingerprint(model: TrainedModel) -> str:
    """SHA-256 of what makes a model's outputs: weights, classes, resolution, route."""
    digest = hashlib.sha256()
    digest.update(f"{type(model.network).__name__}|{model.scheme}|{model.mpp}|".encode())
    digest.update(f"{model.postprocess}|{model.stain}".encode())
    for name, value in sorted(model.network.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _earlier_neighbours(regions: list[Region], region: Region) -> list[int]:
    """Indices of earlier regions whose windows overlap ``region``'s."""
    t = region.tile
    found = []
    for other in regions[: region.index]:
        o = other.tile
        if o.top < t.top + t.height and t.top < o.top + o.height:
            if o.left < t.left + t.width and t.left < o.left + o.width:
                found.append(other.index)
    return found


def merge_region(
    nuclei: Nuclei, region: Region, regions: list[Region], store: RegionStore
) -> RegionNuclei:
    """The nuclei a region keeps, by the rule that merges tiles
    (:class:`~nucstudy.segment.tiling.SeamlessMerge`): those whose centroid lies in its core, less
    any that overlaps the finished nuclei of earlier neighbouring regions (read from
    ``store``) on more than half its pixels; the pixels those hold are not taken again.

    Args:
        nuclei: the region's nuclei at its window's size (from ``segment_image``).
        region: the region.
        regions: all regions of the level, in order.
        store: the finished regions.

    Returns:
        The kept nuclei, in px of the level.
    """
    t = region.tile
    merge = SeamlessMerge(t.height, t.width)
    taken = np.zeros((t.height, t.width), bool)
    for other in _earlier_neighbours(regions, region):
        if store.path(other).is_file():
            store.load(other).paint(taken, t.top, t.left)
    merge.reserve(taken)
    top, bottom, left, right = t.core
    core = (top - t.top, bottom - t.top, left - t.left, right - t.left)
    merge.add(Tile(0, 0, t.height, t.width, core), nuclei)
    return RegionNuclei.from_nuclei(merge.nuclei(), t.top, t.left)


def _slide_stain(
    slide: Slide, level: int, regions: list[Region], reference: StainReference
) -> StainReference:
    """The slide's own colour statistics, from the centres (256 px) of up to 16 tissue
    regions spread over the list (so every region is normalised alike, without seams)."""
    spread = np.linspace(0, len(regions) - 1, min(16, len(regions))).round().astype(int)
    chosen = [regions[k] for k in spread]
    patches = []
    for region in dict.fromkeys(chosen):
        t = region.tile
        side_h, side_w = min(256, t.height), min(256, t.width)
        top, left = t.top + (t.height - side_h) // 2, t.left + (t.width - side_w) // 2
        patches.append(slide.read(level, top, left, side_h, side_w).reshape(-1, 1, 3))
    return stain_reference(np.concatenate(patches)[None]) if patches else reference


def segment_slide(
    model: TrainedModel,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: SlideOptions | None = None,
    segment_options: SegmentOptions | None = None,
    mpp: float | None = None,
    overwrite: bool = False,
    model_path: str = "",
) -> dict:
    """Segment a whole slide region by region and write its files (see the module's notes).

    Args:
        model: from :func:`nucstudy.engine.model_file.load_model`.
        path: the slide (any format :mod:`nucstudy.segment.slides` reads).
        out_dir: the output folder (its ``.regions/`` subfolder holds unfinished runs).
        options: regions, tissue mask, gzip, progress.
        segment_options: the tiling and network options of each region (``progress`` is
            ignored; ``stain_normalise`` uses statistics of the whole slide's tissue).
        mpp: level 0's resolution in um/px, overriding the file's metadata.
        overwrite: replace existing outputs.
        model_path: the model's file, for the record.

    Returns:
        The run record (``<stem>_slide.json``).

    Raises:
        SlideError: the slide cannot be read, has no resolution, or a region cannot be
            decoded (finished regions are kept for the next run).
        FileExistsError: its outputs exist and ``overwrite`` is not set.
        ValueError: bad options, or a resolution the model cannot use.
    """
    options = options or SlideOptions()
    seg = segment_options or SegmentOptions()
    path, out_dir = Path(path), Path(out_dir)
    stem = slide_stem(path)
    names = output_names(stem)
    existing = [name for name in names.values() if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{path}: {existing[0]} exists in {out_dir} (pass --overwrite to replace it)"
        )
    if seg.tile_size < SIZE_MULTIPLE or seg.tile_size % SIZE_MULTIPLE:
        raise ValueError(
            f"tile_size must be a multiple of {SIZE_MULTIPLE} px, got {seg.tile_size}"
        )
    if not 0 <= seg.overlap < seg.tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={seg.tile_size}), got {seg.overlap}")
    if seg.stain_normalise and model.stain is None:
        raise ValueError(
            "this model file stores no training colour statistics (--stain-normalise)"
        )
    region_size = options.region_size or 2 * seg.tile_size - seg.overlap
    if region_size <= 2 * seg.overlap:
        raise ValueError(f"region_size must exceed twice the overlap ({seg.overlap}) px")
    stages = _Stages()
    started = time.perf_counter()
    with Slide(path, mpp) as slide:
        level = slide.nearest_level(model.mpp)
        level_mpp = slide.level_mpp(level)
        try:
            check_resolution(level_mpp, model.mpp)
        except ValueError as error:
            raise SlideError(f"{path}: {error}") from None
        info = slide.levels[level]
        frame = SlideFrame(info.downsample, slide.mpp)
        width0, height0 = slide.size
        thumb_mpp = thumbnail_mpp(width0 * slide.mpp, height0 * slide.mpp, slide.mpp)
        with stages("read"):
            thumbnail = slide.thumbnail(thumb_mpp)
        with stages("tissue"):
            if options.tissue_mask is not None:
                mask = read_mask(options.tissue_mask, *thumbnail.shape[:2])
            else:
                mask = tissue_mask(thumbnail, thumb_mpp)
        # thumbnail px per px of the segmented level, per axis
        scale_x, scale_y = mask.shape[1] / info.width, mask.shape[0] / info.height
        tissue_mm2 = (
            float(mask.sum())
            * (width0 * slide.mpp / mask.shape[1])
            * (height0 * slide.mpp / mask.shape[0])
            / 1e6
        )
        factor = model.mpp / level_mpp  # level px per model px
        size_px = max(1, round(region_size * factor))
        overlap_px = int(np.ceil(seg.overlap * factor))
        regions = plan_regions(info.height, info.width, size_px, min(overlap_px, size_px - 1))

        def box(region: Region) -> tuple[float, float, float, float]:
            top, bottom, left, right = region.tile.core
            return top * scale_y, bottom * scale_y, left * scale_x, right * scale_x

        tissue = [r for r in regions if box_has_tissue(mask, box(r))]
        stain = None
        if seg.stain_normalise and tissue:
            stain = _slide_stain(slide, level, tissue, model.stain)
        manifest = {
            "model": model_fingerprint(model),
            "slide": [path.name, path.stat().st_size, path.stat().st_mtime_ns, width0, height0],
            "mpp": slide.mpp,
            "level": level,
            "regions": [size_px, overlap_px],
            "segment": {k: v for k, v in asdict(seg).items() if k not in _NO_EFFECT},
            "mask": _file_digest(Path(options.tissue_mask)) if options.tissue_mask else "otsu",
            "mask_pixels": int(mask.sum()),
        }
        store = RegionStore(out_dir / REGIONS_DIR / stem)
        done, discarded = store.open(manifest)
        todo = [r for r in tissue if r.index not in done]
        tile_options = {**asdict(seg), "progress": False, "stain_normalise": False}
        bar = tqdm(
            total=len(tissue),
            initial=len(tissue) - len(todo),
            desc=stem,
            unit="region",
            disable=not options.progress or None,
        )
        try:
            for region in todo:
                t = region.tile
                with stages("read"):
                    pixels = slide.read(level, t.top, t.left, t.height, t.width)
                with stages("segment"):
                    if stain is not None:
                        pixels = reinhard_normalise(pixels, model.stain, stain)
                    nuclei = segment_image(model, pixels, level_mpp, **tile_options)
                with stages("merge"):
                    store.save(region.index, merge_region(nuclei, region, regions, store))
                bar.update()
        finally:
            bar.close()

    finished = [r.index for r in tissue]

    def from_store() -> Iterator[RegionNuclei]:
        for index in finished:
            yield store.load(index)

    record = {
        "slide": str(path),
        "reader": _reader_version(),
        "width": width0,
        "height": height0,
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "levels": [[lv.width, lv.height] for lv in slide.levels],
        "level": level,
        "level_mpp": level_mpp,
        "model": model_path,
        "model_epoch": model.epoch,
        "model_mpp": model.mpp,
        "scheme": model.scheme.name,
        "tile_size": seg.tile_size,
        "overlap": seg.overlap,
        "tta": seg.tta,
        "stain_normalise": seg.stain_normalise,
        "region_size_level_px": size_px,
        "region_overlap_level_px": overlap_px,
        "regions": len(regions),
        "tissue_regions": len(tissue),
        "regions_resumed": len(tissue) - len(todo),
        "earlier_run_discarded": discarded,
        "tissue_mask": str(options.tissue_mask) if options.tissue_mask else "otsu",
        "thumbnail_mpp": thumb_mpp,
    }

    export_start = time.perf_counter()

    def finish(record: dict) -> None:  # called as the record is written, last
        stages.seconds["export"] = time.perf_counter() - export_start
        record["seconds"] = {stage: round(value, 3) for stage, value in stages.seconds.items()}
        record["seconds"]["total"] = round(time.perf_counter() - started, 3)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record["peak_rss_mb"] = round(peak, 1)

    files = SlideFiles(out_dir, stem, from_store, frame, model.scheme, LARGE_NUCLEI)
    boxes = [box(r) for r in tissue]
    record = files.write(record, tissue_mm2, thumbnail, mask, boxes, options.gzip, finish)
    if not options.keep_regions:
        store.remove()
    return record


def _reader_version() -> str:
    import tiffslide

    return f"tiffslide {tiffslide.__version__}"
