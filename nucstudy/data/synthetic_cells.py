"""One cell of the synthetic H&E generator (:mod:`nucstudy.data.synthetic`): nucleus and body.

Each morphology, named as CoNIC's classes, has its range of nucleus sizes
(:data:`NUCLEUS_SHAPES`). A nucleus is an ellipse with a wobbly outline, or for eosinophils
and neutrophils two to four lobes joined by a thin strand of chromatin
(:func:`nucleus_mask`), filled with its class's chromatin: vesicular epithelial nuclei with a
nucleolus, clock-face plasma cells, dense lymphocytes and lobes (:func:`nucleus_density`).
Eosinophils, neutrophils and plasma cells also get their cytoplasm painted around the
nucleus (:func:`draw_cytoplasm`). Every draw comes from the generator passed in, so a seed
gives the same cell.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The generator's nucleus morphologies, named as CoNIC's classes, in drawing-table order.
MORPHOLOGIES = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
NEUTROPHIL, EPITHELIAL, LYMPHOCYTE, PLASMA, EOSINOPHIL, CONNECTIVE = range(6)

_SUBPIXEL = 4  # fixed-point bits for cv2 drawing

#: Semi-axes of the nucleus in px at 0.5 um/px: a (long), b (short) ranges, by morphology.
#: Chosen so that median nucleus areas come near those of the CoNSeP patches halved to 20x.
NUCLEUS_SHAPES: dict[int, dict[str, tuple[float, float]]] = {
    LYMPHOCYTE: {"a": (3.2, 4.3), "b": (3.0, 4.0)},
    EPITHELIAL: {"a": (5.6, 8.2), "b": (3.8, 5.0)},
    PLASMA: {"a": (3.4, 4.5), "b": (3.0, 3.8)},
    EOSINOPHIL: {"a": (4.4, 5.3), "b": (2.8, 3.4)},
    NEUTROPHIL: {"a": (4.4, 5.4), "b": (3.2, 4.0)},
    CONNECTIVE: {"a": (5.6, 9.2), "b": (1.6, 2.5)},
}


def nucleus_mask(
    kind: int,
    x: float,
    y: float,
    a: float,
    b: float,
    angle: float,
    rng: np.random.Generator,
    size: int,
) -> tuple[np.ndarray | None, tuple[int, int]]:
    """A uint8 mask of one nucleus in a window clipped to the patch, and the window's corner.

    Args:
        kind: the morphology (eosinophils and neutrophils are drawn as lobes).
        x, y: the centre in px; a, b: the long and short semi-axes in px; angle: the long
            axis in radians.
        rng: the patch's random generator.
        size: the patch side in px.

    Returns:
        (h x w uint8 mask, 1 on the nucleus, of the window around the nucleus clipped to the
        patch; (x0, y0), the window's top-left corner in the patch), or (None, (0, 0))
        where the window lies outside the patch.
    """
    half = int(np.ceil(a)) + 3
    x0, y0 = max(int(x) - half, 0), max(int(y) - half, 0)
    x1, y1 = min(int(x) + half + 1, size), min(int(y) + half + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None, (0, 0)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    lx, ly = x - x0, y - y0
    if kind in (EOSINOPHIL, NEUTROPHIL):
        lobes = list(
            _lobes(2 if kind == EOSINOPHIL else int(rng.integers(3, 5)), lx, ly, a, b, angle, rng)
        )
        # A thin strand of chromatin joins the lobes: one nucleus is one connected region.
        strand = np.round(np.array([(x_k, y_k) for x_k, y_k, _ in lobes]) * (1 << _SUBPIXEL))
        cv2.polylines(mask, [strand.astype(np.int32)], False, 1, thickness=2, shift=_SUBPIXEL)
        for lx_k, ly_k, r_k in lobes:
            _fill_polygon(
                mask,
                _outline(
                    lx_k,
                    ly_k,
                    r_k,
                    r_k * rng.uniform(0.8, 1.0),
                    rng.uniform(0, np.pi),
                    rng,
                    wobble=0.05,
                ),
            )
    else:
        wobble = 0.03 if kind == LYMPHOCYTE else 0.05
        _fill_polygon(mask, _outline(lx, ly, a, b, angle, rng, wobble))
    return mask, (x0, y0)


def _lobes(count: int, x: float, y: float, a: float, b: float, angle: float, rng):
    """Centres and radii of ``count`` lobes along a bent line of half-length ~a."""
    radius = b * (0.72 if count == 2 else 0.6)
    positions = np.linspace(-1, 1, count) * (a - radius)
    bend = rng.normal(0, 0.35 * radius, count)
    c, s = np.cos(angle), np.sin(angle)
    for p, d in zip(positions, bend, strict=True):
        yield x + p * c - d * s, y + p * s + d * c, radius * rng.uniform(0.9, 1.1)


def _outline(
    x: float, y: float, a: float, b: float, angle: float, rng: np.random.Generator, wobble: float
) -> np.ndarray:
    """Points of an ellipse with semi-axes a, b rotated by ``angle``, its radius perturbed."""
    theta = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    k = np.arange(2, 5)[:, None]
    perturb = 1 + (
        rng.normal(0, wobble, (3, 1)) * np.cos(k * theta + rng.uniform(0, 6.3, (3, 1)))
    ).sum(0)
    ex, ey = a * np.cos(theta) * perturb, b * np.sin(theta) * perturb
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([x + ex * c - ey * s, y + ex * s + ey * c], axis=1)


def _fill_polygon(mask: np.ndarray, points: np.ndarray) -> None:
    scaled = np.round(points * (1 << _SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(mask, [scaled], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL)


def nucleus_density(kind: int, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Haematoxylin density inside one nucleus's window (0 outside the mask).

    Args:
        kind: the morphology, whose chromatin pattern is drawn.
        mask: h x w uint8 mask of the nucleus (from :func:`nucleus_mask`).
        rng: the patch's random generator.

    Returns:
        h x w float32 density of the haematoxylin stain: at least 0.2 on the nucleus, 0 outside.
    """
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    grain = rng.standard_normal(mask.shape, dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8)
    if kind == EPITHELIAL:  # vesicular: dark rim, pale centre, coarse chromatin, a nucleolus
        density = 0.4 + 0.8 * np.exp(-(depth - 1.0) / 1.2) + 0.3 * grain
        if rng.random() < 0.6:
            cy, cx = np.unravel_index(np.argmax(depth), depth.shape)
            cv2.circle(density, (int(cx + rng.integers(-1, 2)), int(cy)), 1, 1.6, -1)
        density *= rng.uniform(0.85, 1.15)
    elif kind == PLASMA:  # clock-face chromatin: clumps at the rim
        density = (1.0 + 0.5 * np.exp(-(depth - 1.0) / 1.0) + 0.45 * grain) * rng.uniform(0.9, 1.1)
    elif kind == CONNECTIVE:
        density = (1.3 + 0.15 * grain) * rng.uniform(0.8, 1.15)
    else:  # lymphocytes, and lobes of granulocytes: dense and dark
        density = (1.6 + 0.12 * grain) * rng.uniform(0.9, 1.1)
    return np.clip(density, 0.2, None) * mask


def draw_cytoplasm(
    kind: int,
    x: float,
    y: float,
    a: float,
    angle: float,
    rng: np.random.Generator,
    haem: np.ndarray,
    eosin: np.ndarray,
) -> None:
    """Paint the cell body around a nucleus into the stain maps (not the labels).

    Args:
        kind: the morphology (only eosinophils, neutrophils and plasma cells have a body).
        x, y: the nucleus's centre in px; a: its long semi-axis in px; angle: its long
            axis in radians (a plasma cell's body lies behind the nucleus along it).
        rng: the patch's random generator.
        haem, eosin: the patch's H x W float32 haematoxylin and eosin densities, painted in
            place.
    """
    centre = (int(round(x)), int(round(y)))
    if kind == EOSINOPHIL:
        body = np.zeros(eosin.shape, np.uint8)
        radius = int(a + rng.uniform(2.5, 4.0))
        cv2.circle(body, centre, radius, 1, -1)
        granules = np.clip(rng.normal(1.0, 0.35, body.shape).astype(np.float32), 0.4, None)
        inside = body.astype(bool)
        eosin[inside] = 1.25 * granules[inside]
        haem[inside] = 0.05
    elif kind == NEUTROPHIL:
        cv2.circle(eosin, centre, int(a + rng.uniform(2.0, 3.5)), 0.35, -1)
        cv2.circle(haem, centre, int(a + rng.uniform(2.0, 3.5)), 0.06, -1)
    elif kind == PLASMA:
        shift = rng.uniform(2.5, 4.0)
        body = (int(round(x - shift * np.cos(angle))), int(round(y - shift * np.sin(angle))))
        axes = (int(a + shift + 2.5), int(a + 2.0))
        cv2.ellipse(eosin, body, axes, np.rad2deg(angle), 0, 360, 0.45, -1)
        cv2.ellipse(haem, body, axes, np.rad2deg(angle), 0, 360, 0.32, -1)
        hof = (
            int(round(x - (a + 1.5) * np.cos(angle))),
            int(round(y - (a + 1.5) * np.sin(angle))),
        )
        cv2.circle(haem, hof, 2, 0.06, -1)
        cv2.circle(eosin, hof, 2, 0.18, -1)
