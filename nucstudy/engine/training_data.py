"""What a training run learns from: its patches, their crops and augmentation, its batches.

:func:`training_split` holds out the validation patches by source image and adds the
config's synthetic patches to the training side only; :func:`crop_side` is the side of the
random training crop and :func:`training_augmentation` the config's augmentation;
:func:`training_loader` draws the batches: shuffled by a seeded generator, or towards the
patches of rare classes (``sampling="rare"``), or, in one of several processes, that
process's share of every epoch. Everything follows from the config's seed, so two runs of
one config see the same patches in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from nucstudy.data import (
    ConicData,
    NucleiDataset,
    build_augmentation,
    make_loader,
    mix_synthetic,
    rare_class_weights,
    split_by_source,
)
from nucstudy.models import SIZE_MULTIPLE

if TYPE_CHECKING:  # the study's config reaches the engine as an object
    import albumentations as A

    from nucstudy.study.experiment import ExperimentConfig


def training_split(
    config: ExperimentConfig, data: ConicData
) -> tuple[ConicData, np.ndarray, np.ndarray]:
    """The patches a run trains and validates on.

    ``config.val_fraction`` of the patches validate, whole source images at a time
    (:func:`~nucstudy.data.split_by_source`, seeded by ``config.seed``); with 0 every source
    image trains and nothing validates. ``config.synthetic_mix`` synthetic patches per
    training patch are then added to the training side only
    (:func:`~nucstudy.data.mix_synthetic`).

    Returns:
        (the data, with the synthetic patches appended where the config mixes them in; the
        training indices; the validation indices), indices as int64 arrays into that data.
    """
    if config.val_fraction > 0:
        train_idx, val_idx = split_by_source(data, config.val_fraction, config.seed)
    else:  # every source image trains; nothing validates
        train_idx, val_idx = np.arange(len(data)), np.arange(0)
    if config.synthetic_mix:
        data, train_idx = mix_synthetic(data, train_idx, config.synthetic_mix, config.seed)
    return data, train_idx, val_idx


def crop_side(config: ExperimentConfig, patch_side: int) -> int | None:
    """The side in pixels of the random training crop of ``config`` on patches of this side.

    ``crop_size`` as given, or ``crop_fraction`` of the side rounded down to a multiple of
    :data:`nucstudy.models.SIZE_MULTIPLE` (at least one multiple); None: no crop.

    Raises:
        ValueError: the crop is larger than the patch.
    """
    if config.crop_fraction is not None:
        side = int(config.crop_fraction * patch_side) // SIZE_MULTIPLE * SIZE_MULTIPLE
        return max(side, SIZE_MULTIPLE)
    if config.crop_size is not None and config.crop_size > patch_side:
        raise ValueError(
            f"crop_size {config.crop_size} is larger than the {patch_side} px patches; "
            "use a smaller crop_size or crop_fraction"
        )
    return config.crop_size


def training_augmentation(config: ExperimentConfig, crop: int | None) -> A.Compose | None:
    """The config's augmentation (:func:`~nucstudy.data.build_augmentation`) ending in a
    random crop of side ``crop`` px (None: no crop); None where the config does not augment."""
    if not config.augment:
        return None
    return build_augmentation(
        crop,
        scale=tuple(config.scale_range),
        stain=config.stain_augment,
        stain_strength=config.stain_strength,
        extra=tuple(config.extra_augment),
        keep_ratio=config.keep_ratio,
    )


def training_loader(
    config: ExperimentConfig,
    train_set: NucleiDataset,
    n_classes: int,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]],
    world_size: int,
    workers: int,
    device: torch.device,
) -> DataLoader:
    """The batches of a training run in this process.

    Each process loads ``config.batch_size // world_size`` patches a batch (at least one).
    One process: every epoch in an order drawn by the loader's generator, seeded with
    ``config.seed`` (reseed ``loader.generator`` at each epoch for an order of its own), or
    with ``config.sampling == "rare"`` patches drawn with replacement in proportion to
    :func:`~nucstudy.data.rare_class_weights`; a last incomplete batch is dropped where there
    is more than one batch. Several processes (``world_size`` > 1): a
    :class:`~torch.utils.data.DistributedSampler` (``loader.sampler``; call its
    ``set_epoch`` at each epoch) gives each process its share of every shuffled epoch (rare
    sampling is for one process only).

    Args:
        config: the run's config.
        train_set: the training patches.
        n_classes: classes of the scheme, background included (for rare sampling).
        collate_fn: how items become a batch (the method's).
        world_size: processes training together.
        workers: loader processes (0 loads in the main process).
        device: this process's device (batches are pinned for CUDA).
    """
    per_rank = max(1, config.batch_size // world_size)
    if world_size > 1:
        sampler = DistributedSampler(train_set, shuffle=True, seed=config.seed, drop_last=True)
        return DataLoader(
            train_set,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_fn,
            persistent_workers=False,  # so that each epoch's workers see its set_epoch
            pin_memory=device.type == "cuda",
        )
    weights = None
    if config.sampling == "rare":
        class_maps = train_set.data.labels[train_set.indices, ..., 1]
        weights = rare_class_weights(class_maps, n_classes)
    return make_loader(
        train_set,
        per_rank,
        shuffle=True,
        seed=config.seed,
        num_workers=workers,
        drop_last=len(train_set) > per_rank,
        collate_fn=collate_fn,
        sample_weights=weights,
    )
