"""A run's config in words: networks by their size, losses by their terms, ranges as ranges."""

import pytest

from nucstudy.study.config_words import (
    augmentation_words,
    loss_words,
    model_options,
    network_words,
    rate_words,
    span_words,
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
