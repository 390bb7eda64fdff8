"""Reading the real CoNSeP-256 patches (skipped where ../shared/data/consep256 is absent)."""

import numpy as np
import pytest
from scipy import ndimage

from nucstudy.data import count_nuclei, import_consep256, split_by_source, tile_of
from nucstudy.data.classes import CONSEP
from nucstudy.data.consep import halve_labels


@pytest.fixture(scope="module")
def consep_train(consep_dir):
    return import_consep256(consep_dir, "train")


def test_train_split_shapes_and_counts(consep_train, consep_dir):
    d = consep_train
    assert d.images.shape == (432, 256, 256, 3) and d.images.dtype == np.uint8
    assert d.labels.shape == (432, 256, 256, 2) and d.labels.dtype == np.int32
    assert d.scheme is CONSEP and d.mpp == 0.25
    assert d.patch_info["source"].nunique() == 27
    whole = count_nuclei(d.labels, CONSEP, crop=None)
    assert whole.sum() == 18216  # the README's nuclei clipped to the patches
    assert np.all(d.counts <= whole) and d.counts.sum() < whole.sum()
    assert np.all(d.counts.sum(axis=0) > 0)  # every class occurs


def test_test_split_and_resampling(consep_dir):
    full = import_consep256(consep_dir, "test")
    assert len(full) == 224 and full.patch_info["source"].nunique() == 14
    assert count_nuclei(full.labels, CONSEP, crop=None).sum() == 10330
    half = import_consep256(consep_dir, "test", resample=True)
    assert half.images.shape == (224, 128, 128, 3) and half.mpp == 0.5
    assert np.array_equal(half.labels, halve_labels(full.labels))
    block = full.images[0, :2, :2].astype(float).mean(axis=(0, 1))
    assert np.allclose(half.images[0, 0, 0], block, atol=0.51)


def _centroids(instances: np.ndarray) -> dict[int, np.ndarray]:
    ids = np.unique(instances)
    ids = ids[ids > 0]
    centres = ndimage.center_of_mass(np.ones_like(instances), instances, ids)
    return dict(zip(ids.tolist(), map(np.array, centres), strict=True))


def test_halved_nuclei_stay_on_their_centroids_and_none_vanishes(consep_dir):
    full = import_consep256(consep_dir, "test")
    half = import_consep256(consep_dir, "test", resample=True)
    distances, vanished = [], 0
    for big, small in zip(full.labels, half.labels, strict=True):
        before, after = _centroids(big[..., 0]), _centroids(small[..., 0])
        for nucleus, centre in before.items():
            if nucleus not in after:
                vanished += 1
                continue
            # 40x pixel i covers [i - 0.5, i + 0.5]: on the half grid it sits at (i - 0.5) / 2
            distances.append(np.hypot(*(after[nucleus] - (centre - 0.5) / 2)))
    assert np.median(distances) < 0.2  # taking the top-left pixel gives 0.35
    assert vanished == 0
    for small in half.labels:  # each nucleus keeps one class
        pairs = np.unique(small.reshape(-1, 2), axis=0)
        assert len(np.unique(pairs[:, 0])) == len(pairs)


def test_halving_keeps_thin_nuclei_and_refuses_odd_sizes():
    labels = np.zeros((1, 8, 8, 2), np.int32)
    labels[0, 1, :, :] = (1, 2)  # a one-pixel-thin nucleus on an odd row
    labels[0, 4:6, 4:6] = (2, 3)  # a 2 x 2 block
    labels[0, 7, 7] = (3, 1)  # one pixel, alone in its block
    halved = halve_labels(labels)
    assert halved.shape == (1, 4, 4, 2)
    assert set(np.unique(halved[0, ..., 0])) == {0, 1, 2, 3}
    assert np.all(halved[0, 2, 2] == (2, 3))
    assert np.all(halved[0, 0, :, 1] == 2)  # the thin nucleus wins its ties with background
    with pytest.raises(ValueError, match="even height and width"):
        halve_labels(np.zeros((1, 5, 4, 2), np.int32))


def test_split_keeps_tiles_together(consep_train):
    train, val = split_by_source(consep_train, val_fraction=0.25, seed=1)
    sources = consep_train.patch_info["source"]
    assert set(sources[train]).isdisjoint(set(sources[val]))
    assert len(train) + len(val) == len(consep_train)
    assert 0.2 <= len(val) / len(consep_train) <= 0.4


def test_tile_names_and_bad_input(tmp_path, consep_dir):
    assert tile_of("train_12_004") == "train_12"
    with pytest.raises(ValueError, match="does not read"):
        tile_of("patch")
    with pytest.raises(ValueError, match="split must be one of"):
        import_consep256(consep_dir, "val")
    with pytest.raises(FileNotFoundError, match="labels.npz: file not found"):
        import_consep256(tmp_path, "train")
