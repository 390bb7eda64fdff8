"""Whole slides: levels and resolution, the tissue mask, regions merged without seams,
resuming, damaged files, and the files written (GeoJSON for QuPath, the table, the summary).

The slides are small pyramidal TIFFs written here with tifffile (tiled, three levels in
SubIFDs or Aperio-style pages, resolution in their tags), read back through tiffslide."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from skimage.draw import polygon2mask

from nucstudy.cli import main
from nucstudy.data import synthetic_conic
from nucstudy.data.classes import CONSEP
from nucstudy.engine.model_file import load_model
from nucstudy.engine.oracle import encode_targets, oracle_model
from nucstudy.postprocess import Nuclei
from nucstudy.segment.image import segment_image
from nucstudy.segment.images import ImageError, SegmentOptions
from nucstudy.segment.regions import RegionStore
from nucstudy.segment.slide_export import TABLE_COLUMNS
from nucstudy.segment.slide_segment import (
    REGIONS_DIR,
    SlideOptions,
    merge_region,
    plan_regions,
    segment_slide,
)
from nucstudy.segment.slides import Slide, SlideError, is_slide_file, split_inputs
from nucstudy.segment.tissue import read_mask, tissue_mask
from nucstudy.study.ood import agnostic_scores
from nucstudy.study.paths import STUDY_MODEL

# -- writing small slides ------------------------------------------------------------------


def _pyramid(image: np.ndarray, levels: int, downsample: int) -> list[np.ndarray]:
    out = [image]
    for _ in range(levels - 1):
        a = out[-1]
        size = (max(1, a.shape[1] // downsample), max(1, a.shape[0] // downsample))
        out.append(cv2.resize(a, size, interpolation=cv2.INTER_AREA))
    return out


def write_slide(path, image, mpp, levels=3, kind="subifd", compression="zlib", tile=128):
    """A tiled pyramidal slide of ``image`` (H x W x 3 uint8), levels halving: ``kind``
    ``"subifd"`` (levels in SubIFDs, resolution tags in cm; no tags if ``mpp`` is None),
    ``"svs"`` (Aperio pages, MPP in the description) or ``"ome"`` (OME-XML PhysicalSize)."""
    pyramid = _pyramid(image, levels, 2)
    height, width = image.shape[:2]
    options = dict(tile=(tile, tile), compression=compression, photometric="rgb")
    if kind == "svs":  # level 0, a stripped thumbnail page, then the other levels
        head = f"Aperio Image Library v12.0.0 \r\n{width}x{height}"
        with tifffile.TiffWriter(path) as tw:
            for k, level in enumerate(pyramid):
                size = f"-> {level.shape[1]}x{level.shape[0]}"
                desc = f"{head} {f'[0,0 {width}x{height}]' if k == 0 else size} |MPP = {mpp}"
                tw.write(level, description=desc, metadata=None, **options)
                if k == 0:
                    thumb = pyramid[-1]
                    desc = f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} |MPP = {mpp}"
                    tw.write(thumb, description=desc, metadata=None, photometric="rgb")
        return path
    if kind == "ome":
        with tifffile.TiffWriter(path, ome=True) as tw:
            metadata = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
            tw.write(pyramid[0], subifds=levels - 1, metadata=metadata, **options)
            for level in pyramid[1:]:
                tw.write(level, subfiletype=1, **options)
        return path

    def resolution(level):
        if mpp is None:
            return {}
        x, y = 1e4 / mpp * level.shape[1] / width, 1e4 / mpp * level.shape[0] / height
        return {"resolution": (x, y), "resolutionunit": "CENTIMETER"}

    with tifffile.TiffWriter(path) as tw:
        tw.write(
            pyramid[0], subifds=levels - 1, metadata=None, **resolution(pyramid[0]), **options
        )
        for level in pyramid[1:]:
            tw.write(level, subfiletype=1, metadata=None, **resolution(level), **options)
    return path


def glass(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Empty glass: near-white, slightly noisy grey."""
    rng = np.random.default_rng(seed)
    return rng.integers(232, 246, (height, width, 1), dtype=np.uint8).repeat(3, axis=-1)


def he_tissue(side: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """side x side px of synthetic H&E at 20x (patches of 256 px side by side) and labels."""
    n = side // 256
    data = synthetic_conic(n * n, size=256, seed=seed, scheme=CONSEP)
    rows = [
        np.concatenate(list(np.asarray(data.images[r * n : (r + 1) * n])), 1) for r in range(n)
    ]
    return np.concatenate(rows, 0), np.asarray(data.labels)


def instance_map(store: RegionStore, shape: tuple[int, int]) -> np.ndarray:
    """The regions' nuclei painted into one instance map of the segmented level."""
    out = np.zeros(shape, np.int32)
    count = 0
    for path in sorted(store.folder.glob("region-*.npz")):
        region = store.load(int(path.stem.split("-")[1]))
        for k, (r0, c0, r1, c1) in enumerate(region.bbox):
            count += 1
            out[r0:r1, c0:c1][region.mask(k)] = count
    return out


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return load_model(STUDY_MODEL)


@pytest.fixture(scope="module")
def oracle_case(tmp_path_factory):
    """A 20x slide of perfect maps (:mod:`nucstudy.engine.oracle`): 768 px of synthetic nuclei on a
    1024 x 1152 px background, and a tissue mask of that square at 1/8 size."""
    label = np.asarray(synthetic_conic(1, size=768, seed=12, scheme=CONSEP).labels[0])
    canvas = np.zeros((1024, 1152, 2), np.int32)
    canvas[128:896, 192:960] = label
    image = encode_targets(canvas)
    folder = tmp_path_factory.mktemp("oracle")
    write_slide(folder / "oracle.tif", image, 0.5)
    mask = np.zeros((128, 144), np.uint8)
    mask[16:112, 24:120] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    options = SlideOptions(region_size=320, tissue_mask=folder / "mask.png", keep_regions=True)
    return SimpleNamespace(
        label=canvas,
        image=image,
        slide=folder / "oracle.tif",
        options=options,
        tiles=SegmentOptions(tile_size=320, overlap=48),
        model=oracle_model(CONSEP, 0.5),
    )


@pytest.fixture(scope="module")
def he_case(tmp_path_factory, model):
    """A 40x Aperio-style slide (2048 x 3072 px, 0.25 um/px, JPEG tiles): 1024 px of
    synthetic H&E on glass, segmented by the study model at level 1 (0.5 um/px) in regions
    of 256 px; the slide's reads are recorded."""
    tissue, _ = he_tissue(512)
    tissue = cv2.resize(tissue, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    image = glass(2048, 3072)
    image[256:1280, 256:1280] = tissue
    folder = tmp_path_factory.mktemp("he")
    path = write_slide(folder / "he.svs", image, 0.25, kind="svs", compression="jpeg")
    reads = []
    read = Slide.read

    def recording(self, level, top, left, height, width):
        reads.append((level, height, width))
        return read(self, level, top, left, height, width)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Slide, "read", recording)
        record = segment_slide(
            model,
            path,
            folder / "out",
            SlideOptions(region_size=256, keep_regions=True),
            SegmentOptions(tile_size=256, overlap=32),
        )
    return SimpleNamespace(
        image=image, block=(256, 1280, 256, 1280), out=folder / "out", record=record, reads=reads
    )


# -- levels and resolution -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["svs", "subifd", "ome"])
def test_levels_and_resolution_come_from_the_file(tmp_path, kind):
    image = glass(600, 800)
    path = write_slide(tmp_path / f"s.{'svs' if kind == 'svs' else 'tif'}", image, 0.25, kind=kind)
    assert is_slide_file(path)
    with Slide(path) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [
            (800, 600),
            (400, 300),
            (200, 150),
        ]
        assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == "metadata"
        assert slide.level_mpp(1) == pytest.approx(0.5)
        assert slide.nearest_level(0.5) == 1 and slide.nearest_level(0.3) == 0
        assert slide.nearest_level(0.7) == 1 and slide.nearest_level(4.0) == 2
        region = slide.read(1, 10, 20, 30, 40)
        assert region.shape == (30, 40, 3) and region.dtype == np.uint8
        assert slide.thumbnail(2.0).shape == (75, 100, 3)
    with Slide(path, mpp=0.5) as slide:  # --mpp overrides the metadata
        assert slide.mpp == 0.5 and slide.mpp_source == "given" and slide.level_mpp(2) == 2.0


def test_a_thumbnail_read_in_pieces_is_the_thumbnail_read_whole(tmp_path, monkeypatch):
    import nucstudy.segment.slides

    image = np.random.default_rng(0).integers(0, 256, (500, 700, 3), dtype=np.uint8)
    with Slide(write_slide(tmp_path / "s.tif", image, 0.5, levels=1)) as slide:
        whole = slide.thumbnail(2.0)
        monkeypatch.setattr(nucstudy.segment.slides, "CHUNK", 64)
        pieces = slide.thumbnail(2.0)
    assert pieces.shape == whole.shape == (125, 175, 3)
    assert np.array_equal(pieces, whole)


def test_only_pyramids_and_slide_suffixes_are_slides(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", glass(64, 64))
    write_slide(tmp_path / "pyramid.tif", glass(512, 512), 0.5)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.svs").write_text("not a slide")
    Image.fromarray(glass(32, 32)).save(tmp_path / "a.png")
    images, slides, ignored = split_inputs([tmp_path])
    assert [p.name for p in images] == ["a.png", "plain.tif"]
    assert [p.name for p in slides] == ["fake.svs", "pyramid.tif"]
    assert [p.name for p in ignored] == ["notes.txt"]


# -- bad slides ----------------------------------------------------------------------------


def _truncated(path, source):
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def test_bad_slides_are_one_clear_line(tmp_path):
    good = write_slide(tmp_path / "good.tif", glass(512, 512), 0.5)
    cases = {
        "truncated.tif": _truncated(tmp_path / "truncated.tif", good),
        "nores.tif": write_slide(tmp_path / "nores.tif", glass(512, 512), None),
        "text.svs": tmp_path / "text.svs",
        "missing.svs": tmp_path / "missing.svs",
    }
    (tmp_path / "text.svs").write_text("not a slide")
    tifffile.imwrite(tmp_path / "grey16.tif", np.zeros((512, 512), np.uint16), tile=(128, 128))
    cases["grey16.tif"] = tmp_path / "grey16.tif"
    messages = {}
    for name, path in cases.items():
        with pytest.raises(SlideError) as error:
            with Slide(path) as slide:
                slide.thumbnail(4.0)
                slide.read(0, 0, 0, 512, 512)
        messages[name] = str(error.value)
    for name, message in messages.items():
        assert name in message and "\n" not in message
    assert "--mpp" in messages["nores.tif"] and "no resolution" in messages["nores.tif"]
    assert "truncated or damaged" in messages["truncated.tif"]
    assert "not a whole-slide image" in messages["text.svs"]
    assert "no such file" in messages["missing.svs"]
    assert "8-bit RGB" in messages["grey16.tif"]
    with Slide(cases["nores.tif"], mpp=0.5) as slide:  # --mpp rescues it
        assert slide.mpp == 0.5


def test_the_command_writes_the_good_slide_and_names_the_bad_one(tmp_path, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    tissue, _ = he_tissue(256, seed=5)
    image = glass(512, 640)
    image[128:384, 192:448] = tissue
    good = write_slide(folder / "good.svs", image, 0.5, kind="svs", compression="jpeg")
    _truncated(folder / "bad.svs", good)
    out = tmp_path / "out"
    argv = ["segment", str(folder), "--model", str(STUDY_MODEL), "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.svs" in err[0] and "truncated or damaged" in err[0]
    record = json.loads((out / "good_slide.json").read_text())
    assert record["mpp_source"] == "metadata" and record["level"] == 0
    for name in record["outputs"]:
        assert (out / name).is_file()
    assert record["nuclei"] > 10
    assert not (out / REGIONS_DIR / "good").exists()  # removed once written
    # nothing overwritten without --overwrite
    before = (out / "good_nuclei.csv").stat().st_mtime_ns
    assert main(["segment", str(good), *argv[2:]]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "good_nuclei.csv").stat().st_mtime_ns == before
    assert main(["segment", str(good), *argv[2:], "--overwrite", "--gzip"]) == 0
    assert (out / "good_nuclei.geojson.gz").is_file()
    assert not (out / "good_nuclei.geojson").exists()  # the other form is not left behind
    # stain normalisation with the slide's own statistics, measured once
    assert main(["segment", str(good), *argv[2:], "--overwrite", "--stain-normalise"]) == 0
    assert json.loads((out / "good_slide.json").read_text())["stain_normalise"]


def test_images_still_need_mpp_and_slides_do_not(tmp_path, capsys):
    Image.fromarray(glass(64, 64)).save(tmp_path / "a.png")
    argv = ["segment", str(tmp_path / "a.png"), "--model", str(STUDY_MODEL)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "--mpp" in capsys.readouterr().err


# -- tissue --------------------------------------------------------------------------------


def test_the_tissue_mask_finds_the_tissue_and_not_the_glass(he_case):
    with Slide(he_case.out.parent / "he.svs") as slide:
        thumbnail = slide.thumbnail(4.0)
    mask = tissue_mask(thumbnail, 4.0)
    truth = np.zeros(mask.shape, bool)
    top, bottom, left, right = (v // 16 for v in he_case.block)  # 0.25 -> 4 um/px
    truth[top:bottom, left:right] = True
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
    assert not tissue_mask(glass(300, 400), 4.0).any()  # glass alone: no tissue
    record = he_case.record
    tissue_um2 = (1024 * 0.25) ** 2
    assert record["tissue_area_mm2"] == pytest.approx(tissue_um2 / 1e6, rel=0.15)


def test_a_mask_of_ones_own_is_resized_to_the_slide_and_must_have_its_shape(tmp_path):
    mask = np.zeros((300, 400), np.uint8)
    mask[150:, :200] = 1  # 0/1 masks work as 0/255 ones do
    Image.fromarray(mask).save(tmp_path / "mask.png")
    resized = read_mask(tmp_path / "mask.png", 75, 100)
    assert resized.shape == (75, 100) and resized.dtype == bool
    assert resized[40:, :50].all() and not resized[:37].any() and not resized[:, 50:].any()
    with pytest.raises(ImageError, match="aspect ratio"):
        read_mask(tmp_path / "mask.png", 100, 100)


def test_a_slide_of_glass_alone_has_no_regions_and_empty_files(oracle_case, tmp_path):
    path = write_slide(tmp_path / "glass.tif", glass(640, 768), 0.5)
    record = segment_slide(oracle_case.model, path, tmp_path / "out")
    assert record["tissue_regions"] == 0 and record["nuclei"] == 0 and record["regions"] > 0
    assert record["tissue_area_mm2"] == 0 and record["density_per_mm2"] is None
    collection = json.loads((tmp_path / "out" / "glass_nuclei.geojson").read_text())
    assert collection == {"type": "FeatureCollection", "features": []}
    assert tuple(pd.read_csv(tmp_path / "out" / "glass_nuclei.csv").columns) == TABLE_COLUMNS


def test_only_regions_with_tissue_are_read(he_case):
    record = he_case.record
    assert record["level"] == 1 and record["level_mpp"] == pytest.approx(0.5)
    assert 4 <= record["tissue_regions"] < record["regions"] / 2
    # the thumbnail comes from level 2; level 1 is read one region at a time; never level 0
    levels = {level for level, _, _ in he_case.reads}
    assert levels == {1, 2}
    largest = max(h * w for level, h, w in he_case.reads if level == 1)
    assert largest <= 256 * 256
    assert sum(level == 1 for level, _, _ in he_case.reads) == record["tissue_regions"]
    table = pd.read_csv(he_case.out / "he_nuclei.csv")
    top, bottom, left, right = he_case.block
    assert table["centroid_x_px"].between(left - 64, right + 64).all()
    assert table["centroid_y_px"].between(top - 64, bottom + 64).all()


# -- seams and resuming --------------------------------------------------------------------


def _crossing_seams(inst: np.ndarray, reference, boundaries: tuple[set, set]) -> int:
    """Reference nuclei across a boundary between region cores that ``inst`` does not hold
    as exactly one nucleus covering more than half of it (cut, doubled or lost)."""
    rows, cols = boundaries
    bad = 0
    for k, (r0, c0, r1, c1) in enumerate(reference.bbox):
        if not (any(r0 < r < r1 for r in rows) or any(c0 < c < c1 for c in cols)):
            continue
        mask = reference.inst_map[r0:r1, c0:c1] == k + 1
        ids, counts = np.unique(inst[r0:r1, c0:c1][mask], return_counts=True)
        pieces = [c for i, c in zip(ids, counts, strict=True) if i > 0 and c > mask.sum() / 4]
        bad += len(pieces) != 1 or pieces[0] <= mask.sum() / 2
    return bad


def test_regions_join_without_seams_and_find_every_nucleus_once(oracle_case, tmp_path):
    """Perfect maps through the whole-slide path: the nuclei are those of the image
    segmented in one piece, none cut, doubled or lost at the regions' seams."""
    case = oracle_case
    record = segment_slide(case.model, case.slide, tmp_path, case.options, case.tiles)
    assert record["tissue_regions"] >= 9
    inst = instance_map(RegionStore(tmp_path / REGIONS_DIR / "oracle"), case.image.shape[:2])
    whole = segment_image(case.model, case.image, 0.5, tile_size=1152, overlap=0)
    regions = plan_regions(*case.image.shape[:2], 320, 48)
    boundaries = ({r.tile.core[0] for r in regions} - {0}, {r.tile.core[2] for r in regions} - {0})
    crossing = sum(
        any(r0 < r < r1 for r in boundaries[0]) or any(c0 < c < c1 for c in boundaries[1])
        for r0, c0, r1, c1 in whole.bbox
    )
    assert crossing > 50
    assert _crossing_seams(inst, whole, boundaries) == 0
    assert agnostic_scores(inst, whole.inst_map)["pq"] >= 0.99
    truth = agnostic_scores(inst, case.label[..., 0])
    assert truth["split"] == 0 and truth["spurious"] == 0  # no nucleus twice, none invented
    assert truth["predicted"] >= 0.98 * truth["true"]
    assert record["nuclei"] == inst.max()


def _nuclei(shape, boxes):
    inst = np.zeros(shape, np.int32)
    for k, (r0, c0, r1, c1) in enumerate(boxes, start=1):
        inst[r0:r1, c0:c1] = k
    n = len(boxes)
    return Nuclei.from_instances(inst, np.full(n, 2), np.full(n, 0.9))


def test_a_nucleus_two_regions_both_claim_is_kept_once(tmp_path):
    """Two regions (cores [0, 50) and [50, 100) px) see one nucleus with its centroid on
    either side of their boundary: the second copy overlaps the first on more than half its
    pixels and is dropped, as between tiles; one overlapping less is kept on its free
    pixels only."""
    regions = plan_regions(40, 100, 60, 20)
    assert [(r.tile.left, r.tile.core[2:]) for r in regions] == [(0, (0, 50)), (40, (50, 100))]
    store = RegionStore(tmp_path)
    store.open({})
    first = merge_region(
        _nuclei((40, 60), [(10, 44, 20, 54), (25, 40, 35, 52)]), regions[0], regions, store
    )
    assert len(first) == 2  # centroids 48.5 and 45.5: region 0's core
    store.save(0, first)
    # region 1 (window from col 40): the first copy shifted by 2 px (centroid 50.5), and the
    # second one with a different shape (cols 49..61: a third of it taken)
    second = _nuclei((40, 60), [(10, 6, 20, 16), (25, 9, 35, 21)])
    kept = merge_region(second, regions[1], regions, store)
    assert len(kept) == 1 and kept.bbox.tolist() == [[25, 52, 35, 61]]
    assert kept.area.tolist() == [90]  # its 120 px less the 30 the first region holds


def test_an_interrupted_run_resumes_to_the_same_nuclei(oracle_case, tmp_path, monkeypatch):
    case = oracle_case
    options = SlideOptions(region_size=320, tissue_mask=case.options.tissue_mask)
    straight = segment_slide(case.model, case.slide, tmp_path / "a", options, case.tiles)
    save = RegionStore.save
    saved = []

    def killed_after_five(self, index, nuclei):
        if len(saved) == 5:
            raise KeyboardInterrupt
        saved.append(index)
        save(self, index, nuclei)

    monkeypatch.setattr(RegionStore, "save", killed_after_five)
    with pytest.raises(KeyboardInterrupt):
        segment_slide(case.model, case.slide, tmp_path / "b", options, case.tiles)
    monkeypatch.setattr(RegionStore, "save", save)
    assert len(list((tmp_path / "b" / REGIONS_DIR / "oracle").glob("region-*.npz"))) == 5
    assert not list((tmp_path / "b").glob("oracle_*"))  # no outputs of a half-done run
    resumed = segment_slide(case.model, case.slide, tmp_path / "b", options, case.tiles)
    assert resumed["regions_resumed"] == 5 and straight["regions_resumed"] == 0
    assert resumed["nuclei"] == straight["nuclei"] > 500
    for name in ("oracle_nuclei.csv", "oracle_nuclei.geojson", "oracle_summary.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # other settings do not reuse an unfinished run's regions
    monkeypatch.setattr(RegionStore, "save", killed_after_five)
    saved.clear()
    with pytest.raises(KeyboardInterrupt):
        segment_slide(case.model, case.slide, tmp_path / "c", options, case.tiles)
    monkeypatch.setattr(RegionStore, "save", save)
    other = SegmentOptions(tile_size=320, overlap=64)
    record = segment_slide(case.model, case.slide, tmp_path / "c", options, other)
    assert record["regions_resumed"] == 0 and record["earlier_run_discarded"]


# -- outputs -------------------------------------------------------------------------------


def _segments_cross(ring: np.ndarray) -> bool:
    """Whether two non-adjacent edges of a closed ring (n + 1 x 2, first point last) meet."""
    a, b = ring[:-1], ring[1:]
    n = len(a)

    def orient(p, q, r):
        return np.sign(
            (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
            - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
        )

    for i in range(n):
        j = np.arange(i + 2, n if i > 0 else n - 1)
        if not len(j):
            continue
        p, q = a[i], b[i]
        r, s = a[j], b[j]
        d1, d2 = orient(p, q, r), orient(p, q, s)
        d3, d4 = orient(r, s, p[None]), orient(r, s, q[None])
        if np.any((d1 * d2 <= 0) & (d3 * d4 <= 0) & ~((d1 == 0) & (d2 == 0))):
            return True
    return False


def test_geojson_is_closed_valid_polygons_in_level0_pixels_that_qupath_reads(he_case, model):
    out, record = he_case.out, he_case.record
    collection = json.loads((out / "he_nuclei.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == record["nuclei"] > 20
    colours = {
        name: list(c) for name, c in zip(model.scheme.names, model.scheme.colours, strict=True)
    }
    for feature in features:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert (ring[0] == ring[-1]).all() and len(ring) >= 4
        assert not _segments_cross(ring)
        assert (ring >= 0).all() and (ring[:, 0] <= 3072).all() and (ring[:, 1] <= 2048).all()
        props = feature["properties"]
        assert props["objectType"] == "detection"
        name = props["classification"]["name"]
        assert (
            name in model.scheme.foreground_names
            and props["classification"]["color"] == colours[name]
        )
    # rasterised at level 0, the polygons are the nuclei found at level 1, twice as large
    level1 = instance_map(RegionStore(out / REGIONS_DIR / "he"), (1024, 1536))
    top, bottom, left, right = he_case.block
    window = np.kron(level1, np.ones((2, 2), np.int32))[top:bottom, left:right]
    raster = np.zeros(window.shape, np.int32)
    for k, feature in enumerate(features, start=1):
        ring = np.asarray(feature["geometry"]["coordinates"][0]) - [left, top]
        raster[polygon2mask(window.shape, ring[:, ::-1] - 0.5)] = k
    assert agnostic_scores(raster, window)["pq"] >= 0.95


def test_the_table_and_summary_carry_units_and_agree(he_case):
    out, record = he_case.out, he_case.record
    table = pd.read_csv(out / "he_nuclei.csv")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert len(table) == record["nuclei"] and table["id"].tolist() == list(
        range(1, len(table) + 1)
    )
    assert np.allclose(table["centroid_x_um"], table["centroid_x_px"] * 0.25, atol=2e-3)
    assert np.allclose(table["centroid_y_um"], table["centroid_y_px"] * 0.25, atol=2e-3)
    level1 = instance_map(RegionStore(out / REGIONS_DIR / "he"), (1024, 1536))
    areas = np.bincount(level1.ravel())[1:]
    assert np.allclose(table["area_um2"], areas * 0.5**2, atol=1e-3)  # level-1 px are 0.5 um
    assert table["class_prob"].between(0, 1).all()
    summary = json.loads((out / "he_summary.json").read_text())
    counts = table["class_name"].value_counts()
    for name, entry in summary["classes"].items():
        assert entry["count"] == counts.get(name, 0)
        assert entry["density_per_mm2"] == pytest.approx(
            entry["count"] / summary["tissue_area_mm2"], rel=1e-3, abs=0.01
        )
    per_class = pd.read_csv(out / "he_summary.csv").set_index("class_name")
    assert per_class.loc["total", "count"] == len(table)
    thumbnail = np.asarray(Image.open(out / "he_thumbnail.png"))
    assert thumbnail.shape == (128, 192, 3)  # 4 um/px


def test_many_nuclei_are_gzipped_and_parquet_only_with_pyarrow(oracle_case, tmp_path, monkeypatch):
    import nucstudy.segment.slide_segment
    from nucstudy.segment.slide_export import parquet_available

    case = oracle_case
    options = SlideOptions(region_size=320, tissue_mask=case.options.tissue_mask)
    plain = segment_slide(case.model, case.slide, tmp_path / "plain", options, case.tiles)
    monkeypatch.setattr(nucstudy.segment.slide_segment, "LARGE_NUCLEI", 100)
    large = segment_slide(case.model, case.slide, tmp_path / "large", options, case.tiles)
    assert large["outputs"][0] == "oracle_nuclei.geojson.gz"
    with gzip.open(tmp_path / "large" / "oracle_nuclei.geojson.gz") as f:
        assert f.read() == (tmp_path / "plain" / "oracle_nuclei.geojson").read_bytes()
    assert plain["parquet"].startswith("not needed")
    if parquet_available():
        assert large["parquet"] == "written"
        table = pd.read_parquet(tmp_path / "large" / "oracle_nuclei.parquet")
        csv = pd.read_csv(tmp_path / "large" / "oracle_nuclei.csv")
        pd.testing.assert_frame_equal(table, csv, check_dtype=False)
    else:
        assert large["parquet"] == "skipped: pyarrow is not installed"
        assert not (tmp_path / "large" / "oracle_nuclei.parquet").exists()
