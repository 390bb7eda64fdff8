"""A torch Dataset of patches and their NP/HV/TP targets, and a seeded DataLoader factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from nucstudy.data.augment import augment_pair
from nucstudy.data.conic import ConicData
from nucstudy.data.targets import make_targets


class NucleiDataset(Dataset):
    """Patches of a :class:`ConicData` with the targets of the three heads.

    Each item is a dict of tensors:

    - ``"image"``: 3 x H x W float32 in [0, 1] (RGB);
    - ``"label"``: H x W x 2 int32, the (augmented) instance and class maps, for scoring;
    - ``"index"``: the patch's index in ``data``;
    - the training targets of ``targets`` (by default :func:`map_targets`: ``"np"``, ``"hv"``
      and ``"tp"``; a method's own, see :mod:`nucstudy.engine.methods`).

    Augmentation is seeded per item from (``seed``, epoch, index), so an item is the same in
    every run and whatever process or worker loads it; call :meth:`set_epoch` at the start of
    each epoch to draw new augmentations (before the loader's workers start: a worker holds
    the copy of the dataset it started with, so :func:`make_loader` starts them every epoch).

    Args:
        data: the patches.
        indices: which patches (default all).
        augment: from :func:`~nucstudy.data.augment.build_augmentation`, or None (validation).
        seed: base seed of the augmentation.
        targets: the training targets of one augmented H x W x 2 label map (default
            :func:`map_targets`).
    """

    def __init__(
        self,
        data: ConicData,
        indices: np.ndarray | list[int] | None = None,
        augment: A.Compose | None = None,
        seed: int = 0,
        targets: Callable[[np.ndarray], dict[str, Any]] | None = None,
    ) -> None:
        self.data = data
        self.indices = np.arange(len(data)) if indices is None else np.asarray(indices, np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(data)):
            raise ValueError(f"indices must lie in 0..{len(data) - 1}")
        self.augment = augment
        self.seed = seed
        self.targets = targets if targets is not None else map_targets
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of ``epoch`` (no effect without augmentation)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, item: int) -> dict[str, Any]:
        index = int(self.indices[item])
        image = np.asarray(self.data.images[index])
        label = np.asarray(self.data.labels[index], dtype=np.int32)
        if self.augment is not None:
            seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
            image, label = augment_pair(self.augment, image, label, seed)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
            / 255.0,
            **self.targets(label),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "index": torch.tensor(index),
        }


def map_targets(label: np.ndarray) -> dict[str, torch.Tensor]:
    """The NP/HV/TP targets of one H x W x 2 label map as tensors (see ``make_targets``):
    ``"np"`` H x W int64 (1 on nuclei), ``"hv"`` 2 x H x W float32 (channel 0 horizontal,
    1 vertical), ``"tp"`` H x W int64 class ids."""
    maps = make_targets(label[..., 0], label[..., 1])
    return {
        "np": torch.from_numpy(maps["np"].astype(np.int64)),
        "hv": torch.from_numpy(maps["hv"]),
        "tp": torch.from_numpy(maps["tp"]),
    }


def make_loader(
    dataset: NucleiDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    sample_weights: np.ndarray | None = None,
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (and the epoch count).

    Args:
        dataset: the dataset.
        batch_size: patches per batch.
        shuffle: shuffle the order each epoch, from a generator seeded with ``seed``.
        seed: seed of the shuffling generator.
        num_workers: loader processes (0 loads in the main process).
        drop_last: drop a last incomplete batch.
        collate_fn: how items become a batch (default: every entry stacked).
        sample_weights: one weight per item: each epoch then draws ``len(dataset)`` items
            with replacement, in proportion to the weights, from the same generator
            (instead of ``shuffle``; see :mod:`nucstudy.data.sampling`).
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if sample_weights is not None:
        if len(sample_weights) != len(dataset):
            raise ValueError(
                f"{len(sample_weights)} sample weights for a dataset of {len(dataset)} items"
            )
        sampler = WeightedRandomSampler(
            torch.as_tensor(sample_weights, dtype=torch.float64),
            num_samples=len(dataset),
            replacement=True,
            generator=generator,
        )
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        collate_fn=collate_fn,
        # workers start anew each epoch with the dataset as set_epoch left it: a persistent
        # worker keeps its first epoch's copy, and so that epoch's augmentation, for good
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
