"""The CoNIC layout: ConicData, load_conic and save_conic."""

import json

import numpy as np
import pandas as pd
import pytest

from nucstudy.data import ConicData, load_conic, save_conic
from nucstudy.data.classes import CONIC


def test_conicdata_checks_its_arrays(synthetic_small):
    d = synthetic_small
    info = d.patch_info
    with pytest.raises(ValueError, match="uint8"):
        ConicData(d.images.astype(np.float32), d.labels, CONIC, 0.5, info)
    with pytest.raises(ValueError, match="int32"):
        ConicData(d.images, d.labels.astype(np.int64), CONIC, 0.5, info)
    with pytest.raises(ValueError, match="differ in N"):
        ConicData(d.images[:3], d.labels, CONIC, 0.5, info)
    with pytest.raises(ValueError, match="source"):
        ConicData(d.images, d.labels, CONIC, 0.5, info.drop(columns="source"))
    with pytest.raises(ValueError, match="mpp"):
        ConicData(d.images, d.labels, CONIC, 0.0, info)


def test_subset_keeps_rows_aligned(synthetic_small):
    part = synthetic_small.subset([5, 1])
    assert np.array_equal(part.images[0], synthetic_small.images[5])
    assert np.array_equal(part.counts[1], synthetic_small.counts[1])
    assert (
        part.patch_info["source"].tolist() == synthetic_small.patch_info["source"][[5, 1]].tolist()
    )


def test_save_then_load_round_trip(tmp_path, synthetic_small):
    save_conic(synthetic_small, tmp_path / "set")
    files = sorted(p.name for p in (tmp_path / "set").iterdir())
    assert files == ["counts.csv", "images.npy", "labels.npy", "meta.json", "patch_info.csv"]
    loaded = load_conic(tmp_path / "set")
    assert isinstance(loaded.images, np.memmap)
    assert np.array_equal(loaded.images, synthetic_small.images)
    assert np.array_equal(loaded.labels, synthetic_small.labels)
    assert np.array_equal(loaded.counts, synthetic_small.counts)
    assert loaded.scheme is CONIC and loaded.mpp == 0.5
    table = pd.read_csv(tmp_path / "set" / "counts.csv")
    assert list(table.columns) == list(CONIC.foreground_names)


def test_load_reads_the_release_layout_without_meta(tmp_path, synthetic_small):
    """The CoNIC release has no meta.json and a patch_info column '<source>-<k>'."""
    save_conic(synthetic_small, tmp_path)
    (tmp_path / "meta.json").unlink()
    info = pd.read_csv(tmp_path / "patch_info.csv")[["patch_info"]]
    info.to_csv(tmp_path / "patch_info.csv", index=False)
    loaded = load_conic(tmp_path)
    assert loaded.scheme is CONIC and loaded.mpp == 0.5
    assert loaded.patch_info["source"].tolist() == synthetic_small.patch_info["source"].tolist()


def test_uint16_labels_are_converted(tmp_path, synthetic_small):
    save_conic(synthetic_small, tmp_path)
    np.save(tmp_path / "labels.npy", synthetic_small.labels.astype(np.uint16))
    assert load_conic(tmp_path).labels.dtype == np.int32


@pytest.fixture
def saved(tmp_path, synthetic_small):
    save_conic(synthetic_small, tmp_path)
    return tmp_path


def test_missing_file_is_named(saved):
    (saved / "counts.csv").unlink()
    with pytest.raises(FileNotFoundError, match="counts.csv: file not found"):
        load_conic(saved)
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        load_conic(saved / "nowhere")


def test_wrong_image_dtype_is_named(saved, synthetic_small):
    np.save(saved / "images.npy", synthetic_small.images.astype(np.float32))
    with pytest.raises(ValueError, match="images.npy: expected dtype uint8, got float32"):
        load_conic(saved)


def test_wrong_label_shape_is_named(saved, synthetic_small):
    np.save(saved / "labels.npy", synthetic_small.labels[..., 0])
    with pytest.raises(ValueError, match="labels.npy: expected shape N x H x W x 2"):
        load_conic(saved)


def test_class_out_of_range_is_named(saved, synthetic_small):
    labels = synthetic_small.labels.copy()
    labels[..., 1][labels[..., 1] == 6] = 7
    np.save(saved / "labels.npy", labels)
    with pytest.raises(ValueError, match="labels.npy: class id 7 is out of range"):
        load_conic(saved)


def test_mismatched_n_is_named(saved, synthetic_small):
    np.save(saved / "labels.npy", synthetic_small.labels[:5])
    with pytest.raises(ValueError, match="labels.npy: 5 patches .* images.npy has 8"):
        load_conic(saved)
    np.save(saved / "labels.npy", synthetic_small.labels)
    pd.read_csv(saved / "patch_info.csv").iloc[:7].to_csv(saved / "patch_info.csv", index=False)
    with pytest.raises(ValueError, match="patch_info.csv: 7 rows"):
        load_conic(saved)


def test_counts_csv_must_agree(saved):
    table = pd.read_csv(saved / "counts.csv")
    table.iloc[2, 1] += 1
    table.to_csv(saved / "counts.csv", index=False)
    with pytest.raises(ValueError, match="counts.csv: counts disagree .* row 2"):
        load_conic(saved)
    table.rename(columns={"plasma": "plasma cell"}).to_csv(saved / "counts.csv", index=False)
    with pytest.raises(ValueError, match="counts.csv: columns"):
        load_conic(saved)


def test_pickled_arrays_are_refused(saved):
    np.save(saved / "images.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="images.npy: not a readable .npy array"):
        load_conic(saved)


def test_bad_meta_json_is_named(saved):
    (saved / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        load_conic(saved)
    (saved / "meta.json").write_text(json.dumps({"scheme": "pannuke"}))
    with pytest.raises(ValueError, match="unknown class scheme"):
        load_conic(saved)


def test_failed_save_leaves_earlier_data_intact(saved, synthetic_small, monkeypatch):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    broken = synthetic_small.subset([0, 1])

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        save_conic(broken, saved)
    after = {p.name: p.read_bytes() for p in saved.iterdir()}
    assert after == before


def test_saved_files_are_readable_by_others(tmp_path, synthetic_small):
    save_conic(synthetic_small.subset([0]), tmp_path)
    mode = (tmp_path / "images.npy").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044  # not mkstemp's private 0600


def test_class_summary_counts_and_shares(synthetic_small):
    table = synthetic_small.class_summary()
    assert list(table.index) == list(CONIC.foreground_names)
    assert table["nuclei"].tolist() == synthetic_small.counts.sum(axis=0).tolist()
    assert table["share"].sum() == pytest.approx(1.0)
