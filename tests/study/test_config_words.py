"""A run's config in words: networks by their size, losses by their terms, ranges as ranges."""

import albumentations as A
import pytest

from nucstudy.study.config_words import (
    augmentation_words,
    extra_words,
    loss_words,
    model_options,
    network_words,
    rate_words,
    span_words,
    stain_words,
    transform_words,
)
from nucstudy.study.presets import HV_TERMS, preset


def test_a_network_left_at_its_defaults_is_named_with_its_size():
    config = preset("paper")
    assert config.model_options == {}  # the paper preset leaves the widths to the network
    assert network_words(config.model, config.model_options) == (
        "SE-Res U-Net, 32 channels, 5 levels"
    )
    demo = preset("cpu-demo")
    assert network_words(demo.model, demo.model_options) == "SE-Res U-Net, 16 channels, 4 levels"
    assert network_words("seresunet", {"use_se": False, "use_ca": False}).endswith(
        "5 levels, no SE blocks, no Coordinate Attention"
    )
    assert model_options("seresunet", {"width": 8})["depth"] == 5


def test_the_baselines_are_named_as_a_reader_names_them():
    options = {"backbone": "resnet18", "upscale": 1.0, "box_batch_size_per_image": 256}
    assert network_words("maskrcnn", options) == (
        "Mask R-CNN, ResNet-18 backbone, no upscaling, 256 RoIs sampled per image"
    )
    assert (
        network_words("maskrcnn", {})
        == "Mask R-CNN, ResNet-50 backbone, 512 RoIs sampled per image"
    )
    assert "images upscaled x2," in network_words("maskrcnn", {"upscale": 2.0})
    assert network_words("hovernet", {}) == "HoVer-Net"
    assert network_words("unet", {"width": 4}) == "unet width 4"


@pytest.mark.parametrize(
    ("rate", "words"), [(3e-4, "3e-4"), (2e-3, "2e-3"), (2.5e-3, "2.5e-3"), (0.1, "0.1")]
)
def test_rates_are_written_as_the_paper_writes_them(rate, words):
    assert rate_words(rate) == words


def test_ranges_and_augmentation_have_no_float_noise():
    assert span_words((-180.0, 180.0), "deg") == "-180 to 180 deg"
    text = augmentation_words(preset("cpu-demo", scale_range=[0.5, 2.0], keep_ratio=True))
    assert text.startswith("flips; rescale x0.5 to 2 (aspect ratio kept); rotation -180 to 180")
    assert ".0" not in text
    assert augmentation_words(preset("cpu-demo", augment=False)) == "none"


def test_the_loss_names_its_terms_and_weights():
    paper = preset("paper")
    assert loss_words(paper) == "the paper's (Dice: mean over classes)"
    recipe = paper.replace(loss_weights=HV_TERMS, dice_classes="present")
    assert loss_words(recipe) == (
        "the paper's (Dice: mean over classes), with the HV mean squared error x2 and "
        "HoVer-Net's HV gradient loss (MSGE) added; Dice over the classes present in the batch"
    )
    assert "hv_mse" not in loss_words(recipe)


def test_stain_and_extra_augmentation_are_read_from_the_transforms_they_build():
    assert stain_words("none") == "none"
    assert stain_words("default") == (
        "HEStain (random preset stain matrices, intensity x0.7-1.3, shift +-0.2, p 0.5)"
    )
    strong = stain_words("strong")
    assert strong.startswith("strong: HEStain (random preset stain matrices, intensity x0.5-1.5")
    assert strong.endswith(
        "every patch), brightness and contrast +-30 % (p 0.8), gamma 0.7-1.5 (p 0.8)"
    )
    assert extra_words("grayscale") == "grayscale (p 0.2)"
    assert extra_words("blur_noise") == (
        "Gaussian blur (3-5 px) or median blur (3-5 px) (p 0.3), Gaussian noise (p 0.3)"
    )


def test_a_transform_is_described_by_its_own_ranges():
    stain = A.HEStain(
        method="random_preset",
        intensity_scale_range=(0.6, 1.4),
        intensity_shift_range=(-0.1, 0.1),
        p=0.25,
    )
    assert transform_words(stain) == (
        "HEStain (random preset stain matrices, intensity x0.6-1.4, shift +-0.1, p 0.25)"
    )
    uneven = A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.2, p=1.0)
    assert transform_words(uneven) == "brightness +-10 %, contrast +-20 %"
    assert transform_words(A.Sharpen(p=0.5)) == "Sharpen (p 0.5)"
