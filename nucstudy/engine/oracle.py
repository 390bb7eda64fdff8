"""A stand-in for a network that outputs perfect maps, to test what happens around one.

Tiling, merging and post-processing can be checked without a network's errors: the label
map's NP, HV and TP targets are written into the pixels of an image
(:func:`encode_targets`: red and green the two HV maps, blue the class id), and
:class:`TargetReader` reads them back, pixel by pixel. Because it looks at nothing but the
pixel itself, a tile of the image gives exactly the outputs the whole image gives there, so
any difference between tiled and whole-image nuclei comes from the tiling and the
post-processing alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nucstudy.data.classes import ClassScheme
from nucstudy.data.targets import make_targets
from nucstudy.engine.model_file import ModelSpec, TrainedModel

#: Blue value per class id (up to six classes fit in 8 bits).
CLASS_STEP = 40
#: Logit of the right answer: probabilities 1 - 1e-17, as good as certain.
CONFIDENT = 40.0


def encode_targets(label: np.ndarray) -> np.ndarray:
    """H x W x 2 [instance, class] labels -> H x W x 3 uint8 image carrying their targets:
    red and green the horizontal and vertical HV maps from [-1, 1] to 0..255, blue
    ``class id x CLASS_STEP`` (0 on background)."""
    if label[..., 1].max(initial=0) * CLASS_STEP > 255:
        raise ValueError(f"at most {255 // CLASS_STEP} classes can be encoded")
    hv = make_targets(label[..., 0], label[..., 1])["hv"]
    hv8 = np.round((hv + 1) / 2 * 255).astype(np.uint8)
    return np.dstack([hv8[0], hv8[1], (label[..., 1] * CLASS_STEP).astype(np.uint8)])


class TargetReader(nn.Module):
    """Reads the maps :func:`encode_targets` wrote: B x 3 x H x W in [0, 1] -> NP and TP
    logits and HV maps, as a network's heads (``n_types`` classes, background included)."""

    def __init__(self, n_types: int) -> None:
        super().__init__()
        self.n_types = n_types

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        classes = torch.round(x[:, 2].float() * 255 / CLASS_STEP).long()
        nucleus = (classes > 0).float() * (2 * CONFIDENT) - CONFIDENT
        tp = F.one_hot(classes, self.n_types).permute(0, 3, 1, 2).float() * CONFIDENT
        return {
            "np": torch.stack([-nucleus, nucleus], dim=1),
            "hv": x[:, :2].float() * 2 - 1,
            "tp": tp,
        }


def oracle_model(scheme: ClassScheme, mpp: float) -> TrainedModel:
    """A :class:`~nucstudy.engine.model_file.TrainedModel` whose network is a
    :class:`TargetReader`."""
    spec = ModelSpec("oracle", {}, scheme.n_classes, scheme.name, mpp)
    return TrainedModel(
        TargetReader(scheme.n_classes), scheme, mpp, "native", {"name": "oracle"}, 0, spec=spec
    )
