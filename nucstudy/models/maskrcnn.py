"""Mask R-CNN for nuclei (He et al. 2017), the Table I detection baseline, from torchvision.

torchvision's :class:`~torchvision.models.detection.MaskRCNN` with a ResNet-FPN backbone,
built from scratch (``weights=None, weights_backbone=None``: nothing is ever downloaded)
and configured for nuclei rather than COCO objects:

- **No resizing to 800 px.** torchvision's transform scales every image so that its short
  side reaches ``min_size``: a 96 px training crop and a 128 px test patch would then be
  enlarged by different factors. Here every image is scaled by one fixed factor,
  ``upscale``, whatever its size (:class:`FixedScaleTransform`): by default 2, so that 20x
  nuclei (median box side 8.8 px on CoNSeP's test patches halved to 20x) have the pixel
  size they have at 40x.
- **Nucleus-sized anchors.** One anchor size per FPN level (strides 4 to 64 px in the
  network's pixels), by default 6, 12, 24, 48 and 96 px of the data times ``upscale``, with
  aspect ratios 0.5, 1 and 2. Measured on CoNSeP's 224 test patches at 20x (with
  :func:`~nucstudy.models.maskrcnn_anchors.anchor_coverage`): with these defaults 91 % of the
  nuclei have an anchor at IoU >= 0.5 and 24 % at IoU >= 0.7; torchvision's RPN also takes
  each nucleus's best-matching anchors as positives. The study's earlier set-up (4 to 64 px,
  ``upscale`` 1) gave 22 % and 3 %; the same anchors at ``upscale`` 2, 80 % and 15 %.
- **Enough boxes for dense tissue.** 2,000 region proposals kept in training and testing
  and up to 500 detections per image: the densest CoNSeP patch holds 189 nuclei (128 px at
  20x; 172 in the training split), and COCO's defaults, 1,000 and 100, would cut off
  crowded patches. ``box_batch_size_per_image`` RoIs are sampled per image for the box and
  mask heads (512 as torchvision; fewer trains faster).
- **One detection per nucleus, scored as a nucleus** (``detection_rule="nucleus"``,
  :class:`NucleusRoIHeads`): each proposal gives at most one detection, scored by its
  nucleus probability, one minus the background probability, and labelled with the most
  probable foreground class; overlapping detections are suppressed whatever their class.
  torchvision's rule (``"per_class"``) scores every class of every box on its own, so a
  classifier that spreads a nucleus's probability over four classes leaves it with no class
  at 0.5 and the nucleus is lost.
- **One class per nucleus type**: ``n_types`` classes including the background.

Checkpoints saved before this set-up load unchanged: the model records the
version of its set-up in its state dict (the buffer ``setup_version``); a state dict
without it is of :data:`SETUPS` version 1, and loading it gives every option that was left
at its default (None) version 1's value: ``upscale`` 1, anchors 4 to 64 px, the per-class
rule. Options given explicitly are kept. Parameter shapes are the same in both versions.

In training mode ``model(images, targets)`` returns torchvision's dict of named losses; in
eval mode ``model(images)`` returns one dict of ``boxes``, ``labels``, ``scores`` and
``masks`` (pasted into the image, probabilities) per image. Targets are built by
:func:`nucstudy.data.targets.instance_targets`; detections become CoNIC-layout labels in
:func:`nucstudy.postprocess.detections.detections_to_labels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import boxes as box_ops

#: Backbones that can be chosen (torchvision ResNets under an FPN).
BACKBONES = ("resnet18", "resnet34", "resnet50")

#: Default anchor sizes in pixels of the data (before ``upscale``), one per FPN level.
BASE_ANCHOR_SIZES = (6, 12, 24, 48, 96)
#: Aspect ratios (height / width) of the anchors at every location.
ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: Strides of the FPN levels in the network's pixels (ResNet stages 2-5 and the max-pool).
FPN_STRIDES = (4, 8, 16, 32, 64)
#: How detections are scored and kept (see :class:`NucleusRoIHeads`).
DETECTION_RULES = ("nucleus", "per_class")

#: The defaults of each version of the set-up; a model stores its version in its state dict.
SETUPS: dict[int, dict[str, object]] = {
    1: {"upscale": 1.0, "anchor_sizes": (4, 8, 16, 32, 64), "detection_rule": "per_class"},
    2: {"upscale": 2.0, "anchor_sizes": BASE_ANCHOR_SIZES, "detection_rule": "nucleus"},
}
#: The set-up of newly built models.
SETUP_VERSION = 2

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


class NucleusRoIHeads(RoIHeads):
    """torchvision's box and mask heads with a choice of how detections are kept.

    Built from the :class:`~torchvision.models.detection.roi_heads.RoIHeads` that
    torchvision's MaskRCNN makes (same submodules, so the same state dict keys) and a
    ``rule``:

    - ``"nucleus"``: each proposal gives at most one detection. Its score is the nucleus
      probability ``1 - p(background)`` (softmax of the class logits, in float32), its label
      the most probable foreground class, its box that class's regression. Detections
      scoring at most ``score_thresh`` or with an empty box are dropped, the rest go through
      one class-agnostic NMS (IoU ``nms_thresh``) and the ``detections_per_img`` highest
      are kept.
    - ``"per_class"``: torchvision's own rule (every foreground class of every proposal a
      detection scored by that class's probability, NMS per class).
    """

    def __init__(self, heads: RoIHeads, rule: str = "nucleus") -> None:
        super().__init__(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
        )
        if rule not in DETECTION_RULES:
            raise ValueError(f"detection_rule must be one of {DETECTION_RULES}, got {rule!r}")
        self.rule = rule

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Detections of each image from the box head's outputs.

        Args:
            class_logits: P x C float, P proposals of all images, C classes (0 background).
            box_regression: P x 4C float box deltas per class.
            proposals: per image a P_i x 4 float tensor (x0, y0, x1, y1) in network pixels.
            image_shapes: per image its (height, width) in network pixels, for clipping.

        Returns:
            Per image: boxes D x 4 float, scores D float in [0, 1], labels D int64 in 1..C-1.
        """
        if self.rule == "per_class":
            return super().postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
        counts = [len(boxes) for boxes in proposals]
        decoded = self.box_coder.decode(box_regression.float(), proposals)  # P x C x 4
        probabilities = F.softmax(class_logits.float(), dim=-1)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, probs, shape in zip(
            decoded.split(counts), probabilities.split(counts), image_shapes, strict=True
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            scores = 1.0 - probs[:, 0]
            labels = probs[:, 1:].argmax(dim=1) + 1
            boxes = boxes[torch.arange(len(labels), device=boxes.device), labels]
            keep = torch.where(scores > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            keep = keep[box_ops.nms(boxes[keep], scores[keep], self.nms_thresh)]
            keep = keep[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels


def make_anchor_generator(anchor_sizes: Sequence[float], upscale: float) -> AnchorGenerator:
    """The RPN's anchors: one size per FPN level, ``anchor_sizes`` (data pixels) times
    ``upscale``, rounded to whole pixels (at least 1), each with :data:`ASPECT_RATIOS`."""
    if len(anchor_sizes) != len(FPN_STRIDES):
        raise ValueError(
            f"anchor_sizes needs one size per FPN level ({len(FPN_STRIDES)}), "
            f"got {list(anchor_sizes)}"
        )
    if not all(size > 0 for size in anchor_sizes):
        raise ValueError(f"anchor sizes must be positive, got {list(anchor_sizes)}")
    sizes = tuple((max(1, round(size * upscale)),) for size in anchor_sizes)
    return AnchorGenerator(sizes=sizes, aspect_ratios=(ASPECT_RATIOS,) * len(sizes))


class NucleusMaskRCNN(detection.MaskRCNN):
    """torchvision's Mask R-CNN configured for nuclei (see the module docstring).

    Args:
        n_types: classes including the background (``scheme.n_classes``).
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (the paper's baseline is
            ResNet-50-FPN), with an FPN, batch norm and all layers trained.
        upscale: factor by which every image is scaled before the network (2: 20x data seen
            at 40x pixel size). None: the set-up's (2; 1 for a version 1 checkpoint).
        box_batch_size_per_image: RoIs sampled per image for the box and mask losses.
        detections_per_image: most nuclei returned per image.
        weights: path to a local state dict of the whole model (``model.state_dict()``,
            saved with ``torch.save``), loaded weights-only after construction.
        anchor_sizes: five anchor sizes in pixels of the data (before ``upscale``), one per
            FPN level. None: the set-up's (:data:`BASE_ANCHOR_SIZES`; 4 to 64 for version 1).
        detection_rule: ``"nucleus"`` or ``"per_class"`` (:class:`NucleusRoIHeads`). None:
            the set-up's (``"nucleus"``; ``"per_class"`` for version 1).

    Attributes:
        upscale: the scale in use; ``anchor_sizes``: the anchor sizes in the network's
            pixels (tuple of int); ``detection_rule``: the rule in use.
    """

    def __init__(
        self,
        n_types: int,
        backbone: str = "resnet50",
        upscale: float | None = None,
        box_batch_size_per_image: int = 512,
        detections_per_image: int = 500,
        weights: str | os.PathLike | None = None,
        anchor_sizes: list[float] | None = None,
        detection_rule: str | None = None,
    ) -> None:
        if n_types < 2:
            raise ValueError(
                f"n_types must be at least 2 (background and one class), got {n_types}"
            )
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        if upscale is not None and not upscale > 0:
            raise ValueError(f"upscale must be positive, got {upscale}")
        if detection_rule is not None and detection_rule not in DETECTION_RULES:
            raise ValueError(
                f"detection_rule must be one of {DETECTION_RULES}, got {detection_rule!r}"
            )
        given = dict(upscale=upscale, anchor_sizes=anchor_sizes, detection_rule=detection_rule)
        settings = _resolve(given, SETUP_VERSION)
        features = resnet_fpn_backbone(
            backbone_name=backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        )
        super().__init__(
            features,
            num_classes=n_types,
            rpn_anchor_generator=make_anchor_generator(
                settings["anchor_sizes"], settings["upscale"]
            ),
            rpn_pre_nms_top_n_train=2000,
            rpn_post_nms_top_n_train=2000,
            rpn_pre_nms_top_n_test=2000,
            rpn_post_nms_top_n_test=2000,
            box_batch_size_per_image=box_batch_size_per_image,
            box_detections_per_img=detections_per_image,
            box_score_thresh=0.05,
        )
        self.roi_heads = NucleusRoIHeads(self.roi_heads, settings["detection_rule"])
        self._given = given
        self.register_buffer("setup_version", torch.tensor(float(SETUP_VERSION)))
        self._apply_setup(SETUP_VERSION)
        if weights is not None:
            _load_weights(self, weights)

    def _apply_setup(self, version: int) -> None:
        """Configure scale, anchors and rule as set-up ``version`` with the given options."""
        settings = _resolve(self._given, version)
        self.upscale = float(settings["upscale"])
        self.transform = FixedScaleTransform(self.upscale)
        self.rpn.anchor_generator = make_anchor_generator(settings["anchor_sizes"], self.upscale)
        self.anchor_sizes = tuple(size for (size,) in self.rpn.anchor_generator.sizes)
        self.roi_heads.rule = self.detection_rule = str(settings["detection_rule"])
        self.setup_version.fill_(float(version))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        """Take the set-up of the state dict being loaded (version 1 where it has none)."""
        key = prefix + "setup_version"
        if key not in state_dict:  # saved before the set-up had versions
            state_dict[key] = torch.tensor(1.0)
        version = round(float(state_dict[key]))
        if version not in SETUPS:
            raise ValueError(
                f"Mask R-CNN set-up version {version} is unknown (known: {sorted(SETUPS)}); "
                "was the checkpoint saved by a newer nucstudy?"
            )
        self._apply_setup(version)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)


def _resolve(given: dict[str, object], version: int) -> dict[str, object]:
    """The options given, with set-up ``version``'s value wherever one is None."""
    return {
        name: default if given.get(name) is None else given[name]
        for name, default in SETUPS[version].items()
    }


def _load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a whole-model state dict from ``path``; a bad file raises ValueError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # missing file, pickled objects, other keys or shapes
        raise ValueError(f"cannot load Mask R-CNN weights from {path}: {error}") from None
