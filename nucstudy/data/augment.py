"""Training augmentation (albumentations), the paper's list.

Horizontal and vertical flips, random rescale and rotation (one affine warp), a random crop
and random HSV jitter. The label map (instance and class channels) is warped with nearest
interpolation, so instance ids and class ids survive unchanged; areas brought in from outside
the patch are filled with white glass in the image and background in the labels. Stain
augmentation (albumentations' ``HEStain``: the image's haematoxylin and eosin re-mixed with
another stain matrix and intensity) is an option beyond the paper's list, for tissue and
stains the training set does not cover; its ``"strong"`` form re-mixes every patch over
albumentations' widest documented ranges and adds brightness, contrast and gamma changes.
Two more options beyond the paper, also for unseen tissue (:data:`EXTRA_AUGMENTS`): blur
and noise (HoVer-Net's own training pipeline has both), and grayscale patches, which leave
the network only brightness and shape to tell nuclei by.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

GLASS_RGB = (242, 240, 245)  # the colour of an empty slide, used to fill warped-in corners
#: The default range of the random rescale factor (the paper gives none).
SCALE_RANGE = (0.8, 1.25)
#: The strengths of stain augmentation (see :func:`build_augmentation`).
STAIN_STRENGTHS = ("default", "strong")
#: The optional augmentations beyond the paper's list and stain (see :func:`build_augmentation`).
EXTRA_AUGMENTS = ("blur_noise", "grayscale")


def build_augmentation(
    crop_size: int | None = None,
    scale: tuple[float, float] = SCALE_RANGE,
    rotate: tuple[float, float] = (-180.0, 180.0),
    hsv: tuple[int, int, int] = (8, 20, 12),
    stain: bool = False,
    stain_strength: str = "default",
    extra: tuple[str, ...] = (),
    keep_ratio: bool = False,
) -> A.Compose:
    """The training augmentation pipeline.

    Args:
        crop_size: side of the random square crop in pixels; ``None`` keeps the full patch.
        scale: range of the random rescale factor.
        rotate: range of the random rotation in degrees.
        hsv: maximum shifts of hue, saturation and value (OpenCV 8-bit HSV units).
        stain: add ``HEStain`` before the HSV jitter: one of its preset stain matrices at
            random, stain intensities scaled by 0.7 to 1.3 and shifted by -0.2 to 0.2, with
            probability 0.5 (albumentations' defaults).
        stain_strength: with ``stain``, ``"default"`` (above) or ``"strong"``: HEStain on
            every patch with intensities scaled by 0.5 to 1.5 and shifted by -0.3 to 0.3 (the
            widest ranges albumentations documents), then brightness and contrast changed by
            up to 30 % and gamma 0.7 to 1.5, each with probability 0.8: sections paler,
            darker or more saturated than the training set's.
        extra: any of :data:`EXTRA_AUGMENTS`, applied after the colour changes:
            ``"blur_noise"``: a Gaussian (3 or 5 px) or median (3 or 5 px) blur with
            probability 0.3, then Gaussian noise (standard deviation 2 % to 8 % of the
            range) with probability 0.3; ``"grayscale"``: the patch turned to gray (kept as
            three channels) with probability 0.2.
        keep_ratio: rescale x and y by one factor; otherwise (albumentations' default)
            each axis draws its own factor from ``scale``, which stretches nuclei.

    Returns:
        An albumentations Compose taking ``image`` (H x W x 3 uint8) and ``mask``
        (H x W x 2 int32, [instance, class]) and returning both augmented.
    """
    steps: list[A.BasicTransform] = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(
            scale=scale,
            keep_ratio=keep_ratio,
            rotate=rotate,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=GLASS_RGB,
            fill_mask=0,
            p=0.8,
        ),
    ]
    if crop_size is not None:
        steps.append(A.RandomCrop(height=crop_size, width=crop_size))
    if stain_strength not in STAIN_STRENGTHS:
        raise ValueError(
            f"stain_strength must be {' or '.join(map(repr, STAIN_STRENGTHS))}, "
            f"got {stain_strength!r}"
        )
    if stain and stain_strength == "strong":
        steps += [
            A.HEStain(
                method="random_preset",
                intensity_scale_range=(0.5, 1.5),
                intensity_shift_range=(-0.3, 0.3),
                p=1.0,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8),
            A.RandomGamma(gamma_limit=(70, 150), p=0.8),
        ]
    elif stain:
        steps.append(A.HEStain(method="random_preset", p=0.5))
    steps.append(
        A.HueSaturationValue(
            hue_shift_limit=hsv[0], sat_shift_limit=hsv[1], val_shift_limit=hsv[2], p=0.8
        )
    )
    unknown = sorted(set(extra) - set(EXTRA_AUGMENTS))
    if unknown:
        raise ValueError(f"extra augmentations must be among {EXTRA_AUGMENTS}, got {unknown}")
    if "blur_noise" in extra:
        steps += [
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MedianBlur(blur_limit=(3, 5))], p=0.3),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        ]
    if "grayscale" in extra:
        steps.append(A.ToGray(num_output_channels=3, p=0.2))
    return A.Compose(steps)


def augment_pair(
    transform: A.Compose, image: np.ndarray, label: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` to one image and its label map, reproducibly for ``seed``.

    Args:
        transform: from :func:`build_augmentation`.
        image: H x W x 3 uint8 RGB.
        label: H x W x 2 int32, [instance, class].
        seed: seeds this call alone, so the result does not depend on what ran before.

    Returns:
        The augmented image (h x w x 3 uint8) and label map (h x w x 2 int32).
    """
    _seed_each(transform, seed)
    out = transform(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(label))
    return out["image"], out["mask"].astype(np.int32, copy=False)


def _seed_each(transform: A.Compose, seed: int) -> None:
    """Seed the pipeline and give each of its steps a seed of its own.

    ``Compose.set_random_seed`` hands one seed to every step, so all steps would make the
    same first draw (both flips together, every step applied or skipped together).
    """
    transform.set_random_seed(seed)
    children = np.random.SeedSequence(seed).spawn(len(transform.transforms))
    for step, child in zip(transform.transforms, children, strict=True):
        step.set_random_seed(int(child.generate_state(1)[0]))
