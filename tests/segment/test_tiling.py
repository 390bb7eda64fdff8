"""Tiles over a large image and their nuclei merged without seams (no network involved)."""

import numpy as np
import pytest

from nucstudy.data import synthetic_conic
from nucstudy.postprocess import Nuclei, remove_small
from nucstudy.segment.tiling import SeamlessMerge, tile_grid
from nucstudy.study.ood import agnostic_scores


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(1000, 1000, 256, 64), (700, 300, 256, 64), (5, 7, 256, 64), (513, 256, 256, 0)],
)
def test_tile_cores_partition_the_image_and_lie_inside_their_tiles(height, width, tile, overlap):
    tiles = tile_grid(height, width, tile, overlap)
    covered = np.zeros((height, width), int)
    for t in tiles:
        assert 0 <= t.top and t.top + t.height <= height
        assert 0 <= t.left and t.left + t.width <= width
        assert t.height == min(tile, height) and t.width == min(tile, width)
        top, bottom, left, right = t.core
        covered[top:bottom, left:right] += 1
        # a core keeps overlap / 2 px from every tile edge that has a neighbour beyond it
        margins = [
            (top - t.top, t.top == 0),
            (t.top + t.height - bottom, t.top + t.height == height),
            (left - t.left, t.left == 0),
            (t.left + t.width - right, t.left + t.width == width),
        ]
        for margin, at_image_border in margins:
            assert at_image_border or margin >= overlap // 2
    assert (covered == 1).all()


def test_tile_grid_rejects_bad_options():
    for args in [(0, 10, 256, 64), (10, 10, 0, 0), (10, 10, 64, 64), (10, 10, 64, -1)]:
        with pytest.raises(ValueError):
            tile_grid(*args)


def _nuclei_of(inst_map: np.ndarray, class_of: np.ndarray) -> Nuclei:
    """Nuclei of an arbitrary instance crop: ids made contiguous, classes looked up."""
    crop = remove_small(inst_map, 1)
    n = int(crop.max(initial=0))
    old = np.zeros(n, int)
    old[crop[crop > 0] - 1] = inst_map[crop > 0]
    return Nuclei.from_instances(crop, class_of[old], np.full(n, 0.5))


def test_merging_tiles_cut_from_true_nuclei_gives_back_every_nucleus_once():
    """Tiles cut from one instance map (each tile sees nuclei cut by its edges, as a network
    would) merge back into that map: every nucleus once, none cut at a seam."""
    data = synthetic_conic(1, size=512, seed=5)
    truth = np.asarray(data.labels[0])
    inst = truth[..., 0]
    class_of = np.zeros(inst.max() + 1, np.int32)
    class_of[inst[inst > 0]] = truth[..., 1][inst > 0]
    merge = SeamlessMerge(*inst.shape)
    for tile in tile_grid(*inst.shape, 128, 48):
        merge.add(tile, _nuclei_of(inst[tile.window], class_of))
    merged = merge.nuclei()
    scores = agnostic_scores(merged.inst_map, inst)
    assert scores["predicted"] == scores["true"]
    assert scores["pq"] == pytest.approx(1.0)
    # classes travel with the nuclei
    assert (merged.class_map == truth[..., 1]).all()


def test_a_second_copy_of_a_nucleus_is_dropped():
    inst = np.zeros((64, 64), np.int32)
    inst[20:30, 28:38] = 1  # centred on the seam between the two tiles below
    tiles = tile_grid(64, 64, 48, 32)
    merge = SeamlessMerge(64, 64)
    shifted = np.zeros_like(inst)
    shifted[20:30, 29:39] = 1  # the other tile's segmentation, a pixel to the right
    for tile, source in zip(tiles[:2], (inst, shifted), strict=True):
        crop = source[tile.window]
        # pretend each tile puts the centroid inside its own core
        nuclei = Nuclei.from_instances(crop, np.array([1]), np.array([1.0]))
        core_x = (tile.core[2] + tile.core[3]) / 2 - tile.left
        nuclei.centroid[:] = [core_x, 25 - tile.top]
        merge.add(tile, nuclei)
    assert len(merge.nuclei()) == 1
