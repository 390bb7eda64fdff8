"""Mask R-CNN for nuclei (He et al. 2017), the Table I detection baseline, from torchvision.

torchvision's :class:`~torchvision.models.detection.MaskRCNN` with a ResNet-FPN backbone,
built from scratch (``weights=None, weights_backbone=None``: nothing is ever downloaded)
and configured for nuclei rather than COCO objects:

- **No resizing to 800 px.** torchvision's transform scales every image so that its short
  side reaches ``min_size``: a 96 px training crop and a 128 px test patch would then be
  enlarged by different factors. Here every image is scaled by one fixed factor,
  ``upscale`` (e.g. 2 for 20x data, so that nuclei have the pixel size they have at 40x),
  whatever its size (:class:`FixedScaleTransform`).
- **Nucleus-sized anchors.** One anchor size per FPN level (strides 4 to 64 px), by default
  4, 8, 16, 32 and 64 px times ``upscale``, with aspect ratios 0.5, 1 and 2: nuclei span
  about 3 to 40 px at the data's resolution.
- **Enough boxes for dense tissue.** 2,000 region proposals kept in training and testing
  and up to 500 detections per image (COCO's defaults, 1,000 and 100, would cut off
  crowded patches), ``box_batch_size_per_image`` sampled RoIs per image for the box and
  mask heads (512 as torchvision; fewer trains faster).
- **One class per nucleus type**: ``n_types`` classes including the background.

In training mode ``model(images, targets)`` returns torchvision's dict of named losses; in
eval mode ``model(images)`` returns one dict of ``boxes``, ``labels``, ``scores`` and
``masks`` (pasted into the image, probabilities) per image. Targets are built by
:func:`nucstudy.data.targets.instance_targets`; detections become CoNIC-layout labels in
:func:`nucstudy.instances.detections_to_labels`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

#: Backbones that can be chosen (torchvision ResNets under an FPN).
BACKBONES = ("resnet18", "resnet34", "resnet50")

#: Anchor sizes in pixels of the data at ``upscale=1``, one per FPN level (strides 4 to 64).
BASE_ANCHOR_SIZES = (4, 8, 16, 32, 64)

# ImageNet statistics, as torchvision normalises (the backbone learns from scratch either way)
IMAGE_MEAN, IMAGE_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class FixedScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform, but scaling every image by one fixed factor.

    Normalises with the ImageNet mean and std, scales image, boxes and masks by ``scale``
    (bilinear for the image, nearest for the masks) and pads the batch to a multiple of 32.
    Detections are mapped back to the input's size by the parent's ``postprocess``.
    """

    def __init__(self, scale: float) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
        self.scale = float(scale)

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        if self.scale == 1.0:
            return image, target
        height, width = image.shape[-2:]
        size = (round(height * self.scale), round(width * self.scale))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, None
        target["boxes"] = resize_boxes(target["boxes"], [height, width], list(size))
        masks = target.get("masks")
        if masks is not None:
            target["masks"] = (
                F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0].byte()
                if len(masks)
                else masks.new_zeros((0, *size))
            )
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, mean={IMAGE_MEAN}, std={IMAGE_STD})"


class NucleusMaskRCNN(detection.MaskRCNN):
    """torchvision's Mask R-CNN configured for nuclei (see the module docstring).

    Args:
        n_types: classes including the background (``scheme.n_classes``).
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (the paper's baseline is
            ResNet-50-FPN), with an FPN, batch norm and all layers trained.
        upscale: factor by which every image is scaled before the network (2: 20x data seen
            at 40x pixel size).
        box_batch_size_per_image: RoIs sampled per image for the box and mask losses.
        detections_per_image: most nuclei returned per image.
        weights: path to a local state dict of the whole model (``model.state_dict()``,
            saved with ``torch.save``), loaded weights-only after construction.
    """

    def __init__(
        self,
        n_types: int,
        backbone: str = "resnet50",
        upscale: float = 1.0,
        box_batch_size_per_image: int = 512,
        detections_per_image: int = 500,
        weights: str | os.PathLike | None = None,
    ) -> None:
        if n_types < 2:
            raise ValueError(
                f"n_types must be at least 2 (background and one class), got {n_types}"
            )
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        if not upscale > 0:
            raise ValueError(f"upscale must be positive, got {upscale}")
        features = resnet_fpn_backbone(
            backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        )
        sizes = tuple((max(1, round(size * upscale)),) for size in BASE_ANCHOR_SIZES)
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
        super().__init__(
            features,
            num_classes=n_types,
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=2000,
            rpn_post_nms_top_n_train=2000,
            rpn_pre_nms_top_n_test=2000,
            rpn_post_nms_top_n_test=2000,
            box_batch_size_per_image=box_batch_size_per_image,
            box_detections_per_img=detections_per_image,
            box_score_thresh=0.05,
        )
        self.transform = FixedScaleTransform(upscale)
        self.anchor_sizes = tuple(size for (size,) in sizes)
        if weights is not None:
            _load_weights(self, weights)


def _load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a whole-model state dict from ``path``; a bad file raises ValueError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # missing file, pickled objects, other keys or shapes
        raise ValueError(f"cannot load Mask R-CNN weights from {path}: {error}") from None
