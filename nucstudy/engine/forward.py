"""The network's forward pass at inference: images in, NP/HV/TP maps out.

:func:`images_to_tensor` turns N x H x W x 3 uint8 images into the network's input;
:func:`predict_maps` runs the heads over a batch, padding to the network's size multiple,
with optional flip test-time augmentation, in the device's fast path. What the maps become
(nuclei) is each method's business (:mod:`nucstudy.engine.methods`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nucstudy.engine.device import choose_fast_path
from nucstudy.models.blocks import SIZE_MULTIPLE

# Flips for test-time augmentation: (flip width, flip height).
_FLIPS = ((False, False), (True, False), (False, True), (True, True))


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """B x H x W x 3 uint8 RGB -> B x 3 x H x W float32 in [0, 1] on ``device``."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def predict_maps(
    model: nn.Module, images: torch.Tensor, tta: bool = False, mixed_precision: bool = True
) -> dict[str, torch.Tensor]:
    """Head outputs as probabilities for one batch, padded to a multiple of 32 and back.

    Args:
        model: a model from :func:`nucstudy.models.build_model`, in eval mode.
        images: B x 3 x H x W float in [0, 1].
        tta: average over the four horizontal/vertical flips (the horizontal HV channel
            changes sign under a horizontal flip, the vertical one under a vertical flip).
        mixed_precision: take the device's fast path
            (:func:`nucstudy.engine.device.choose_fast_path`:
            bf16 autocast and channels_last where supported).

    Returns:
        dict with ``"np"`` B x H x W nucleus probability, ``"hv"`` B x 2 x H x W and
        ``"tp"`` B x K x H x W class probabilities, float32.
    """
    fast = choose_fast_path(images.device, mixed_precision)
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
    if pad_h or pad_w:
        # reflect where the image is large enough to mirror, else repeat the edge pixels
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    totals: dict[str, torch.Tensor] = {}
    flips = _FLIPS if tta else _FLIPS[:1]
    for flip_w, flip_h in flips:
        dims = [d for d, on in ((-1, flip_w), (-2, flip_h)) if on]
        x = (images.flip(dims) if dims else images).contiguous(memory_format=fast.memory_format)
        with fast.autocast():
            out = model(x)
        maps = {
            "np": out["np"].float().softmax(dim=1)[:, 1],
            "hv": out["hv"].float(),
            "tp": out["tp"].float().softmax(dim=1),
        }
        if dims:
            maps = {key: value.flip(dims) for key, value in maps.items()}
            sign = torch.tensor([-1.0 if flip_w else 1.0, -1.0 if flip_h else 1.0])
            maps["hv"] = maps["hv"] * sign.to(maps["hv"].device).view(1, 2, 1, 1)
        for key, value in maps.items():
            totals[key] = totals[key] + value if key in totals else value
    return {key: (value / len(flips))[..., :height, :width] for key, value in totals.items()}
