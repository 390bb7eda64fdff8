"""Augmentation, the Dataset and the loader."""

import json

import numpy as np
import pytest
import torch

from nucstudy.data import (
    NucleiDataset,
    augment_pair,
    build_augmentation,
    make_loader,
    make_targets,
)
from nucstudy.engine.trainer import Trainer
from nucstudy.study.presets import preset


def test_augmentation_keeps_ids_and_classes(synthetic_small):
    transform = build_augmentation(crop_size=192)
    image, label = synthetic_small.images[0], synthetic_small.labels[0]
    pairs = dict(zip(label[..., 0].ravel(), label[..., 1].ravel(), strict=True))
    changed = 0
    for seed in range(6):
        out_image, out_label = augment_pair(transform, image, label, seed)
        assert out_image.shape == (192, 192, 3) and out_image.dtype == np.uint8
        assert out_label.shape == (192, 192, 2) and out_label.dtype == np.int32
        for inst, cls in zip(out_label[..., 0].ravel(), out_label[..., 1].ravel(), strict=True):
            assert pairs[inst] == cls  # nearest interpolation: no new ids, classes kept
        changed += not np.array_equal(out_label, label[:192, :192])
    assert changed >= 5


def test_stain_augmentation_changes_colours_only_and_reproducibly(synthetic_small):
    import albumentations as A

    plain, stained = build_augmentation(), build_augmentation(stain=True)
    assert any(isinstance(step, A.HEStain) for step in stained.transforms)
    assert not any(isinstance(step, A.HEStain) for step in plain.transforms)
    image, label = synthetic_small.images[0], synthetic_small.labels[0]
    differs = 0
    for seed in range(4):
        a_image, a_label = augment_pair(plain, image, label, seed)
        b_image, b_label = augment_pair(stained, image, label, seed)
        again = augment_pair(stained, image, label, seed)
        assert np.array_equal(again[0], b_image)
        assert np.array_equal(b_label, a_label)  # geometry untouched by the stain step
        differs += not np.array_equal(a_image, b_image)
    assert differs >= 1


def test_strong_stain_augmentation_recolours_every_patch_and_keeps_geometry(synthetic_small):
    import albumentations as A

    default = build_augmentation(stain=True)
    strong = build_augmentation(stain=True, stain_strength="strong")
    (stain_step,) = [step for step in strong.transforms if isinstance(step, A.HEStain)]
    assert stain_step.p == 1.0 and stain_step.intensity_scale_range == (0.5, 1.5)
    assert any(isinstance(step, A.RandomBrightnessContrast) for step in strong.transforms)
    assert any(isinstance(step, A.RandomGamma) for step in strong.transforms)
    assert not any(isinstance(step, A.RandomGamma) for step in default.transforms)
    image, label = synthetic_small.images[0], synthetic_small.labels[0]
    plain = build_augmentation()
    for seed in range(4):
        a_image, a_label = augment_pair(plain, image, label, seed)
        b_image, b_label = augment_pair(strong, image, label, seed)
        assert np.array_equal(b_label, a_label)  # the colour steps leave the geometry alone
        assert not np.array_equal(a_image, b_image)  # every patch is recoloured
        assert np.array_equal(augment_pair(strong, image, label, seed)[0], b_image)
    with pytest.raises(ValueError, match="stain_strength must be 'default' or 'strong'"):
        build_augmentation(stain=True, stain_strength="wild")


def test_blur_noise_and_grayscale_change_the_image_and_keep_the_geometry(synthetic_small):
    import albumentations as A

    image, label = synthetic_small.images[0], synthetic_small.labels[0]
    plain = build_augmentation()
    blurred = build_augmentation(extra=("blur_noise",))
    assert any(isinstance(step, A.GaussNoise) for step in blurred.transforms)
    gray = build_augmentation(extra=("grayscale",))
    changed = {"blur_noise": 0, "grayscale": 0}
    for seed in range(12):
        a_image, a_label = augment_pair(plain, image, label, seed)
        for name, transform in (("blur_noise", blurred), ("grayscale", gray)):
            b_image, b_label = augment_pair(transform, image, label, seed)
            assert np.array_equal(b_label, a_label)  # the geometry is the plain pipeline's
            changed[name] += not np.array_equal(a_image, b_image)
            if name == "grayscale" and not np.array_equal(a_image, b_image):
                assert np.array_equal(b_image[..., 0], b_image[..., 1])  # gray, 3 channels
    # each step has probability 0.2 to 0.5 of firing: a dozen patches see some, not all
    assert 0 < changed["blur_noise"] < 12 and 0 < changed["grayscale"] < 12
    with pytest.raises(ValueError, match="extra augmentations must be among"):
        build_augmentation(extra=("sharpen",))


def test_the_default_scale_range_is_the_configs():
    import inspect

    from nucstudy.study.experiment import SCALE_RANGE

    default = inspect.signature(build_augmentation).parameters["scale"].default
    assert default == SCALE_RANGE == tuple(preset("paper").scale_range)


def test_the_trainer_rescales_over_the_configs_range(synthetic_small):
    import albumentations as A

    config = preset("smoke", stain_augment=True, stain_strength="strong", scale_range=[0.5, 2.0])
    trainer = Trainer(config, data=synthetic_small)
    steps = trainer.train_set.augment.transforms
    (affine,) = [step for step in steps if isinstance(step, A.Affine)]
    assert affine.scale == {"x": (0.5, 2.0), "y": (0.5, 2.0)}
    assert any(isinstance(step, A.RandomGamma) for step in steps)
    gray = Trainer(config.replace(extra_augment=["grayscale"]), data=synthetic_small)
    assert any(isinstance(step, A.ToGray) for step in gray.train_set.augment.transforms)
    assert not any(isinstance(step, A.ToGray) for step in steps)


def test_augmentation_is_reproducible_per_seed(synthetic_small):
    transform = build_augmentation()
    a = augment_pair(transform, synthetic_small.images[1], synthetic_small.labels[1], 7)
    augment_pair(transform, synthetic_small.images[2], synthetic_small.labels[2], 8)
    b = augment_pair(transform, synthetic_small.images[1], synthetic_small.labels[1], 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_dataset_items(synthetic_small):
    item = NucleiDataset(synthetic_small)[3]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert torch.equal(item["np"], torch.from_numpy(synthetic_small.labels[3, ..., 0] > 0).long())
    assert item["hv"].shape == (2, 256, 256)
    assert torch.equal(item["tp"], torch.from_numpy(synthetic_small.labels[3, ..., 1]).long())
    assert int(item["index"]) == 3


def test_dataset_augments_per_epoch_reproducibly(synthetic_small):
    ds = NucleiDataset(synthetic_small, indices=[0, 1], augment=build_augmentation(), seed=1)
    first = ds[0]["image"]
    assert torch.equal(first, ds[0]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["image"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[0]["image"])


def test_loader_workers_draw_each_epochs_augmentation(synthetic_small):
    """Workers load what the main process would: every epoch its own augmentation (a
    persistent worker kept its first epoch's copy of the dataset, and so its draw)."""
    ds = NucleiDataset(synthetic_small, indices=[0, 1, 2, 3], augment=build_augmentation())

    def epochs(workers):
        loader = make_loader(ds, 2, num_workers=workers)
        images = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            images.append(torch.cat([batch["image"] for batch in loader]))
        return images

    in_process, in_workers = epochs(0), epochs(2)
    assert not torch.equal(in_process[0], in_process[1])
    for ours, theirs in zip(in_process, in_workers, strict=True):
        assert torch.equal(ours, theirs)


def test_loader_order_depends_on_seed_only(synthetic_small):
    ds = NucleiDataset(synthetic_small)

    def order(seed):
        return [
            int(i) for batch in make_loader(ds, 3, shuffle=True, seed=seed) for i in batch["index"]
        ]

    assert order(4) == order(4)
    assert sorted(order(4)) == list(range(8))
    assert order(4) != order(5)
    batch = next(iter(make_loader(ds, 4)))
    assert batch["image"].shape == (4, 3, 256, 256) and batch["hv"].shape == (4, 2, 256, 256)


def test_augmentation_steps_draw_independently(synthetic_small):
    """Each step has its own random stream: flips occur alone, few items come back unchanged."""
    transform = build_augmentation()
    image, label = synthetic_small.images[0], synthetic_small.labels[0]
    flips = {"h": np.fliplr(label), "v": np.flipud(label)}
    seen, unchanged = set(), 0
    for seed in range(120):
        _, out = augment_pair(transform, image, label, seed)
        for name, flipped in flips.items():
            if np.array_equal(out, flipped):
                seen.add(name)
        unchanged += np.array_equal(out, label)
    assert seen == {"h", "v"}  # a flip alone happens (only when the affine step is skipped)
    assert unchanged <= 120 * 0.05  # skipping all four steps: 0.5 * 0.5 * 0.2 * 0.2 = 1 %


def test_targets_are_computed_after_the_crop(synthetic_small):
    transform = build_augmentation(crop_size=96)
    dataset = NucleiDataset(synthetic_small, augment=transform, seed=0)
    item = dataset[0]
    assert item["image"].shape == (3, 96, 96) and item["hv"].shape == (2, 96, 96)
    label = item["label"].numpy()
    targets = make_targets(label[..., 0], label[..., 1])
    assert torch.equal(item["np"], torch.from_numpy(targets["np"].astype(np.int64)))
    assert torch.allclose(item["hv"], torch.from_numpy(targets["hv"]))


def test_a_run_with_the_crop_trains_on_crops(tmp_path):
    config = preset("smoke", device="cpu", crop_fraction=0.5, epochs=1)
    trainer = Trainer(config, run_dir=tmp_path, progress=False)
    assert trainer.crop == 32
    assert next(iter(trainer.loader))["image"].shape[-2:] == (32, 32)
    trainer.fit()
    assert json.loads((tmp_path / "env.json").read_text())["crop_px"] == 32


def test_keep_ratio_scales_both_axes_alike():
    image = np.full((64, 64, 3), 200, np.uint8)
    label = np.zeros((64, 64, 2), np.int32)
    label[24:40, 24:40] = (1, 2)  # a 16 px square nucleus

    def aspect_ratios(keep_ratio):
        transform = build_augmentation(scale=(0.6, 1.6), rotate=(0, 0), keep_ratio=keep_ratio)
        ratios = []
        for seed in range(40):
            _, out = augment_pair(transform, image, label, seed)
            rows, cols = np.nonzero(out[..., 0])
            if rows.size:
                ratios.append((np.ptp(rows) + 1) / (np.ptp(cols) + 1))
        return np.array(ratios)

    assert np.abs(aspect_ratios(True) - 1).max() <= 0.15  # one pixel of rounding
    assert np.abs(aspect_ratios(False) - 1).max() > 0.3


def test_rare_class_weights_by_hand():
    from nucstudy.data import rare_class_weights

    maps = np.zeros((4, 2, 2), np.int64)
    maps[0, 0, 0] = 1  # class 1 in patches 0, 1, 2: share 3/4
    maps[1, 0, 0] = 1
    maps[2, 0, 0] = 1
    maps[2, 1, 1] = 2  # class 2 in patch 2 only: share 1/4
    weights = rare_class_weights(maps, n_classes=3)
    common = 1 / np.sqrt(3 / 4)
    assert weights == pytest.approx([common, common, 2.0, 1.0])  # patch 3: no nuclei
    with pytest.raises(ValueError, match="class ids"):
        rare_class_weights(maps + 3, n_classes=3)


def test_rare_sampling_draws_rare_patches_more_often(synthetic_small):
    dataset = NucleiDataset(synthetic_small)
    weights = np.ones(len(dataset))
    weights[0] = 50.0
    loader = make_loader(dataset, 4, shuffle=True, seed=0, sample_weights=weights)
    drawn = np.concatenate([batch["index"].numpy() for batch in loader])
    assert len(drawn) == len(dataset) and np.count_nonzero(drawn == 0) > 2
    again = np.concatenate(
        [
            batch["index"].numpy()
            for batch in make_loader(dataset, 4, shuffle=True, seed=0, sample_weights=weights)
        ]
    )
    assert np.array_equal(drawn, again)
