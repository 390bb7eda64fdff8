"""What a training run learns from: the crop side of a config on patches of a side."""

import pytest

from nucstudy.engine.training_data import crop_side
from nucstudy.study.presets import preset


def test_the_paper_preset_crops_and_the_side_follows_the_patch():
    paper = preset("paper")
    assert paper.crop_fraction == 0.75
    assert crop_side(paper, 256) == 192 and crop_side(paper, 128) == 96
    assert crop_side(preset("cpu-demo"), 128) is None
    assert crop_side(preset("smoke", crop_size=48), 64) == 48
    with pytest.raises(ValueError, match="larger than the 64 px patches"):
        crop_side(preset("smoke", crop_size=96), 64)
    with pytest.raises(ValueError, match="crop_size or crop_fraction, not both"):
        preset("paper", crop_size=96)
