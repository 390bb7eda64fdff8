"""Out-of-domain evaluation: labelled tiles, the classical floor, stain normalisation, scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.io import imsave

from nucstudy.cli import main
from nucstudy.data.stain import reinhard_normalise, stain_reference
from nucstudy.data.tiles import LabelledTile, load_tiles, resample_tile
from nucstudy.postprocess.classical import ClassicalParams, classical_segment, split_touching
from nucstudy.study.ood import CLASSICAL_ROW, agnostic_scores, evaluate_tiles, summarise_tiles

PINK = (232, 182, 214)  # eosin-stained background
PURPLE = (70, 40, 140)  # haematoxylin-stained nucleus


def _disks(shape, centres, radius):
    """An H&E-like image with purple disks on pink and their instance map."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.empty((*shape, 3), dtype=np.uint8)
    image[:] = PINK
    labels = np.zeros(shape, dtype=np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        inside = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
        image[inside] = PURPLE
        labels[inside] = k
    return image, labels


def _tiles_folder(root, tiles):
    (root / "images").mkdir(parents=True)
    arrays = {"names": np.array([t.name for t in tiles]), "mpp": np.array([t.mpp for t in tiles])}
    for tile in tiles:
        imsave(root / "images" / f"{tile.name}.png", tile.image, check_contrast=False)
        arrays[tile.name] = tile.labels
    np.savez(root / "labels.npz", **arrays)
    return root


def test_classical_finds_separate_nuclei_at_either_resolution():
    image, labels = _disks((96, 128), [(20, 20), (20, 90), (70, 50)], radius=8)
    for mpp in (0.5, 0.25):
        found = classical_segment(image, mpp)
        assert found.dtype == np.int32 and found.shape == labels.shape
        assert agnostic_scores(found, labels)["pq"] > 0.8
        assert agnostic_scores(found, labels)["predicted"] == 3


def test_pq_splits_into_detection_and_segmentation_and_counts_flooded_background():
    _, labels = _disks((64, 96), [(20, 20), (40, 70)], radius=8)
    flooded = labels.copy()
    flooded[flooded == 2] = 0
    flooded[:, 50:] = np.where(flooded[:, 50:] == 0, 2, flooded[:, 50:])  # a background blob
    scores = agnostic_scores(flooded, labels)
    assert scores["sq"] == pytest.approx(1.0) and scores["dq"] == pytest.approx(0.5)
    assert scores["pq"] == pytest.approx(scores["dq"] * scores["sq"])
    # the blob swallows the second nucleus: its pixels count as found, the rest do not
    nuclear = (labels > 0).sum()
    assert scores["pixel precision"] == pytest.approx(nuclear / (flooded > 0).sum())
    assert np.isnan(agnostic_scores(np.zeros_like(labels), labels)["pixel precision"])


def test_classical_splits_touching_nuclei_and_ignores_blank_images():
    image, _ = _disks((64, 96), [(32, 30), (32, 54)], radius=12)  # overlapping disks
    mask = (image == PURPLE).all(axis=-1)
    assert len(np.unique(split_touching(mask, seed_distance_px=6))) - 1 == 2
    assert len(np.unique(classical_segment(image, 0.5))) - 1 == 2
    blank = np.full((32, 32, 3), 240, dtype=np.uint8)
    assert not classical_segment(blank, 0.5).any()
    small = classical_segment(image, 0.5, ClassicalParams(min_area_um2=1e4))
    assert not small.any()  # everything below the minimum area is removed
    with pytest.raises(ValueError, match="uint8"):
        classical_segment(image.astype(np.float32), 0.5)


def test_tiles_load_with_their_resolution_and_resample(tmp_path):
    a = LabelledTile("image01", *_disks((60, 80), [(30, 30)], 10), mpp=0.5)
    b = LabelledTile("image02", *_disks((100, 120), [(40, 40), (60, 90)], 16), mpp=0.25)
    tiles = load_tiles(_tiles_folder(tmp_path / "tiles", [a, b]))
    assert [t.name for t in tiles] == ["image01", "image02"]
    assert [t.mpp for t in tiles] == [0.5, 0.25]
    np.testing.assert_array_equal(tiles[1].labels, b.labels)
    np.testing.assert_array_equal(tiles[0].image, a.image)
    half = resample_tile(tiles[1], 0.5)
    assert half.image.shape == (50, 60, 3) and half.labels.shape == (50, 60)
    assert half.n_nuclei == 2 and half.mpp == 0.5
    assert resample_tile(tiles[0], 0.5) is tiles[0]


def test_bad_tiles_folders_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no labels.npz"):
        load_tiles(tmp_path)
    tile = LabelledTile("image01", *_disks((40, 40), [(20, 20)], 8), mpp=0.5)
    folder = _tiles_folder(tmp_path / "wrong", [tile])
    np.savez(
        folder / "labels.npz",
        names=np.array(["image01"]),
        mpp=np.array([0.5]),
        image01=np.zeros((10, 10), np.int32),
    )
    with pytest.raises(ValueError, match="image's size"):
        load_tiles(folder)
    np.savez(
        folder / "labels.npz",
        names=np.array(["image01"]),
        mpp=np.array([0.5]),
        image01=np.array([{"a": 1}], dtype=object),
    )
    with pytest.raises(ValueError, match="labels.npz"):
        load_tiles(folder)  # pickled objects are never loaded
    (folder / "images" / "image01.png").unlink()
    np.savez(
        folder / "labels.npz",
        names=np.array(["image01"]),
        mpp=np.array([0.5]),
        image01=tile.labels,
    )
    with pytest.raises(ValueError, match="image not found"):
        load_tiles(folder)


def test_agnostic_scores_count_and_match():
    _, labels = _disks((64, 64), [(16, 16), (40, 44)], 8)
    perfect = agnostic_scores(labels * 3, labels)  # other ids, same nuclei
    assert perfect["pq"] == pytest.approx(1.0) and perfect["dice"] == pytest.approx(1.0)
    missed = agnostic_scores(np.zeros_like(labels), labels)
    assert missed["pq"] == 0.0 and missed["predicted"] == 0 and missed["true"] == 2
    assert (missed["missed"], missed["split"], missed["spurious"]) == (2, 0, 0)


def test_agnostic_scores_name_split_merged_and_spurious_nuclei():
    _, labels = _disks((64, 96), [(16, 16), (40, 44), (40, 62)], 8)
    pred = labels.copy()
    pred[(labels == 1) & (np.arange(96)[None, :] >= 16)] = 9  # nucleus 1 cut in two halves
    pred[labels == 3] = 2  # nuclei 2 and 3 taken for one
    pred[55:62, 80:90] = 5  # a nucleus where there is none
    scores = agnostic_scores(pred, labels)
    assert {k: scores[k] for k in ("split", "merged", "missed", "spurious")} == {
        "split": 1,
        "merged": 1,
        "missed": 0,
        "spurious": 1,
    }
    assert summarise_tiles(pd.DataFrame([scores, scores]))["split"] == 2


def test_reinhard_brings_an_image_to_the_reference_colours():
    rng = np.random.default_rng(0)
    reference_images = rng.integers(100, 220, size=(4, 32, 32, 3), dtype=np.uint8)
    reference = stain_reference(reference_images)
    image, _ = _disks((48, 48), [(24, 24)], 10)
    normalised = reinhard_normalise(image, reference)
    assert normalised.dtype == np.uint8 and normalised.shape == image.shape
    again = stain_reference(normalised)
    np.testing.assert_allclose(again.mean, reference.mean, atol=3.0)
    flat = np.full((8, 8, 3), 200, np.uint8)
    assert reinhard_normalise(flat, reference).std(axis=(0, 1)).max() == 0


def test_evaluate_tiles_scores_each_tile_at_the_segmenter_resolution():
    tile = LabelledTile("t", *_disks((80, 80), [(20, 20), (60, 60)], 12), mpp=0.25)
    seen = []

    def oracle(image, mpp):
        seen.append((image.shape, mpp))
        return resample_tile(tile, mpp).labels

    per_tile = evaluate_tiles(oracle, [tile], mpp=0.5)
    assert seen == [((40, 40, 3), 0.5)]
    summary = summarise_tiles(per_tile)
    assert summary["pq"] == pytest.approx(1.0) and summary["nuclei true"] == 2


@pytest.mark.slow
def test_ood_command_writes_one_row_per_model_and_normalisation(tmp_path, train_smoke):
    config = train_smoke()
    tiles = [
        LabelledTile("image01", *_disks((70, 90), [(30, 30), (40, 70)], 9), mpp=0.5),
        LabelledTile("image02", *_disks((120, 100), [(50, 50)], 18), mpp=0.25),
    ]
    folder = _tiles_folder(tmp_path / "tiles", tiles)
    out = tmp_path / "ood" / "cpm.csv"
    code = main(
        ["ood", str(config.run_dir), "--tiles", str(folder), "--out", str(out), "--device", "cpu"]
    )
    assert code == 0
    summary = pd.read_csv(out)
    assert summary["method"].tolist()[0] == CLASSICAL_ROW
    assert summary["stain normalisation"].tolist() == [False, False, True]
    assert summary["stain augmentation"].tolist() == ["none", "none", "none"]
    assert summary["scale range"].fillna("").tolist() == ["", "0.8-1.25", "0.8-1.25"]
    assert (summary["nuclei true"] == 3).all()  # image02's nucleus counted at 20x
    assert summary.loc[0, "pq"] > 0.5  # the classical floor finds the purple disks
    per_tile = pd.read_csv(tmp_path / "ood" / "cpm_per_tile.csv")
    assert len(per_tile) == 6 and set(per_tile["tile"]) == {"image01", "image02"}
    assert main(["ood", str(tmp_path), "--tiles", str(folder), "--out", str(out)]) == 2


def test_a_data_source_split_reads_as_tiles(tmp_path, synthetic_small):
    from nucstudy.data import save_conic
    from nucstudy.data.tiles import tiles_from_source

    save_conic(synthetic_small, tmp_path / "conic")
    tiles = tiles_from_source(f"conic:{tmp_path / 'conic'}")
    assert 0 < len(tiles) < len(synthetic_small.images)
    assert all(t.image.shape == (256, 256, 3) and t.labels.shape == (256, 256) for t in tiles)
    assert {t.mpp for t in tiles} == {synthetic_small.mpp}
    assert sum(t.n_nuclei for t in tiles) > 0


def test_update_keeps_the_rows_there_and_adds_only_what_is_missing(tmp_path):
    tiles = [LabelledTile("image01", *_disks((70, 90), [(30, 30), (40, 70)], 9), mpp=0.5)]
    folder = _tiles_folder(tmp_path / "tiles", tiles)
    out = tmp_path / "ood.csv"
    assert main(["ood", "--tiles", str(folder), "--out", str(out)]) == 0
    first = out.read_text()
    assert main(["ood", "--tiles", str(folder), "--out", str(out), "--update"]) == 0
    assert out.read_text() == first  # the classical row is there: nothing scored again
    assert len(pd.read_csv(out)) == 1
    at_40x = ["ood", "--tiles", str(folder), "--out", str(out), "--update"]
    assert main([*at_40x, "--classical-mpp", "0.25"]) == 0
    assert pd.read_csv(out)["mpp"].tolist() == [0.5, 0.25]  # a floor at another resolution
    assert main([*at_40x, "--classical-mpp", "-1"]) == 2


def test_stain_augmentation_used_names_how_a_run_recoloured_its_patches():
    from nucstudy.study.presets import preset

    assert preset("smoke").stain_augmentation_used == "none"
    assert preset("smoke", stain_augment=True).stain_augmentation_used == "default"
    strong = preset("smoke", stain_augment=True, stain_strength="strong")
    assert strong.stain_augmentation_used == "strong"
    assert strong.replace(augment=False).stain_augmentation_used == "none"


def test_nucleus_sizes_are_physical_and_leave_out_cut_nuclei():
    from nucstudy.data.tiles import nucleus_sizes

    # radius 8 px at 0.5 um/px and radius 16 px at 0.25 um/px: the same 4 um nucleus
    at_20x = LabelledTile("a", *_disks((60, 60), [(30, 30), (2, 2)], 8), mpp=0.5)
    at_40x = LabelledTile("b", *_disks((120, 120), [(60, 60)], 16), mpp=0.25)
    sizes = nucleus_sizes([at_20x, at_40x])
    assert sizes["nuclei"] == 2  # the nucleus cut by the top-left corner is left out
    disc = np.pi * 4.0**2
    assert sizes["area median"] == pytest.approx(disc, rel=0.05)
    assert sizes["diameter median"] == pytest.approx(8.0, rel=0.03)
    with pytest.raises(ValueError, match="no nucleus clear of the tiles' edges"):
        nucleus_sizes([LabelledTile("c", *_disks((20, 20), [(1, 1)], 5), mpp=0.5)])


def test_data_sizes_command_compares_sources(tmp_path, capsys):
    tiles = [LabelledTile("image01", *_disks((70, 90), [(30, 30), (40, 70)], 9), mpp=0.5)]
    folder = _tiles_folder(tmp_path / "tiles", tiles)
    out = tmp_path / "sizes.csv"
    assert main(["data", "sizes", str(folder), "synthetic", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["data"].tolist() == [str(folder), "synthetic (test)"]
    assert table.loc[0, "nuclei"] == 2 and (table["area median"] > 0).all()
    assert main(["data", "sizes", "kaggle:x"]) == 2
    assert "unknown data source" in capsys.readouterr().err
