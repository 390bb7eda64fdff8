"""Networks: the paper's SE-Res U-Net with Coordinate Attention, HoVer-Net and Mask R-CNN.

The SE-Res U-Net and HoVer-Net map B x 3 x H x W float images in [0, 1] (H, W multiples of
32) to a dict of ``"np"`` B x 2 x H x W logits, ``"hv"`` B x 2 x H x W horizontal and
vertical maps and ``"tp"`` B x n_types x H x W logits. Mask R-CNN (torchvision's) takes a
list of images and returns losses in training and detections in eval mode. Build one by
name with :func:`build_model`; :mod:`nucstudy.engine.methods` knows how each learns and predicts.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nucstudy.common.validation import parameter_hints, type_problems
from nucstudy.models.blocks import SIZE_MULTIPLE
from nucstudy.models.hovernet import HoVerNet
from nucstudy.models.maskrcnn import NucleusMaskRCNN
from nucstudy.models.seresunet import SEResUNet

#: Model classes by name; their constructors take ``n_types`` and keyword options.
MODELS: dict[str, type[nn.Module]] = {
    "seresunet": SEResUNet,
    "hovernet": HoVerNet,
    "maskrcnn": NucleusMaskRCNN,
}


def model_option_problems(name: str, options: dict) -> list[str]:
    """One sentence per problem with a model name and its options (empty: all fine).

    Checks that the model is registered, that every option is a parameter of its constructor
    and that each value fits the parameter's type hint.
    """
    if name not in MODELS:
        return [f"unknown model {name!r}; known: {', '.join(MODELS)}"]
    hints = parameter_hints(MODELS[name])
    accepted = [p for p in inspect.signature(MODELS[name]).parameters if p != "n_types"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        return [
            f"model {name!r} has no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted)}"
        ]
    return type_problems(options, hints, f"model {name!r} option")


def build_model(name: str, n_types: int, **options) -> nn.Module:
    """Build a model by name.

    Args:
        name: ``"seresunet"`` (the paper's model; options ``width``, ``depth``, ``use_se``,
            ``use_ca``), ``"hovernet"`` (options ``pretrained``, ``weights``) or
            ``"maskrcnn"`` (options ``backbone``, ``upscale``, ``box_batch_size_per_image``,
            ``detections_per_image``, ``weights``; see
            :class:`~nucstudy.models.maskrcnn.NucleusMaskRCNN`).
        n_types: TP output channels, classes including background (``scheme.n_classes``).
        **options: keyword options of that model.

    Returns:
        The model, in training mode, on the CPU.
    """
    problems = model_option_problems(name, options)
    if problems:
        raise ValueError("; ".join(problems))
    if isinstance(n_types, bool) or not isinstance(n_types, int):
        raise ValueError(f"n_types must be an int (scheme.n_classes), got {n_types!r}")
    return MODELS[name](n_types, **options)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``; buffers are not counted."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_multiply_adds(model: nn.Module, height: int = 256, width: int = 256) -> int:
    """Multiply-adds of one forward pass of ``model`` on a single 3 x H x W image.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, transposed
    convolutions and matrix products; 2 FLOPs per multiply-add), on the model's device, in
    eval mode so batch statistics are left alone; the model's mode is restored afterwards.
    """
    parameter = next(model.parameters())
    image = torch.zeros(1, 3, height, width, device=parameter.device, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


__all__ = [
    "MODELS",
    "SIZE_MULTIPLE",
    "HoVerNet",
    "NucleusMaskRCNN",
    "SEResUNet",
    "build_model",
    "count_multiply_adds",
    "count_parameters",
    "model_option_problems",
]
