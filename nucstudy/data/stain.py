"""Stain normalisation: bring an image's colours to those a model was trained on.

Reinhard et al. (2001, "Color transfer between images") match the mean and standard
deviation of each channel of a perceptual colour space to a reference. Here the space is
CIELAB (``skimage.color``); the reference is measured on the model's training images by
:func:`stain_reference`, and :func:`reinhard_normalise` applies it to any image. Stain
*augmentation* during training (albumentations' ``HEStain``) is set in
:mod:`nucstudy.data.augment`; this module changes images at test time only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import lab2rgb, rgb2lab

__all__ = ["StainReference", "reinhard_normalise", "stain_reference"]


@dataclass(frozen=True)
class StainReference:
    """Per-channel CIELAB statistics of a set of images.

    Attributes:
        mean: (L, a, b) means.
        std: (L, a, b) standard deviations.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _check_rgb(images: np.ndarray) -> None:
    if images.ndim < 3 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected ... x H x W x 3 uint8 RGB, got {images.shape} {images.dtype}")


def stain_reference(images: np.ndarray, max_images: int = 64, seed: int = 0) -> StainReference:
    """The CIELAB statistics of ``images`` (N x H x W x 3 or H x W x 3 uint8 RGB).

    At most ``max_images`` of them, drawn with ``seed``, are measured (the statistics of a
    few dozen patches are those of the whole set to a few per cent).
    """
    _check_rgb(images)
    images = images[None] if images.ndim == 3 else images
    if len(images) == 0:
        raise ValueError("stain_reference needs at least one image")
    if len(images) > max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(len(images), max_images, False))
        images = images[chosen]
    lab = rgb2lab(np.asarray(images)).reshape(-1, 3)
    mean, std = lab.mean(axis=0), lab.std(axis=0)
    return StainReference(tuple(map(float, mean)), tuple(map(float, std)))


def reinhard_normalise(
    image: np.ndarray, reference: StainReference, source: StainReference | None = None
) -> np.ndarray:
    """H x W x 3 uint8 RGB -> the same image with ``reference``'s CIELAB mean and spread.

    Args:
        image: the image to normalise.
        reference: the statistics to bring it to (those of a model's training images).
        source: the statistics the image is taken to have; None measures them on ``image``.
            Giving the statistics of a whole image normalises its tiles one by one exactly
            as the whole image would be, without seams.

    A channel with no spread (a flat image) is shifted to the reference mean only.
    """
    _check_rgb(image)
    lab = rgb2lab(image)
    if source is None:
        mean, std = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0)
    else:
        mean, std = np.asarray(source.mean), np.asarray(source.std)
    gain = np.divide(reference.std, std, out=np.ones(3), where=std > 1e-6)
    lab = (lab - mean) * gain + np.asarray(reference.mean)
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    rgb = lab2rgb(lab)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
