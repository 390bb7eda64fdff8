"""A run's config in words, as a reader of the book reads it.

The pages and the departures table describe runs by what their configs say: which network
(:func:`network_words`: ``"SE-Res U-Net, 32 channels, 5 levels"``, never the bare
``seresunet`` of a preset that leaves the widths at their defaults), which loss
(:func:`loss_words`: the HV terms by name, not ``hv_mse 2``), which augmentation
(:func:`augmentation_words`, ranges as ``-180 to 180 deg``; :func:`stain_words` and
:func:`extra_words` read from the transforms the augmentation builds). Options a config
leaves out are read from the defaults of the network's or the augmentation's constructor,
so the words follow the code.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import albumentations as A

from nucstudy.data.augment import build_augmentation
from nucstudy.models import MODELS

if TYPE_CHECKING:
    from nucstudy.study.experiment import ExperimentConfig

#: The loss terms a config can weigh, in words (``ExperimentConfig.loss_weights``' keys).
TERM_WORDS = {
    "np_ce": "the NP cross-entropy",
    "np_dice": "the NP Dice loss",
    "hv_mse": "the HV mean squared error",
    "hv_msge": "HoVer-Net's HV gradient loss (MSGE)",
    "tp_ce": "the TP cross-entropy",
    "tp_dice": "the TP Dice loss",
}
#: The losses a config can name, in words.
LOSS_WORDS = {
    "paper": "the paper's (Dice: mean over classes)",
    "hovernet": "HoVer-Net's (adds MSGE; Dice summed over classes)",
    "maskrcnn": "torchvision's Mask R-CNN losses",
}
#: Networks as a reader names them.
NETWORK_NAMES = {"seresunet": "SE-Res U-Net", "hovernet": "HoVer-Net", "maskrcnn": "Mask R-CNN"}


def model_options(model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A network's constructor options: its defaults (``n_types`` aside) updated with the
    ``options`` a config gives; an unknown network gives ``options`` alone."""
    if model not in MODELS:
        return dict(options)
    parameters = inspect.signature(MODELS[model]).parameters
    defaults = {
        name: p.default
        for name, p in parameters.items()
        if name != "n_types" and p.default is not inspect.Parameter.empty
    }
    return {**defaults, **options}


def network_words(model: str, options: Mapping[str, Any]) -> str:
    """A network and its size in words.

    ``("seresunet", {})`` -> ``"SE-Res U-Net, 32 channels, 5 levels"`` (the constructor's
    defaults); ``("maskrcnn", {"backbone": "resnet18", "upscale": 1.0,
    "box_batch_size_per_image": 256})`` -> ``"Mask R-CNN, ResNet-18 backbone, no upscaling,
    256 RoIs sampled per image"``; HoVer-Net by its name; another network by its name and
    options.
    """
    values = model_options(model, options)
    name = NETWORK_NAMES.get(model, model)
    if model == "seresunet":
        parts = [f"{values['width']} channels", f"{values['depth']} levels"]
        parts += [] if values["use_se"] else ["no SE blocks"]
        parts += [] if values["use_ca"] else ["no Coordinate Attention"]
        return ", ".join([name, *parts])
    if model == "maskrcnn":
        backbone = str(values["backbone"]).replace("resnet", "ResNet-")
        parts = [f"{backbone} backbone"]
        if values.get("upscale") is not None:
            scale = float(values["upscale"])
            parts.append("no upscaling" if scale == 1 else f"images upscaled x{scale:g}")
        parts.append(f"{values['box_batch_size_per_image']} RoIs sampled per image")
        return ", ".join([name, *parts])
    if model == "hovernet" or not options:
        return name
    return f"{name} " + ", ".join(f"{key} {value}" for key, value in options.items())


def span_words(values: Sequence[float], unit: str = "") -> str:
    """``(-180.0, 180.0)`` -> ``"-180 to 180"`` (and the unit, if any): a range as a reader
    writes it, without the trailing ``.0`` of a float."""
    low, high = values
    return f"{low:g} to {high:g}" + (f" {unit}" if unit else "")


def rate_words(rate: float) -> str:
    """A learning rate as the paper writes it: ``0.0003`` -> ``"3e-4"``, ``0.0025`` ->
    ``"2.5e-3"``; a rate of 0.1 or more as it is (``"0.1"``)."""
    if rate == 0 or rate >= 0.1:
        return f"{rate:g}"
    mantissa, exponent = f"{rate:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def augmentation_words(config: ExperimentConfig) -> str:
    """Flips, rescale, rotation and HSV shifts of a config, ranges from the augmentation's
    defaults where the config does not set them; ``"none"`` without augmentation."""
    if not config.augment:
        return "none"
    defaults = inspect.signature(build_augmentation).parameters
    hue, saturation, value = defaults["hsv"].default
    return (
        f"flips; rescale x{span_words(config.scale_range)}"
        + (" (aspect ratio kept)" if config.keep_ratio else "")
        + f"; rotation {span_words(defaults['rotate'].default, 'deg')} (p 0.8); HSV shifts "
        f"up to hue {hue}, saturation {saturation}, value {value} (OpenCV units, p 0.8)"
    )


def _chance(transform: A.BasicTransform) -> str:
    """``" (p 0.3)"``; empty for a transform applied to every patch."""
    return "" if transform.p == 1 else f" (p {transform.p:g})"


def transform_words(transform: A.BasicTransform) -> str:
    """One of the transforms that stain or extra augmentation adds, in words, its ranges and
    probability read from the transform itself: ``HEStain(intensity_scale_range=(0.5, 1.5),
    ...)`` -> ``"HEStain (random preset stain matrices, intensity x0.5-1.5, shift +-0.3, every
    patch)"``; a transform not named here by its class name."""
    if isinstance(transform, A.HEStain):
        (scale_low, scale_high), (_, shift) = (
            transform.intensity_scale_range,
            transform.intensity_shift_range,
        )
        chance = "every patch" if transform.p == 1 else f"p {transform.p:g}"
        return (
            f"HEStain (random preset stain matrices, intensity x{scale_low:g}-{scale_high:g}, "
            f"shift +-{shift:g}, {chance})"
        )
    if isinstance(transform, A.RandomBrightnessContrast):
        brightness, contrast = transform.brightness_limit[1], transform.contrast_limit[1]
        if brightness == contrast:
            limits = f"brightness and contrast +-{brightness * 100:g} %"
        else:
            limits = f"brightness +-{brightness * 100:g} %, contrast +-{contrast * 100:g} %"
        return limits + _chance(transform)
    if isinstance(transform, A.RandomGamma):
        low, high = transform.gamma_limit
        return f"gamma {low / 100:g}-{high / 100:g}" + _chance(transform)
    if isinstance(transform, A.OneOf):  # its transforms' own p are weights, not chances
        return " or ".join(map(transform_words, transform.transforms)) + _chance(transform)
    if isinstance(transform, (A.GaussianBlur, A.MedianBlur)):
        low, high = transform.blur_limit
        kind = "Gaussian" if isinstance(transform, A.GaussianBlur) else "median"
        return f"{kind} blur ({low}-{high} px)"
    if isinstance(transform, A.GaussNoise):
        return "Gaussian noise" + _chance(transform)
    if isinstance(transform, A.ToGray):
        return "grayscale" + _chance(transform)
    return type(transform).__name__ + _chance(transform)


def _added_transforms(**options: Any) -> list[A.BasicTransform]:
    """The transforms that ``options`` of :func:`build_augmentation` add to its plain
    pipeline (flips, rescale and rotation, HSV shifts)."""
    plain = {type(transform) for transform in build_augmentation().transforms}
    return [t for t in build_augmentation(**options).transforms if type(t) not in plain]


def stain_words(strength: str) -> str:
    """A stain augmentation (``ExperimentConfig.stain_augmentation_used``) in words:
    ``"none"``, or the transforms it adds, read from :func:`build_augmentation`
    (``"strong: HEStain (...), brightness and contrast +-30 % (p 0.8), gamma 0.7-1.5
    (p 0.8)"``)."""
    if strength == "none":
        return "none"
    words = ", ".join(map(transform_words, _added_transforms(stain=True, stain_strength=strength)))
    return words if strength == "default" else f"{strength}: {words}"


def extra_words(name: str) -> str:
    """One of ``ExperimentConfig.extra_augment``'s names in words, read from the transforms
    it adds: ``"grayscale"`` -> ``"grayscale (p 0.2)"``; ``"blur_noise"`` -> ``"Gaussian
    blur (3-5 px) or median blur (3-5 px) (p 0.3), Gaussian noise (p 0.3)"``."""
    return ", ".join(map(transform_words, _added_transforms(extra=(name,))))


def loss_words(config: ExperimentConfig) -> str:
    """A config's loss, its term weights and Dice variant in words: ``"the paper's (Dice:
    mean over classes), with the HV mean squared error x2 and HoVer-Net's HV gradient loss
    (MSGE) added"``."""
    text = LOSS_WORDS.get(config.loss, config.loss)
    weights = []
    for term, weight in config.loss_weights.items():
        words = TERM_WORDS.get(term, term)
        if term == "hv_msge" and config.loss == "paper":
            weights.append(f"{words} added" + ("" if weight == 1 else f" x{weight:g}"))
        else:
            weights.append(f"{words} x{weight:g}")
    if weights:
        text += ", with " + (
            weights[0] if len(weights) == 1 else ", ".join(weights[:-1]) + " and " + weights[-1]
        )
    if config.dice_classes == "present":
        text += "; Dice over the classes present in the batch"
    return text
