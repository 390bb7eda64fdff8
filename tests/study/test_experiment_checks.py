"""The checks a config passes when it is made: ranges, known names, and every field's type."""

import pytest

from nucstudy.study.presets import preset


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"data": "kaggle"}, "unknown data source"),
        ({"data": "consep"}, "give the folder"),
        ({"class_weights": "inverse"}, "class_weights"),
        ({"loss": "focal"}, "loss"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"stain_augment": True, "stain_strength": "wild"}, "stain_strength must be"),
        ({"stain_strength": "strong"}, "stain_strength applies only with stain_augment"),
        ({"scale_range": [2.0, 0.5]}, "scale_range must be"),
        ({"scale_range": [0.0, 1.0]}, "scale_range must be"),
        ({"scale_range": [1.0]}, "scale_range must be"),
        ({"extra_augment": ["sharpen"]}, "extra_augment must list only"),
        ({"extra_augment": ["grayscale"], "augment": False}, "extra_augment applies only"),
        ({"synthetic_mix": -0.5}, "synthetic_mix must be >= 0"),
        ({"synthetic_mix": 1.0}, "synthetic_mix adds synthetic patches to real data"),
        ({"synthetic_mix": 1.0, "data": "consep:/d"}, "synthetic_mix needs the data at 20x"),
    ],
)
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        preset("smoke", **change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": "abc"}, "config field epochs must be an integer, got 'abc' \\(str\\)"),
        ({"lr": "fast"}, "config field lr must be a number, got 'fast'"),
        ({"mixed_precision": 1}, "config field mixed_precision must be true or false, got 1"),
        ({"lr_milestones": [2.5]}, "lr_milestones must be a list of integers"),
        ({"class_weights": [1, "a"]}, "class_weights must be a string or a list of numbers"),
        ({"crop_size": "big"}, "crop_size must be an integer or null"),
        ({"model_options": {"width": "wide"}}, "option width must be an integer, got 'wide'"),
        ({"model_options": {"wdth": 8}}, "has no option wdth; its options: width, depth"),
        ({"model": "unet"}, "unknown model 'unet'"),
    ],
)
def test_every_value_is_checked_against_its_fields_type(change, message):
    with pytest.raises(ValueError, match=message):
        preset("smoke", **change)
