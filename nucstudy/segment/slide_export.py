"""A whole slide's nuclei as files: GeoJSON for QuPath, a table, counts per class, a thumbnail.

Everything is written from the finished regions on disk (:mod:`nucstudy.segment.regions`), one
region at a time, so a slide with millions of nuclei is exported in bounded memory.
Positions are in **level-0 px** of the slide (its full resolution, whichever level was
segmented), in QuPath's frame: (0, 0) is the top-left corner of the top-left pixel, and a
pixel (row r, column c) covers x in [c, c + 1), y in [r, r + 1). A nucleus found on a level
of downsample d has its outline and centroid multiplied by d.

=============================  ==================================================================
``<stem>_nuclei.geojson``      a FeatureCollection of Polygons, one per nucleus, properties
                               ``objectType`` ``"detection"``, ``classification`` (``name``,
                               ``color`` RGB) and ``measurements``; gzip-compressed
                               (``.geojson.gz``, which QuPath also reads) above
                               :data:`LARGE_NUCLEI` nuclei or when asked
``<stem>_nuclei.csv``          one row per nucleus (:data:`TABLE_COLUMNS`)
``<stem>_nuclei.parquet``      the same table, above :data:`LARGE_NUCLEI` nuclei and only when
                               pyarrow is installed (it is not a dependency; otherwise skipped,
                               and the run record says so)
``<stem>_summary.json``/.csv   nuclei per class and per mm2 of tissue (the tissue mask's area)
``<stem>_thumbnail.png``       the slide at thumbnail resolution, the tissue mask, the regions
                               processed and a dot per nucleus in its class colour
=============================  ==================================================================
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from nucstudy.common.io import atomic_write_many
from nucstudy.data.classes import ClassScheme
from nucstudy.segment.export import (
    detection_feature,
    nucleus_ring,
    png_bytes,
    write_feature_collection,
)
from nucstudy.segment.regions import RegionNuclei
from nucstudy.segment.tissue import draw_thumbnail

#: Above this many nuclei the GeoJSON is gzipped and a Parquet table is added.
LARGE_NUCLEI = 100_000
#: The per-nucleus table's columns: id (1..n), centroid in level-0 px and um, area in um2,
#: class id and name, class probability (share of the nucleus's pixels that voted for it).
TABLE_COLUMNS = (
    "id",
    "centroid_x_px",
    "centroid_y_px",
    "centroid_x_um",
    "centroid_y_um",
    "area_um2",
    "class_id",
    "class_name",
    "class_prob",
)

Regions = Callable[[], Iterator[RegionNuclei]]


@dataclass(frozen=True)
class SlideFrame:
    """Where the segmented level lies on the slide.

    Attributes:
        downsample: (x, y) level-0 px per px of the segmented level.
        mpp: level 0's resolution in um/px.
    """

    downsample: tuple[float, float]
    mpp: float

    def centroids(self, region: RegionNuclei) -> np.ndarray:
        """n x 2 float64 (x, y) centroids in level-0 px (QuPath's frame)."""
        return (region.centroid + 0.5) * np.asarray(self.downsample)

    def areas_um2(self, region: RegionNuclei) -> np.ndarray:
        """n float64 areas in um2."""
        return region.area * (self.downsample[0] * self.downsample[1] * self.mpp**2)


def output_names(stem: str) -> dict[str, str]:
    """Every file a slide's run may write, by kind."""
    return {
        "geojson": f"{stem}_nuclei.geojson",
        "geojson_gz": f"{stem}_nuclei.geojson.gz",
        "csv": f"{stem}_nuclei.csv",
        "parquet": f"{stem}_nuclei.parquet",
        "summary_json": f"{stem}_summary.json",
        "summary_csv": f"{stem}_summary.csv",
        "thumbnail": f"{stem}_thumbnail.png",
        "record": f"{stem}_slide.json",
    }


def nuclei_frame(
    region: RegionNuclei, frame: SlideFrame, scheme: ClassScheme, first_id: int
) -> pd.DataFrame:
    """One region's rows of the per-nucleus table (:data:`TABLE_COLUMNS`), ids from
    ``first_id``."""
    xy = frame.centroids(region)
    table = pd.DataFrame(
        {
            "id": np.arange(first_id, first_id + len(region)),
            "centroid_x_px": xy[:, 0].round(2),
            "centroid_y_px": xy[:, 1].round(2),
            "centroid_x_um": (xy[:, 0] * frame.mpp).round(3),
            "centroid_y_um": (xy[:, 1] * frame.mpp).round(3),
            "area_um2": frame.areas_um2(region).round(3),
            "class_id": region.class_id,
            "class_name": np.asarray(scheme.names, dtype=object)[region.class_id],
            "class_prob": region.class_prob.round(4),
        }
    )
    return table[list(TABLE_COLUMNS)]


def features(regions: Regions, frame: SlideFrame, scheme: ClassScheme) -> Iterator[dict]:
    """GeoJSON detections of every nucleus, region by region, outlines in level-0 px."""
    next_id = 1
    scale = np.asarray(frame.downsample)
    for region in regions():
        areas = frame.areas_um2(region)
        for index, (row_min, col_min, _, _) in enumerate(region.bbox):
            ring = np.asarray(nucleus_ring(region.mask(index), int(row_min), int(col_min)))
            ring = np.round(ring * scale, 2).tolist()
            measurements = {"nucleus id": next_id, "area um2": round(float(areas[index]), 3)}
            if np.isfinite(region.class_prob[index]):
                measurements["class probability"] = round(float(region.class_prob[index]), 4)
            yield detection_feature(ring, int(region.class_id[index]), scheme, measurements)
            next_id += 1


def write_geojson(
    file: BinaryIO, regions: Regions, frame: SlideFrame, scheme: ClassScheme, compress: bool
) -> int:
    """Write the FeatureCollection (gzip-compressed if ``compress``); returns the count."""
    if not compress:
        return write_feature_collection(file, features(regions, frame, scheme))
    with gzip.GzipFile(fileobj=file, mode="wb", compresslevel=6, mtime=0) as zipped:
        return write_feature_collection(zipped, features(regions, frame, scheme))


def write_table(file: BinaryIO, regions: Regions, frame: SlideFrame, scheme: ClassScheme) -> None:
    """Write the per-nucleus CSV, region by region."""
    first_id = 1
    header = True
    for region in regions():
        rows = nuclei_frame(region, frame, scheme, first_id)
        file.write(rows.to_csv(index=False, header=header).encode("utf-8"))
        header, first_id = False, first_id + len(region)
    if header:  # no nuclei: the header alone
        file.write((",".join(TABLE_COLUMNS) + "\n").encode("utf-8"))


def parquet_available() -> bool:
    """Whether pyarrow (for the Parquet table) can be imported."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(
    file: BinaryIO, regions: Regions, frame: SlideFrame, scheme: ClassScheme
) -> None:
    """Write the per-nucleus table as Parquet (needs pyarrow), one row group per region."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    first_id = 1
    try:
        for region in regions():
            if len(region) == 0:
                continue
            rows = nuclei_frame(region, frame, scheme, first_id)
            rows["class_name"] = rows["class_name"].astype(str)
            batch = pa.Table.from_pandas(rows, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(file, batch.schema)
            writer.write_table(batch)
            first_id += len(region)
    finally:
        if writer is not None:
            writer.close()


def class_summary(
    counts: np.ndarray, tissue_mm2: float, scheme: ClassScheme
) -> tuple[dict, pd.DataFrame]:
    """Nuclei per class and per mm2 of tissue.

    Args:
        counts: K int, nuclei per class id of ``scheme`` (background included, 0).
        tissue_mm2: the tissue mask's area in mm2 (densities are None when it is 0).
        scheme: the class names.

    Returns:
        (the JSON summary, a table with one row per foreground class and a ``total`` row:
        ``class_id``, ``class_name``, ``count``, ``share``, ``density_per_mm2``).
    """
    total = int(counts.sum())
    rows = []
    for class_id in range(1, len(scheme.names)):
        rows.append((class_id, scheme.names[class_id], int(counts[class_id])))
    rows.append((-1, "total", total))
    table = pd.DataFrame(rows, columns=["class_id", "class_name", "count"])
    table["share"] = (table["count"] / total).round(4) if total else 0.0
    table["density_per_mm2"] = (table["count"] / tissue_mm2).round(2) if tissue_mm2 > 0 else None
    summary = {
        "tissue_area_mm2": round(tissue_mm2, 4),
        "nuclei": total,
        "density_per_mm2": None if tissue_mm2 <= 0 else round(total / tissue_mm2, 2),
        "classes": {
            row.class_name: {
                "count": int(row.count),
                "share": float(row.share),
                "density_per_mm2": None if tissue_mm2 <= 0 else float(row.density_per_mm2),
            }
            for row in table.itertuples()
            if row.class_id > 0
        },
    }
    return summary, table


class SlideFiles:
    """Every file of a slide's run, written together from its finished regions.

    Args:
        out_dir: the output folder.
        stem: the slide's name without its suffix.
        regions: a function that yields the finished regions' nuclei, in order, afresh at
            every call (each file is written in one pass over them).
        frame: the segmented level's place on the slide.
        scheme: the model's classes.
        large: above this many nuclei the GeoJSON is gzipped and Parquet is written.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        stem: str,
        regions: Regions,
        frame: SlideFrame,
        scheme: ClassScheme,
        large: int = LARGE_NUCLEI,
    ) -> None:
        self.out_dir, self.names = Path(out_dir), output_names(stem)
        self.regions, self.frame, self.scheme, self.large = regions, frame, scheme, large

    def write(
        self,
        record: dict,
        tissue_mm2: float,
        thumbnail: np.ndarray,
        mask: np.ndarray,
        boxes: list[tuple[float, float, float, float]],
        compress: bool,
        finish: Callable[[dict], None],
    ) -> dict:
        """Write the files atomically (none replaced until all are written) and remove those
        of an earlier run that this one does not write; returns the completed record.

        Args:
            record: the run so far (``<stem>_slide.json``), completed here with the
                summary, the outputs and the Parquet table's fate.
            tissue_mm2: the tissue mask's area in mm2.
            thumbnail: h x w x 3 uint8, the slide at the mask's resolution.
            mask: h x w bool tissue mask.
            boxes: (top, bottom, left, right) of the processed regions in thumbnail px.
            compress: gzip the GeoJSON whatever the number of nuclei.
            finish: called on the record just before it is written (timings).
        """
        names, scheme, n_classes = self.names, self.scheme, self.scheme.n_classes
        counts = np.zeros(n_classes, np.int64)
        for region in self.regions():
            counts += np.bincount(region.class_id, minlength=n_classes)
        total = int(counts.sum())
        compress = compress or total > self.large
        parquet = f"not needed (at most {self.large:,} nuclei)"
        if total > self.large:
            parquet = "written" if parquet_available() else "skipped: pyarrow is not installed"
        summary, table = class_summary(counts, tissue_mm2, scheme)
        width0, height0 = record["width"], record["height"]
        to_thumb = np.array([mask.shape[1] / width0, mask.shape[0] / height0])
        points = (
            (*(self.frame.centroids(region) * to_thumb).T, region.class_id)
            for region in self.regions()
        )
        drawn = draw_thumbnail(thumbnail, mask, boxes, points, scheme)
        geojson = names["geojson_gz" if compress else "geojson"]
        record.update(summary)
        record["outputs"] = (
            [geojson, names["csv"]]
            + ([names["parquet"]] if parquet == "written" else [])
            + [names[key] for key in ("summary_json", "summary_csv", "thumbnail", "record")]
        )
        record["parquet"] = parquet
        summary_json = json.dumps({"slide": record["slide"], **summary}, indent=2).encode()
        regions, frame = self.regions, self.frame
        writers = {
            geojson: lambda f: write_geojson(f, regions, frame, scheme, compress),
            names["csv"]: lambda f: write_table(f, regions, frame, scheme),
            names["summary_json"]: lambda f: f.write(summary_json),
            names["summary_csv"]: lambda f: f.write(table.to_csv(index=False).encode()),
            names["thumbnail"]: lambda f: f.write(png_bytes(drawn)),
        }
        if parquet == "written":
            writers[names["parquet"]] = lambda f: write_parquet(f, regions, frame, scheme)

        def write_record(f: BinaryIO) -> None:  # last, so that it times the others
            finish(record)
            f.write(json.dumps(record, indent=2).encode("utf-8"))

        writers[names["record"]] = write_record
        atomic_write_many(self.out_dir, writers)
        for name in set(names.values()) - set(record["outputs"]):  # another run's files
            (self.out_dir / name).unlink(missing_ok=True)
        return record
