"""Nuclei as files people open elsewhere: a table, GeoJSON for QuPath, label images, overlays.

Coordinates are in pixels of the segmented image, with (0, 0) the top-left corner of its
top-left pixel: pixel (row r, column c) covers x in [c, c + 1) and y in [r, r + 1), so its
centre is (c + 0.5, r + 0.5). This is QuPath's convention; a polygon traced along pixel
edges (:func:`nucleus_ring`) rasterises back to exactly the nucleus's pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import BinaryIO

import cv2
import numpy as np
import pandas as pd
import tifffile
from skimage.measure import approximate_polygon, find_contours
from skimage.segmentation import find_boundaries

from nucstudy.data.classes import ClassScheme
from nucstudy.postprocess import Nuclei


def outline_nuclei(image: np.ndarray, label: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """Draw each nucleus's outline in its class colour.

    Args:
        image: H x W x 3 uint8 RGB.
        label: H x W x 2 integer, [instance, class].
        scheme: class scheme giving the colours.

    Returns:
        H x W x 3 uint8 copy of ``image`` with 1 px inner outlines.
    """
    inst, cls = label[..., 0], label[..., 1]
    edges = find_boundaries(inst, mode="inner") & (inst > 0)
    out = image.copy()
    out[edges] = scheme.colour_table()[cls[edges]]
    return out


def nuclei_table(nuclei: Nuclei, scheme: ClassScheme, mpp: float) -> pd.DataFrame:
    """One row per nucleus: ``id``, ``centroid_x``/``centroid_y`` (px), ``area_px``,
    ``area_um2``, the bounding box ``row_min``, ``col_min``, ``row_max``, ``col_max`` (px,
    max exclusive), ``class_id``, ``class_name`` and ``class_prob``."""
    table = nuclei.table().rename(columns={"area": "area_px"})
    table["area_um2"] = table["area_px"] * mpp**2
    table["class_name"] = np.asarray(scheme.names)[nuclei.class_id]
    return table[
        [
            "id",
            "centroid_x",
            "centroid_y",
            "area_px",
            "area_um2",
            "row_min",
            "col_min",
            "row_max",
            "col_max",
            "class_id",
            "class_name",
            "class_prob",
        ]
    ]


def nucleus_ring(mask: np.ndarray, top: int = 0, left: int = 0) -> list[list[float]]:
    """The outline of a nucleus as a closed GeoJSON ring along its pixels' edges.

    Args:
        mask: h x w bool, the nucleus's pixels within its bounding box.
        top, left: the box's position in the image, in px.

    Returns:
        [[x, y], ...], first point repeated last, counter-clockwise in (x, y) (RFC 7946),
        without collinear points. The outer boundary of the largest piece; holes are not
        traced (post-processing fills them).
    """
    padded = np.pad(mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        raise ValueError("empty nucleus mask")
    contour = approximate_polygon(max(contours, key=len), tolerance=0)
    x = contour[:, 1] - 1 + 0.5 + left  # -1: the padding; +0.5: index -> edge coordinates
    y = contour[:, 0] - 1 + 0.5 + top
    if np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) < 0:
        x, y = x[::-1], y[::-1]
    return [[float(a), float(b)] for a, b in zip(x, y, strict=True)]


def nuclei_geojson(nuclei: Nuclei, scheme: ClassScheme) -> dict:
    """The nuclei as a GeoJSON FeatureCollection that QuPath imports as detections.

    Each Feature has a Polygon (:func:`nucleus_ring`) and the properties QuPath reads:
    ``objectType`` ``"detection"``, ``classification`` (``name`` and RGB ``color``), and
    ``measurements`` (nucleus id, area in px, class probability where known).
    """
    features = []
    for index, (row_min, col_min, row_max, col_max) in enumerate(nuclei.bbox):
        if nuclei.area[index] == 0:
            continue
        mask = nuclei.inst_map[row_min:row_max, col_min:col_max] == index + 1
        measurements = {"nucleus id": index + 1, "area px": int(nuclei.area[index])}
        if np.isfinite(nuclei.class_prob[index]):
            measurements["class probability"] = round(float(nuclei.class_prob[index]), 4)
        ring = nucleus_ring(mask, int(row_min), int(col_min))
        features.append(detection_feature(ring, int(nuclei.class_id[index]), scheme, measurements))
    return {"type": "FeatureCollection", "features": features}


def detection_feature(
    ring: list[list[float]], class_id: int, scheme: ClassScheme, measurements: dict
) -> dict:
    """One nucleus as a GeoJSON Feature that QuPath imports as a detection.

    Args:
        ring: the closed outline, [[x, y], ...] (:func:`nucleus_ring`).
        class_id: its class in ``scheme``.
        scheme: the class names and RGB colours.
        measurements: name -> number, shown in QuPath's measurement table.
    """
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {
                "name": scheme.names[class_id],
                "color": list(scheme.colours[class_id]),
            },
            "measurements": measurements,
        },
    }


def write_feature_collection(file: BinaryIO, features: Iterable[dict]) -> int:
    """Write a GeoJSON FeatureCollection feature by feature (compact UTF-8 JSON, as
    :func:`geojson_bytes`), so that a whole slide's nuclei need not be held at once.

    Args:
        file: a binary file (or a ``gzip.GzipFile`` around one).
        features: GeoJSON Features (:func:`detection_feature`).

    Returns:
        The number of features written.
    """
    file.write(b'{"type":"FeatureCollection","features":[')
    count = 0
    for feature in features:
        file.write(b"," if count else b"")
        file.write(json.dumps(feature, separators=(",", ":")).encode("utf-8"))
        count += 1
    file.write(b"]}")
    return count


def geojson_bytes(collection: dict) -> bytes:
    """A GeoJSON object as compact UTF-8 JSON."""
    return json.dumps(collection, separators=(",", ":")).encode("utf-8")


def overlay(image: np.ndarray, nuclei: Nuclei, scheme: ClassScheme) -> np.ndarray:
    """H x W x 3 uint8: the image with each nucleus outlined in its class colour."""
    return outline_nuclei(image, np.stack([nuclei.inst_map, nuclei.class_map], -1), scheme)


def png_bytes(image: np.ndarray) -> bytes:
    """An H x W x 3 uint8 RGB image as PNG."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the image could not be encoded as PNG")
    return encoded.tobytes()


def write_label_tiff(file: BinaryIO, inst_map: np.ndarray) -> None:
    """Write an H x W instance map to ``file`` as a single-channel uint32 TIFF label image
    (zlib-compressed). It is compressed in memory first: tifffile cannot write to a file
    object opened on a bare descriptor, as atomic writes give."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, inst_map.astype(np.uint32), compression="zlib")
    file.write(buffer.getbuffer())
