"""``nucstudy segment`` and segment_image: any size, any resolution, seams, files people open."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from skimage.draw import polygon2mask

from nucstudy.cli import main
from nucstudy.data import import_consep256, region_mosaic, synthetic_conic, tile_region
from nucstudy.data.classes import CONSEP
from nucstudy.data.consep import halve_labels
from nucstudy.data.stain import reinhard_normalise, stain_reference
from nucstudy.data.tiles import rescale_image
from nucstudy.engine.checkpoint import CheckpointError
from nucstudy.engine.inference import images_to_tensor, predict_maps
from nucstudy.engine.model_file import export_model, load_model
from nucstudy.engine.oracle import encode_targets, oracle_model
from nucstudy.postprocess import Nuclei
from nucstudy.segment.export import nuclei_geojson, nucleus_ring
from nucstudy.segment.image import OVERLAP, TILE_SIZE, resize_nuclei, segment_image
from nucstudy.segment.images import OUTPUT_SUFFIXES, ImageError, read_image
from nucstudy.segment.tiling import tile_grid
from nucstudy.study.ood import agnostic_scores
from nucstudy.study.paths import ROBUST_MODEL, STUDY_MODEL


@pytest.fixture(scope="module")
def model():
    """The study's committed CoNSeP model (see results/models/README.md)."""
    return load_model(STUDY_MODEL)


@pytest.fixture(scope="module")
def consep_region(consep_dir):
    """768 x 768 px of a CoNSeP test tile at 40x, rebuilt from its patches."""
    return tile_region(import_consep256(consep_dir, "test"), "test_3")


def _split_at_seams(tiled: Nuclei, whole: Nuclei, tiles: list) -> int:
    """Whole-image nuclei crossing a boundary between two tiles' cores that the tiled
    nuclei cut in two or more pieces (of more than a quarter each) or drop."""
    rows = {t.core[0] for t in tiles} - {0}
    cols = {t.core[2] for t in tiles} - {0}
    bad = 0
    for k, (row_min, col_min, row_max, col_max) in enumerate(whole.bbox):
        crosses = any(row_min < r < row_max for r in rows) or any(
            col_min < c < col_max for c in cols
        )
        if not crosses:
            continue
        mask = whole.inst_map[row_min:row_max, col_min:col_max] == k + 1
        ids, counts = np.unique(
            tiled.inst_map[row_min:row_max, col_min:col_max][mask], return_counts=True
        )
        pieces = [(i, c) for i, c in zip(ids, counts, strict=True) if i > 0 and c > mask.sum() / 4]
        bad += len(pieces) != 1
    return bad


@pytest.mark.parametrize("source", ["consep", "synthetic"])
def test_tiles_merge_into_the_nuclei_of_the_whole_image(consep_dir, source):
    """Seams: perfect maps of a mosaic of twelve CoNSeP test regions (1152 x 1536 px at 20x,
    2 x 2 default tiles) and of a 2048 px synthetic image (3 x 3 tiles) give the same
    nuclei tiled as whole, and no nucleus on a seam is cut, doubled or lost. (HoVer-Net's
    post-processing min-max normalises its Sobel responses over whatever it is given, so a
    few markers differ between a tile and the whole image even with perfect maps.)"""
    if source == "consep":
        test = import_consep256(consep_dir, "test")
        mosaic = region_mosaic(test, [f"test_{k}" for k in range(1, 13)], columns=4)[1]
        label = halve_labels(mosaic[None])[0]  # 1152 x 1536 px at 20x
    else:
        label = np.asarray(synthetic_conic(1, size=2048, seed=12, scheme=CONSEP).labels[0])
    model = oracle_model(CONSEP, 0.5)
    image = encode_targets(label)
    whole = segment_image(model, image, 0.5, tile_size=32 * -(-max(image.shape) // 32))
    tiled = segment_image(model, image, 0.5)  # the defaults
    grid = tile_grid(*image.shape[:2], TILE_SIZE, OVERLAP)
    assert len(grid) >= 4 and len(whole) > 1000
    assert agnostic_scores(whole.inst_map, label[..., 0])["pq"] > 0.8  # the decoding works
    assert agnostic_scores(tiled.inst_map, whole.inst_map)["pq"] >= 0.99
    assert _split_at_seams(tiled, whole, grid) == 0
    both = (tiled.inst_map > 0) & (whole.inst_map > 0)
    assert (tiled.class_map[both] == whole.class_map[both]).mean() > 0.99  # classes travel


def test_tiling_costs_the_trained_model_no_accuracy(model, consep_region):
    """The trained model's SE and CA gates pool over their whole input, so its outputs
    depend on the tile's extent (benchmarks/segment.py measures how much); scored against
    the pathologists' outlines, tiled inference is as good as whole-image inference."""
    image, truth = consep_region
    whole = segment_image(model, image, 0.25, tile_size=512, overlap=0)  # one tile at 20x
    tiled = segment_image(model, image, 0.25, tile_size=256, overlap=64)  # 2 x 2 tiles
    assert whole.inst_map.shape == tiled.inst_map.shape == image.shape[:2]
    assert len(whole) > 100
    pq = {
        name: agnostic_scores(n.inst_map, truth[..., 0])["pq"]
        for name, n in (("whole", whole), ("tiled", tiled))
    }
    assert pq["tiled"] >= pq["whole"] - 0.03


def test_nuclei_come_back_at_the_image_own_resolution(model, consep_region):
    image, _ = consep_region
    at_40x = segment_image(model, image, 0.25)
    at_20x = segment_image(model, rescale_image(image, 0.5), 0.5)
    assert at_40x.inst_map.shape == (768, 768) and at_20x.inst_map.shape == (384, 384)
    # the same nuclei, on a grid twice as fine: areas x 4, centroids x 2
    assert len(at_40x) == len(at_20x)
    assert np.median(at_40x.area / at_20x.area) == pytest.approx(4.0, rel=0.05)
    assert np.abs(at_40x.centroid - 2 * at_20x.centroid - 0.5).max() < 1.0


def test_resize_nuclei_drops_nuclei_that_vanish_and_renumbers():
    inst = np.zeros((8, 8), np.int32)
    inst[0, 0] = 1  # one pixel: gone at half size
    inst[4:8, 4:8] = 2
    nuclei = Nuclei.from_instances(inst, np.array([3, 4]), np.array([0.9, 0.8]))
    small = resize_nuclei(nuclei, 4, 4)
    assert len(small) == 1 and small.class_id.tolist() == [4]
    assert small.inst_map[2:, 2:].tolist() == [[1, 1], [1, 1]]


@pytest.mark.parametrize("size", [(5, 7), (40, 300)])
def test_images_smaller_than_a_tile_are_segmented_at_their_size(model, size):
    image = np.asarray(synthetic_conic(1, size=512, seed=2).images[0])[: size[0], : size[1]]
    nuclei = segment_image(model, np.ascontiguousarray(image), model.mpp)
    assert nuclei.inst_map.shape == size


@pytest.mark.parametrize("mpp", [0.0, -0.5, float("nan"), 50.0, 0.001])
def test_an_unusable_resolution_is_one_clear_error(model, mpp):
    with pytest.raises(ValueError, match="mpp"):
        segment_image(model, np.zeros((64, 64, 3), np.uint8), mpp)


def test_bad_tiling_options_are_refused(model):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="multiple of 32"):
        segment_image(model, image, model.mpp, tile_size=100)
    with pytest.raises(ValueError, match="overlap"):
        segment_image(model, image, model.mpp, tile_size=64, overlap=64)
    with pytest.raises(ValueError, match="uint8"):
        segment_image(model, image.astype(float), model.mpp)


# -- reading images ------------------------------------------------------------------------


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_read_image_gives_rgb_from_png_jpeg_tiff_grey_and_alpha(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == rgb).all()
    smooth = np.linspace(0, 255, 20 * 30 * 3).reshape(rgb.shape).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - smooth).mean() < 5
    tifffile.imwrite(tmp_path / "a.tif", rgb)
    assert (read_image(tmp_path / "a.tif") == rgb).all()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "b.tiff", rgba)
    for name in ("b.png", "b.tiff"):
        assert (read_image(tmp_path / name) == rgb).all()
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "c.png")
    tifffile.imwrite(tmp_path / "c.tif", grey)
    for name in ("c.png", "c.tif"):
        out = read_image(tmp_path / name)
        assert out.shape == (20, 30, 3) and (out == grey[..., None]).all()


def test_read_image_refuses_what_it_cannot_use_in_one_line(tmp_path, rgb):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    tifffile.imwrite(tmp_path / "deep.tif", rgb.astype(np.uint16))
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 100).save(tmp_path / "wide.png")  # 16-bit
    tifffile.imwrite(tmp_path / "planar.tif", np.zeros((3, 20, 30, 5), np.uint8))
    (tmp_path / "notes.txt").write_text("hello")
    for name in ("broken.png", "deep.tif", "wide.png", "planar.tif", "notes.txt", "missing.png"):
        with pytest.raises(ImageError) as error:
            read_image(tmp_path / name)
        assert name in str(error.value) and "\n" not in str(error.value)


# -- exports -------------------------------------------------------------------------------


def test_polygons_trace_pixel_edges_and_close():
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    ring = nucleus_ring(mask, top=10, left=20)
    assert ring[0] == ring[-1] and len(ring) >= 4
    xs, ys = zip(*ring, strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == (22, 25, 11, 13)  # pixel edges
    area = 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False))
    assert area == pytest.approx(mask.sum(), abs=0.5)  # counter-clockwise, corners cut by 1/8


def _rasterise(collection: dict, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.int32)
    for k, feature in enumerate(collection["features"], start=1):
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        out[polygon2mask(shape, ring[:, ::-1] - 0.5)] = k  # (x, y) edges -> (row, col) index
    return out


def test_geojson_polygons_rasterise_back_to_the_instance_map(model, consep_region):
    image, _ = consep_region
    nuclei = segment_image(model, image, 0.25)
    collection = json.loads(json.dumps(nuclei_geojson(nuclei, model.scheme)))
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == len(nuclei)
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert all(0 <= x <= 768 and 0 <= y <= 768 for x, y in ring)
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] in model.scheme.foreground_names
        assert len(props["classification"]["color"]) == 3
    rasterised = _rasterise(collection, nuclei.inst_map.shape)
    assert agnostic_scores(rasterised, nuclei.inst_map)["pq"] >= 0.95


# -- the command ---------------------------------------------------------------------------


def _folder_of_images(tmp_path, consep_region):
    image, _ = consep_region
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(image[:300, :400]).save(folder / "good.png")
    tifffile.imwrite(folder / "also_good.tif", image[300:, 200:])
    (folder / "bad.png").write_bytes(b"\x89PNG truncated")
    (folder / "README.txt").write_text("not an image")
    return folder


def test_segment_command_writes_good_images_and_lists_bad_ones(tmp_path, consep_region, capsys):
    folder = _folder_of_images(tmp_path, consep_region)
    out = tmp_path / "out"
    argv = [str(folder), "--model", str(STUDY_MODEL), "--mpp", "0.25", "--out", str(out)]
    assert main(["segment", *argv]) == 1
    captured = capsys.readouterr()
    assert "bad.png" in captured.err and "README.txt: ignored" in captured.out
    for stem, shape in (("good", (300, 400)), ("also_good", (468, 568))):
        for suffix in OUTPUT_SUFFIXES:
            assert (out / f"{stem}{suffix}").is_file()
        labels = np.load(out / f"{stem}_labels.npy", allow_pickle=False)
        assert labels.shape == (*shape, 2)
        table = pd.read_csv(out / f"{stem}_nuclei.csv")
        assert len(table) == labels[..., 0].max()
        assert set(table["class_name"]) <= set(load_model(STUDY_MODEL).scheme.foreground_names)
        assert (tifffile.imread(out / f"{stem}_instances.tif") == labels[..., 0]).all()
        record = json.loads((out / f"{stem}_segment.json").read_text())
        assert record["nuclei"] == len(table) and record["mpp"] == 0.25
        assert Image.open(out / f"{stem}_overlay.png").size == shape[::-1]
    assert not list(out.glob("bad_*")) and not list(out.glob(".*"))  # nothing half-written

    before = (out / "good_nuclei.csv").stat().st_mtime_ns
    assert main(["segment", str(folder / "good.png"), *argv[1:]]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "good_nuclei.csv").stat().st_mtime_ns == before
    assert main(["segment", str(folder / "good.png"), *argv[1:], "--overwrite"]) == 0


def test_segment_command_needs_a_resolution(tmp_path, capsys):
    code = main(["segment", str(tmp_path), "--model", str(STUDY_MODEL), "--out", str(tmp_path)])
    assert code == 2
    assert "--mpp" in capsys.readouterr().err


def test_an_exported_model_is_smaller_and_predicts_as_its_checkpoint(train_smoke, tmp_path):
    run = train_smoke().run_dir
    checkpoint = run / "checkpoints" / "best.pt"
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt")]) == 0
    assert (tmp_path / "model.pt").stat().st_size < 0.6 * checkpoint.stat().st_size
    full, slim = load_model(checkpoint), load_model(tmp_path / "model.pt")
    assert (slim.mpp, slim.scheme, slim.epoch) == (full.mpp, full.scheme, full.epoch)
    image = np.asarray(synthetic_conic(1, size=256, seed=4).images[0])
    tensor = images_to_tensor(image[None], torch.device("cpu"))
    maps = [predict_maps(m.network, tensor, mixed_precision=False) for m in (full, slim)]
    for key in ("np", "hv", "tp"):
        assert torch.allclose(maps[0][key], maps[1][key], atol=0.02)
    with pytest.raises(CheckpointError):
        export_model(tmp_path / "missing.pt", tmp_path / "x.pt")


@pytest.mark.parametrize("workers", [0, 1])
def test_only_a_batch_of_tiles_per_worker_is_held_at_once(model, monkeypatch, workers):
    """Outputs of at most workers + 1 batches exist between the network and the merge."""
    from nucstudy.engine.methods import DenseMethod
    from nucstudy.segment.tiling import SeamlessMerge

    events = []
    predict, add = DenseMethod.predict, SeamlessMerge.add
    monkeypatch.setattr(
        DenseMethod, "predict", lambda *a: events.append(+len(a[2])) or predict(*a)
    )
    monkeypatch.setattr(SeamlessMerge, "add", lambda *a: events.append(-1) or add(*a))
    image = np.asarray(synthetic_conic(1, size=512, seed=8).images[0])
    segment_image(
        model,
        image,
        model.mpp,
        tile_size=64,
        overlap=16,
        batch_size=5,
        postprocess_workers=workers,
    )
    held = np.cumsum(events)
    assert held.max() <= 5 * (workers + 1)
    assert held[-1] == 0 and len(events) > 40


def test_the_exported_model_carries_its_training_colours_for_stain_normalisation(
    train_smoke, tmp_path, model
):
    run = train_smoke().run_dir
    assert main(["export", str(run), "--out", str(tmp_path / "with.pt")]) == 0
    argv = ["export", str(run), "--out", str(tmp_path / "without.pt"), "--no-stain-reference"]
    assert main(argv) == 0
    with_stain, without = load_model(tmp_path / "with.pt"), load_model(tmp_path / "without.pt")
    assert with_stain.stain is not None and without.stain is None
    image = np.asarray(synthetic_conic(1, size=128, seed=3).images[0])
    with pytest.raises(ValueError, match="colour statistics"):
        segment_image(without, image, without.mpp, stain_normalise=True)
    assert model.stain is not None  # the committed model can normalise
    normalised = segment_image(model, image, model.mpp, stain_normalise=True)
    assert normalised.inst_map.shape == image.shape[:2]


def test_tiles_normalised_with_the_whole_image_statistics_join_without_seams():
    image = np.asarray(synthetic_conic(1, size=256, seed=6).images[0])
    reference = stain_reference(np.asarray(synthetic_conic(2, size=64, seed=9).images))
    whole = reinhard_normalise(image, reference)
    source = stain_reference(image)
    halves = [
        reinhard_normalise(image[:, :128], reference, source),
        reinhard_normalise(image[:, 128:], reference, source),
    ]
    assert np.array_equal(np.concatenate(halves, axis=1), whole)


def test_segment_options_are_segment_image_keywords_with_its_defaults():
    import inspect
    from dataclasses import asdict

    from nucstudy.segment.images import SegmentOptions

    parameters = inspect.signature(segment_image).parameters
    for name, value in asdict(SegmentOptions()).items():
        assert parameters[name].default == value, name


def test_the_robust_model_finds_the_nuclei_of_unseen_tissue(model, cpm15_dir):
    """On a 40x glioma tile (CPM-15, dark and saturated, large nuclei) the default model
    finds almost nothing; the one trained with strong stain augmentation and the wider
    rescale finds most nuclei (see results/models/README.md)."""
    from nucstudy.data.tiles import load_tiles

    robust = load_model(ROBUST_MODEL)
    trained_by = robust.training_config
    assert trained_by["stain_strength"] == "strong" and trained_by["scale_range"] == [0.5, 2.0]
    assert trained_by["data"] == model.training_config["data"]  # the same training data
    tile = {t.name: t for t in load_tiles(cpm15_dir)}["image13"]
    scores = {
        name: agnostic_scores(segment_image(m, tile.image, tile.mpp).inst_map, tile.labels)
        for name, m in (("default", model), ("robust", robust))
    }
    assert scores["default"]["missed"] > 0.75 * scores["default"]["true"]  # matches few
    assert scores["robust"]["predicted"] > 0.6 * scores["robust"]["true"]
    assert scores["robust"]["pq"] > scores["default"]["pq"] + 0.2
