"""The synthetic H&E generator."""

import dataclasses

import numpy as np
import pytest

from nucstudy.data import synthetic_conic, validate_labels
from nucstudy.data.classes import CONIC, CONSEP, ClassScheme
from nucstudy.data.synthetic import MORPHOLOGIES


@pytest.fixture(scope="module")
def many():
    return synthetic_conic(48, seed=11)


def test_layout_and_labels_are_valid(synthetic_small):
    d = synthetic_small
    assert d.images.shape == (8, 256, 256, 3) and d.images.dtype == np.uint8
    assert d.labels.shape == (8, 256, 256, 2) and d.labels.dtype == np.int32
    assert d.mpp == 0.5 and d.scheme is CONIC
    validate_labels(d.labels, CONIC)
    for inst in d.labels[..., 0]:
        ids = np.unique(inst)
        assert np.array_equal(ids, np.arange(ids.size))  # contiguous 0..n


def test_deterministic_and_independent_of_n(synthetic_small):
    again = synthetic_conic(3, seed=3)
    assert np.array_equal(again.images, synthetic_small.images[:3])
    assert np.array_equal(again.labels, synthetic_small.labels[:3])
    other = synthetic_conic(1, seed=4)
    assert not np.array_equal(other.images[0], synthetic_small.images[0])


def test_sources_group_patches(synthetic_small):
    sources = synthetic_small.patch_info["source"].tolist()
    assert sources[:4] == [sources[0]] * 4 and sources[4] != sources[0]
    assert synthetic_conic(6, seed=3, patches_per_source=2).patch_info["source"].nunique() == 3


def test_every_class_occurs_and_frequencies_are_skewed_like_conic(many):
    totals = many.counts.sum(axis=0)
    share = dict(zip(CONIC.foreground_names, totals / totals.sum(), strict=True))
    assert all(value > 0 for value in share.values())
    assert 0.003 < share["neutrophil"] < 0.04 and 0.003 < share["eosinophil"] < 0.04
    assert share["epithelial"] == max(share.values()) or share["lymphocyte"] == max(share.values())
    assert min(share["epithelial"], share["lymphocyte"], share["connective"]) > 0.1
    per_patch = many.counts.sum(axis=1)
    assert 30 < per_patch.mean() < 160


def test_nuclei_touch(many):
    """Some nuclei share a border with another nucleus (4-neighbourhood)."""
    inst = many.labels[..., 0]
    right = (inst[:, :, 1:] != inst[:, :, :-1]) & (inst[:, :, 1:] > 0) & (inst[:, :, :-1] > 0)
    below = (inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)
    touching_patches = (right.any(axis=(1, 2)) | below.any(axis=(1, 2))).sum()
    assert touching_patches >= len(inst) // 2


def test_looks_like_he(many):
    """Nuclei are darker and bluer than the tissue around them; stroma is pink."""
    images = many.images.astype(np.float64)
    nuclei = many.labels[..., 0] > 0
    nucleus_rgb = images[nuclei].mean(axis=0)
    tissue_rgb = images[~nuclei].mean(axis=0)
    assert nucleus_rgb.sum() < 0.75 * tissue_rgb.sum()
    assert nucleus_rgb[2] > nucleus_rgb[0] and nucleus_rgb[2] > nucleus_rgb[1]  # purple-blue
    assert tissue_rgb[0] > tissue_rgb[1] and tissue_rgb[2] > tissue_rgb[1]  # pink: G lowest


def test_class_looks_differ(many):
    """Lymphocytes are small and dark, connective nuclei elongated, epithelial ones large."""
    from skimage.measure import regionprops

    props = {name: [] for name in MORPHOLOGIES}
    for k in range(12):
        inst, cls = many.labels[k, ..., 0], many.labels[k, ..., 1]
        gray = many.images[k].mean(axis=2)
        for region in regionprops(inst, intensity_image=gray):
            name = CONIC.names[cls[region.coords[0][0], region.coords[0][1]]]
            props[name].append((region.area, region.eccentricity, region.intensity_mean))
    stats = {name: np.median(np.array(v), axis=0) for name, v in props.items() if v}
    assert stats["lymphocyte"][0] < stats["epithelial"][0]
    assert stats["connective"][1] > stats["lymphocyte"][1]
    assert stats["lymphocyte"][2] < stats["epithelial"][2]


def test_consep_scheme_labels(synthetic_small):
    d = synthetic_conic(4, seed=3, scheme="consep")
    assert d.scheme is CONSEP
    validate_labels(d.labels, CONSEP)
    assert np.array_equal(d.images, synthetic_small.images[:4])
    assert d.counts.shape == (4, 4) and d.counts[:, 0].sum() == 0  # no "other"


def test_other_sizes_and_bad_arguments():
    d = synthetic_conic(2, size=128, seed=1)
    assert d.images.shape == (2, 128, 128, 3)
    with pytest.raises(ValueError, match="size >= 32"):
        synthetic_conic(2, size=16)
    other = ClassScheme("pannuke", ("background", "neoplastic"), ((0, 0, 0), (1, 2, 3)))
    with pytest.raises(ValueError, match="cannot label scheme 'pannuke'"):
        synthetic_conic(1, scheme=other)


def test_nuclei_are_one_piece_unless_partly_hidden(many):
    """Lobed nuclei are joined by a strand; only occlusion may split a nucleus."""
    from scipy import ndimage

    pieces = []
    for inst in many.labels[:16, ..., 0]:
        for ident in range(1, inst.max() + 1):
            pieces.append(ndimage.label(inst == ident)[1])
    assert np.mean(np.array(pieces) == 1) > 0.97


def test_mix_synthetic_adds_patches_to_the_training_side_only(synthetic_small):
    from nucstudy.data import concat_data, mix_synthetic

    real = synthetic_conic(6, size=64, seed=5, scheme="consep")
    train_idx = np.array([0, 1, 2, 3])
    mixed, mixed_train = mix_synthetic(real, train_idx, share=1.5, seed=2)
    assert len(mixed) == 6 + 6 and mixed.scheme is real.scheme
    assert mixed_train.tolist() == [0, 1, 2, 3, *range(6, 12)]
    assert np.array_equal(mixed.images[:6], real.images)  # validation patches 4, 5 unchanged
    assert np.array_equal(mixed.images[6:], synthetic_conic(6, 64, 2, "consep").images)
    assert mixed.counts.shape == (12, CONSEP.n_classes - 1)
    same, same_train = mix_synthetic(real, train_idx, share=0.0)
    assert len(same) == 6 and same_train.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="0.5 um/px"):
        mix_synthetic(dataclasses.replace(real, mpp=0.25), train_idx, 1.0)
    with pytest.raises(ValueError, match="class scheme, resolution or patch size"):
        concat_data([real, synthetic_small])
