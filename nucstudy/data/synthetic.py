"""A procedural H&E generator in the CoNIC layout, at 0.5 um/px (20x).

Each patch is painted as two stain densities, haematoxylin (purple, binds nuclei) and eosin
(pink, binds cytoplasm and stroma), turned into RGB by the Beer-Lambert law with stain
vectors that vary between source images. The tissue has fibrous eosin stroma with pale
gaps, optional glands (a white lumen lined by epithelial cells whose elongated nuclei sit
at the base of the cell), and stromal cells scattered or clustered. Every nucleus is drawn
with its class's look (:mod:`nucstudy.data.synthetic_cells` draws one cell):

- lymphocyte: small, round, dense and dark;
- epithelial: large, oval, vesicular (pale centre, dark rim, a nucleolus), in glands or nests;
- plasma: round, eccentric nucleus with a coarse rim in purple cytoplasm with a pale halo;
- eosinophil: bilobed nucleus in bright red granular cytoplasm;
- neutrophil: three or four small lobes in pale pink cytoplasm;
- connective: thin elongated spindles along the stroma fibres.

Nuclei touch and overlap (the later one hides the earlier in the labels, both darken the
image). Class frequencies are skewed as in CoNIC: neutrophils and eosinophils are about
1-2 % of nuclei each. The output is deterministic for a seed, and patch i does not depend on
how many patches are asked for.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from nucstudy.data.classes import CONIC, ClassScheme, get_scheme
from nucstudy.data.conic import CONIC_MPP, ConicData, concat_data
from nucstudy.data.synthetic_cells import (
    CONNECTIVE,
    EOSINOPHIL,
    EPITHELIAL,
    LYMPHOCYTE,
    MORPHOLOGIES,
    NEUTROPHIL,
    NUCLEUS_SHAPES,
    PLASMA,
    draw_cytoplasm,
    nucleus_density,
    nucleus_mask,
)

#: How each morphology is named in the schemes the generator can label for.
SCHEME_CLASS_OF_MORPHOLOGY: dict[str, dict[str, str]] = {
    "conic": {name: name for name in MORPHOLOGIES},
    "consep": {
        "neutrophil": "inflammatory",
        "epithelial": "epithelial",
        "lymphocyte": "inflammatory",
        "plasma": "inflammatory",
        "eosinophil": "inflammatory",
        "connective": "spindle",
    },
}

# Optical density per unit stain, (R, G, B), before per-source jitter.
_HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN_OD = np.array([0.29, 0.87, 0.34], dtype=np.float32)
# Relative abundance of stromal cells (lymphocyte, plasma, connective, neutrophil, eosinophil).
_STROMAL_MIX = np.array([0.45, 0.11, 0.38, 0.03, 0.03])
_STROMAL_KINDS = np.array([LYMPHOCYTE, PLASMA, CONNECTIVE, NEUTROPHIL, EOSINOPHIL])
_MIN_VISIBLE_PX = 8  # nuclei hidden down to fewer pixels are left unlabelled


def synthetic_conic(
    n: int,
    size: int = 256,
    seed: int = 0,
    scheme: ClassScheme | str = CONIC,
    patches_per_source: int = 4,
) -> ConicData:
    """Generate ``n`` synthetic H&E patches with instance and class labels.

    Args:
        n: number of patches.
        size: patch side in pixels (at 0.5 um/px).
        seed: random seed; the same seed gives the same patches, and patch i is the same
            whatever ``n`` is.
        scheme: class scheme of the labels; ``"conic"`` or ``"consep"`` (see
            :data:`SCHEME_CLASS_OF_MORPHOLOGY`).
        patches_per_source: consecutive patches that share a "source image" (its stain
            vectors and tissue mix) and so must stay on one side of a split.

    Returns:
        ConicData with images N x size x size x 3 uint8, labels N x size x size x 2 int32,
        ``mpp=0.5`` and ``patch_info`` columns ``source`` and ``patch_info``.
    """
    scheme = get_scheme(scheme)
    if n < 0 or size < 32 or patches_per_source < 1:
        raise ValueError(
            f"need n >= 0, size >= 32 and patches_per_source >= 1; got n={n}, size={size}, "
            f"patches_per_source={patches_per_source}"
        )
    class_lookup = _class_lookup(scheme)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n, size, size, 2), dtype=np.int32)
    sources = []
    for i in range(n):
        source = i // patches_per_source
        style = _SourceStyle(np.random.default_rng([seed, source, 0]))
        image, inst, morph = _PatchPainter(
            size, style, np.random.default_rng([seed, i, 1])
        ).paint()
        images[i] = image
        labels[i, ..., 0] = inst
        labels[i, ..., 1] = np.where(inst > 0, class_lookup[morph], 0)
        sources.append(f"synthetic-{seed}-{source:05d}")
    patch_info = pd.DataFrame(
        {"patch_info": [f"{s}-{i:04d}" for i, s in enumerate(sources)], "source": sources}
    )
    return ConicData(images, labels, scheme, CONIC_MPP, patch_info)


def mix_synthetic(
    data: ConicData, train_idx: np.ndarray, share: float, seed: int = 0
) -> tuple[ConicData, np.ndarray]:
    """Real data with synthetic patches added to its training side only.

    Args:
        data: the real data set, N x S x S patches at 0.5 um/px.
        train_idx: indices of its training patches (validation keeps the others).
        share: synthetic patches per real training patch (``round(share x len(train_idx))``
            are generated).
        seed: the generator's seed.

    Returns:
        (data with the synthetic patches appended, in ``data``'s class scheme; the training
        indices with theirs appended). The other indices of ``data`` are unchanged.

    Raises:
        ValueError: data not square, not at 0.5 um/px, or a negative share.
    """
    height, width = data.images.shape[1:3]
    if share < 0:
        raise ValueError(f"share must be >= 0, got {share}")
    if height != width or not np.isclose(data.mpp, CONIC_MPP):
        raise ValueError(
            f"synthetic patches mix only with square patches at {CONIC_MPP} um/px (20x); "
            f"this data has {height} x {width} px at {data.mpp} um/px"
        )
    synthetic = synthetic_conic(round(share * len(train_idx)), height, seed, data.scheme)
    mixed = concat_data([data, synthetic])
    added = np.arange(len(data), len(mixed))
    return mixed, np.concatenate([np.asarray(train_idx, dtype=np.int64), added])


def _class_lookup(scheme: ClassScheme) -> np.ndarray:
    """Class id in ``scheme`` of each morphology (index = morphology)."""
    try:
        names = SCHEME_CLASS_OF_MORPHOLOGY[scheme.name]
    except KeyError:
        raise ValueError(
            f"the synthetic generator cannot label scheme {scheme.name!r}; "
            f"known: {', '.join(SCHEME_CLASS_OF_MORPHOLOGY)}"
        ) from None
    return np.array([scheme.id_of(names[m]) for m in MORPHOLOGIES], dtype=np.int32)


class _SourceStyle:
    """What patches of one source image share: stain vectors, stain strength, tissue mix."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.h_od = _jitter_vector(_HAEMATOXYLIN_OD, rng, 0.08)
        self.e_od = _jitter_vector(_EOSIN_OD, rng, 0.10)
        self.h_strength = rng.uniform(0.75, 1.25)
        self.e_strength = rng.uniform(0.6, 1.3)
        self.background_od = rng.uniform(0.02, 0.08, size=3).astype(np.float32)
        self.gland_probability = rng.uniform(0.5, 0.95)
        self.nest_probability = rng.uniform(0.2, 0.7)
        self.inflammation = rng.gamma(2.0, 0.5)
        mix = _STROMAL_MIX * rng.lognormal(0.0, 0.35, size=_STROMAL_MIX.size)
        self.stromal_mix = mix / mix.sum()


def _jitter_vector(vector: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    jittered = np.clip(vector + rng.normal(0.0, scale, size=3), 0.03, None)
    return (jittered / np.linalg.norm(jittered) * np.linalg.norm(vector)).astype(np.float32)


class _PatchPainter:
    """Paints one patch: stroma, glands, cells; returns image, instance map, morphology map."""

    def __init__(self, size: int, style: _SourceStyle, rng: np.random.Generator) -> None:
        self.size = size
        self.style = style
        self.rng = rng
        self.haem = np.zeros((size, size), np.float32)
        self.eosin = np.zeros((size, size), np.float32)
        self.inst = np.zeros((size, size), np.int32)
        self.occupied = np.zeros((size, size), np.uint8)  # glands: no stromal cells here
        self.centres = np.empty((0, 3))  # x, y, radius of placed nuclei (grown as needed)
        self.n_centres = 0
        self.morphology: list[int] = []
        self.fibre_angle = rng.uniform(0, np.pi)

    # -- the whole patch -------------------------------------------------------------------

    def paint(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._stroma()
        if self.rng.random() < self.style.gland_probability:
            for _ in range(self.rng.integers(1, 3)):
                self._gland()
        if self.rng.random() < self.style.nest_probability:
            self._epithelial_nest()
        self._stromal_cells()
        return self._image(), *self._labels()

    def _stroma(self) -> None:
        size, rng = self.size, self.rng
        fibres = _directional_noise(rng, size, self.fibre_angle, length=11)
        fibres += _directional_noise(rng, size, self.fibre_angle + rng.normal(0, 0.4), length=7)
        fibres /= 2.0
        patches = _smooth_noise(rng, size, cells=5)
        cracks = np.clip(-fibres - rng.uniform(0.6, 1.1), 0.0, 1.0)  # white gaps between fibres
        gaps = np.clip((patches - rng.uniform(0.5, 0.9)) * 3.0 + 1.5 * cracks, 0.0, 0.9)
        self.eosin[:] = (0.48 + 0.08 * fibres + 0.12 * patches) * (1.0 - gaps)
        self.haem[:] = (0.06 + 0.04 * patches) * (1.0 - gaps)

    # -- glands and nests ------------------------------------------------------------------

    def _gland(self) -> None:
        size, rng = self.size, self.rng
        cx, cy = rng.uniform(-0.1, 1.1, size=2) * size
        lumen = rng.uniform(8, 45)
        aspect = rng.uniform(0.6, 1.0)
        tilt = rng.uniform(0, 180)
        height = rng.uniform(18, 28)  # epithelial cell height, px
        outer = lumen + height
        axes_outer = (int(outer), int(outer * aspect + height * (1 - aspect)))
        axes_lumen = (int(lumen), max(int(lumen * aspect), 3))
        band = np.zeros_like(self.occupied)
        cv2.ellipse(band, (int(cx), int(cy)), axes_outer, tilt, 0, 360, 1, -1)
        cv2.ellipse(self.occupied, (int(cx), int(cy)), axes_outer, tilt, 0, 360, 1, -1)
        cytoplasm = band.astype(bool)
        self.eosin[cytoplasm] = 0.42 + 0.08 * rng.random()
        self.haem[cytoplasm] = 0.10
        lumen_mask = np.zeros_like(band)
        cv2.ellipse(lumen_mask, (int(cx), int(cy)), axes_lumen, tilt, 0, 360, 1, -1)
        inside = lumen_mask.astype(bool)
        self.eosin[inside] = 0.06 * rng.random()
        self.haem[inside] = 0.0
        # Nuclei at the base of the cells, long axis along the cell (radial).
        ring_a, ring_b = axes_lumen[0] + 0.68 * height, axes_lumen[1] + 0.68 * height
        perimeter = np.pi * (ring_a + ring_b)
        count = int(perimeter / rng.uniform(6.8, 8.6))
        t = np.deg2rad(tilt)
        for phi in np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.normal(0, 0.04, count):
            ex, ey = ring_a * np.cos(phi), ring_b * np.sin(phi)
            x = cx + ex * np.cos(t) - ey * np.sin(t) + rng.normal(0, 1.0)
            y = cy + ex * np.sin(t) + ey * np.cos(t) + rng.normal(0, 1.0)
            if -10 < x < size + 10 and -10 < y < size + 10:
                radial = np.arctan2(y - cy, x - cx)
                self._place(EPITHELIAL, x, y, angle=radial + rng.normal(0, 0.2), force=True)

    def _epithelial_nest(self) -> None:
        size, rng = self.size, self.rng
        cx, cy = rng.uniform(0.15, 0.85, size=2) * size
        spread = rng.uniform(25, 55)
        nest = np.zeros_like(self.occupied)
        cv2.circle(nest, (int(cx), int(cy)), int(spread * 1.3), 1, -1)
        self.occupied |= nest
        self.eosin[nest.astype(bool)] = 0.45
        self.haem[nest.astype(bool)] = 0.12
        for _ in range(int(spread * 2.5)):
            x, y = rng.normal([cx, cy], spread * 0.55)
            self._place(EPITHELIAL, x, y, angle=rng.uniform(0, np.pi))

    # -- stroma cells ----------------------------------------------------------------------

    def _stromal_cells(self) -> None:
        size, rng, style = self.size, self.rng, self.style
        free = 1.0 - self.occupied.mean()
        count = int(
            rng.uniform(60, 110) * free * (size / 256) ** 2 * (0.7 + 0.4 * style.inflammation)
        )
        mix = style.stromal_mix.copy()
        mix[[0, 1]] *= 0.5 + style.inflammation  # lymphocytes and plasma cells
        kinds = rng.choice(_STROMAL_KINDS, size=count, p=mix / mix.sum())
        clusters = rng.uniform(0, size, size=(rng.integers(1, 4), 2))
        for kind in kinds:
            if kind in (LYMPHOCYTE, PLASMA) and rng.random() < 0.6:
                x, y = clusters[rng.integers(len(clusters))] + rng.normal(0, 18, 2)
            else:
                x, y = rng.uniform(-4, size + 4, 2)
            xi, yi = int(np.clip(x, 0, size - 1)), int(np.clip(y, 0, size - 1))
            if self.occupied[yi, xi]:
                continue
            angle = self.fibre_angle + rng.normal(0, 0.25)
            self._place(int(kind), x, y, angle=angle)

    # -- one cell --------------------------------------------------------------------------

    def _place(self, kind: int, x: float, y: float, angle: float, force: bool = False) -> None:
        """Draw a cell of ``kind`` centred at (x, y) unless it would sit on another nucleus."""
        rng = self.rng
        shape = NUCLEUS_SHAPES[kind]
        a = rng.uniform(*shape["a"])
        b = min(a, rng.uniform(*shape["b"]))
        radius = (a + b) / 2
        placed = self.centres[: self.n_centres]
        if not force and self.n_centres:
            distance = np.hypot(placed[:, 0] - x, placed[:, 1] - y)
            if np.any(distance < 0.8 * (placed[:, 2] + radius)):
                return
        if self.n_centres == len(self.centres):
            self.centres = np.resize(self.centres, (2 * self.n_centres + 64, 3))
        self.centres[self.n_centres] = x, y, radius
        self.n_centres += 1
        self.morphology.append(kind)
        label = len(self.morphology)
        draw_cytoplasm(kind, x, y, a, angle, rng, self.haem, self.eosin)
        mask, (x0, y0) = nucleus_mask(kind, x, y, a, b, angle, rng, self.size)
        if mask is None:
            return
        window = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        self.inst[window][mask > 0] = label
        self.haem[window] += nucleus_density(kind, mask, rng)
        self.eosin[window] += 0.25 * mask

    # -- output ----------------------------------------------------------------------------

    def _image(self) -> np.ndarray:
        style, rng = self.style, self.rng
        haem = self.haem * style.h_strength
        eosin = self.eosin * style.e_strength
        od = haem[..., None] * style.h_od + eosin[..., None] * style.e_od + style.background_od
        rgb = 255.0 * np.exp(-od)
        rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 1.0))
        rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * rng.uniform(1.5, 4.0)
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Instance map with ids 1..n (hidden nuclei dropped) and each pixel's morphology."""
        morphology = np.asarray([0] + self.morphology, dtype=np.int32)
        areas = np.bincount(self.inst.ravel(), minlength=morphology.size)
        keep = areas >= _MIN_VISIBLE_PX
        keep[0] = False
        new_id = np.zeros(morphology.size, dtype=np.int32)
        new_id[keep] = np.arange(1, keep.sum() + 1)
        inst = new_id[self.inst]
        return inst, morphology[self.inst] * (inst > 0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a cells x cells random grid, bicubically upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


def _directional_noise(
    rng: np.random.Generator, size: int, angle: float, length: int
) -> np.ndarray:
    """Zero-mean noise streaked along ``angle`` (radians): the texture of collagen fibres."""
    kernel = np.zeros((length, length), np.float32)
    c, s, mid = np.cos(angle), np.sin(angle), length // 2
    offsets = np.arange(-mid, mid + 1)
    kernel[np.round(mid + offsets * s).astype(int), np.round(mid + offsets * c).astype(int)] = 1
    kernel /= kernel.sum()
    half = (size + 1) // 2  # streaks are drawn at half resolution, then upsampled
    noise = cv2.GaussianBlur(rng.standard_normal((half, half), dtype=np.float32), (0, 0), 0.6)
    streaks = cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT)
    streaks = cv2.resize(streaks, (size, size), interpolation=cv2.INTER_LINEAR)
    return streaks / (streaks.std() + 1e-6)
