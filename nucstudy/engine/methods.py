"""Methods: how each kind of network learns from, and predicts, CoNIC-layout labels.

A method knows three things: how to make its training targets from one patch's labels,
its loss, and how to turn its outputs into CoNIC-layout labels. The Trainer, inference and
evaluation talk to this interface only, never to a model's name:

- :class:`DenseMethod`: networks with NP, HV and TP heads (the proposed SE-Res U-Net and
  HoVer-Net): targets from :func:`~nucstudy.data.targets.make_targets`, the paper's loss or
  HoVer-Net's, and HoVer-Net's post-processing;
- :class:`MaskRCNNMethod`: torchvision's Mask R-CNN: one box, mask and class per nucleus
  (:func:`~nucstudy.data.targets.instance_targets`), torchvision's own losses, and the
  detections pasted into labels (:func:`~nucstudy.postprocess.detections.detections_to_labels`).

:func:`build_method` makes the method of an experiment (with its loss, for training);
:func:`method_for` the method of a network (for inference).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from nucstudy.data.classes import paper_class_weights
from nucstudy.data.dataset import map_targets
from nucstudy.data.targets import instance_targets
from nucstudy.engine.device import FastPath
from nucstudy.engine.losses import HoVerNetLoss, SegmentationLoss
from nucstudy.models import MODELS
from nucstudy.postprocess import (
    Nuclei,
    Thresholds,
    postprocess_batch,
    to_conic_labels,
    vote_classes,
)
from nucstudy.postprocess.detections import detections_to_labels, min_area_at

if TYPE_CHECKING:
    from nucstudy.data.classes import ClassScheme
    from nucstudy.study.experiment import ExperimentConfig


class Method(ABC):
    """The interface between one kind of network and the rest of the study."""

    #: Whether a training step may leave some parameters without a gradient (DDP must then
    #: look for them: a detector's mask head gets none from a batch without nuclei).
    may_skip_parameters = False

    @classmethod
    def for_training(cls, config: ExperimentConfig, scheme: ClassScheme) -> Method:
        """The method as ``config`` trains it on data of ``scheme`` (its loss built)."""
        return cls()

    @abstractmethod
    def targets(self, label: np.ndarray) -> dict[str, Any]:
        """Training targets of one (augmented) patch, H x W x 2 int32 labels, as tensors."""

    def to(self, device: torch.device) -> Method:
        """Move what the method holds (its loss's buffers) to ``device``; returns itself."""
        return self

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Patches (dataset items) into one batch; by default every entry is stacked."""
        return default_collate(items)

    @abstractmethod
    def loss_terms(
        self, network: nn.Module, batch: dict[str, Any], device: torch.device, fast: FastPath
    ) -> dict[str, torch.Tensor]:
        """Forward one training batch; named float32 scalar loss terms plus ``"total"``."""

    @abstractmethod
    def predict(
        self, network: nn.Module, images: torch.Tensor, tta: bool, mixed_precision: bool
    ) -> Any:
        """The network's outputs for B x 3 x H x W images in [0, 1], as NumPy arrays."""

    @abstractmethod
    def to_labels(
        self, outputs: Any, mpp: float, route: str, thresholds: Thresholds | None = None
    ) -> np.ndarray:
        """Outputs of :meth:`predict` as B x H x W x 2 int32 CoNIC labels (picklable);
        ``thresholds`` those of HoVer-Net's post-processing, where the method has it."""

    def to_nuclei(
        self, outputs: Any, mpp: float, route: str, thresholds: Thresholds | None = None
    ) -> list[Nuclei]:
        """Outputs of :meth:`predict` as one :class:`~nucstudy.postprocess.Nuclei` per image,
        with geometry and class; the class probability is NaN unless the method has one."""
        nuclei = []
        for label in self.to_labels(outputs, mpp, route, thresholds):
            class_id, _ = vote_classes(label[..., 0], label[..., 1])
            nuclei.append(
                Nuclei.from_instances(label[..., 0], class_id, np.full(len(class_id), np.nan))
            )
        return nuclei

    def describe_postprocess(self, route: str) -> str:
        """A few words on how outputs become nuclei (for tables)."""
        return route


class DenseMethod(Method):
    """NP, HV and TP maps: the proposed network and HoVer-Net.

    Args:
        loss: the training loss (:class:`~nucstudy.engine.losses.SegmentationLoss` or
            :class:`~nucstudy.engine.losses.HoVerNetLoss`); None for inference only.
    """

    def __init__(self, loss: nn.Module | None = None) -> None:
        self.loss = loss

    @classmethod
    def for_training(cls, config: ExperimentConfig, scheme: ClassScheme) -> DenseMethod:
        """The paper's loss or HoVer-Net's (``config.loss``), with the config's class weights,
        term weights (``loss_weights``) and Dice classes."""
        loss = SegmentationLoss if config.loss == "paper" else HoVerNetLoss
        return cls(
            loss(
                resolve_class_weights(config, scheme),
                term_weights=config.loss_weights,
                dice_classes=config.dice_classes,
            )
        )

    def to(self, device: torch.device) -> DenseMethod:
        if self.loss is not None:
            self.loss.to(device)
        return self

    def targets(self, label: np.ndarray) -> dict[str, Any]:
        """``"np"`` H x W int64, ``"hv"`` 2 x H x W float32, ``"tp"`` H x W int64."""
        return map_targets(label)

    def loss_terms(
        self, network: nn.Module, batch: dict[str, Any], device: torch.device, fast: FastPath
    ) -> dict[str, torch.Tensor]:
        if self.loss is None:
            raise RuntimeError("this method was built for inference only (no loss)")
        images = batch["image"].to(device, non_blocking=True)
        images = images.contiguous(memory_format=fast.memory_format)
        targets = {key: batch[key].to(device, non_blocking=True) for key in ("np", "hv", "tp")}
        with fast.autocast():
            outputs = network(images)
        return self.loss(outputs, targets)

    def predict(
        self, network: nn.Module, images: torch.Tensor, tta: bool, mixed_precision: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NP probability B x H x W, HV B x 2 x H x W, TP probabilities B x K x H x W."""
        from nucstudy.engine.forward import predict_maps

        maps = predict_maps(network, images, tta, mixed_precision)
        return tuple(maps[key].cpu().numpy() for key in ("np", "hv", "tp"))

    def to_labels(
        self, outputs: Any, mpp: float, route: str, thresholds: Thresholds | None = None
    ) -> np.ndarray:
        return to_conic_labels(self.to_nuclei(outputs, mpp, route, thresholds))

    def to_nuclei(
        self, outputs: Any, mpp: float, route: str, thresholds: Thresholds | None = None
    ) -> list[Nuclei]:
        """HoVer-Net's post-processing, with each nucleus's type probability."""
        return postprocess_batch(*outputs, mpp, route, thresholds=thresholds)

    def describe_postprocess(self, route: str) -> str:
        return f"HoVer-Net watershed ({route})"


class MaskRCNNMethod(Method):
    """Mask R-CNN: boxes, masks and classes per nucleus, torchvision's losses.

    The network scores each detection (:class:`~nucstudy.models.maskrcnn.NucleusRoIHeads`):
    with its default ``detection_rule="nucleus"`` the score is the nucleus probability,
    ``1 - p(background)``, and the class the most probable foreground class, so a nucleus
    whose class probability is spread over several classes is still kept.

    Args:
        score_threshold: lowest detection score kept when pasting labels, in [0, 1]
            (default 0.5, as :data:`~nucstudy.postprocess.detections.SCORE_THRESHOLD`; a value
            chosen on
            validation patches can be given instead).
        mask_threshold: lowest mask probability of a nucleus pixel, in [0, 1].
    """

    may_skip_parameters = True

    def __init__(self, score_threshold: float = 0.5, mask_threshold: float = 0.5) -> None:
        for name, value in (
            ("score_threshold", score_threshold),
            ("mask_threshold", mask_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold

    def targets(self, label: np.ndarray) -> dict[str, Any]:
        """``"targets"``: boxes K x 4 float32, labels K int64, masks K x H x W uint8."""
        target = instance_targets(label[..., 0], label[..., 1])
        return {"targets": {key: torch.from_numpy(value) for key, value in target.items()}}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack every entry but ``"targets"``, which stays a list (nuclei differ in number)."""
        batch = default_collate(
            [{k: v for k, v in item.items() if k != "targets"} for item in items]
        )
        batch["targets"] = [item["targets"] for item in items]
        return batch

    def loss_terms(
        self, network: nn.Module, batch: dict[str, Any], device: torch.device, fast: FastPath
    ) -> dict[str, torch.Tensor]:
        """torchvision's five terms (``classifier``, ``box_reg``, ``mask``, ``objectness``,
        ``rpn_box_reg``), summed with weight 1 into ``"total"``."""
        images = [image.to(device, non_blocking=True) for image in batch["image"]]
        targets = [
            {key: value.to(device, non_blocking=True) for key, value in target.items()}
            for target in batch["targets"]
        ]
        with fast.autocast():
            losses = network(images, targets)
        terms = {name.removeprefix("loss_"): value.float() for name, value in losses.items()}
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def predict(
        self, network: nn.Module, images: torch.Tensor, tta: bool, mixed_precision: bool
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image: scores K (float32 in [0, 1], the network's detection scores: nucleus
        scores under its default rule), classes K (int64) and mask probabilities K x H x W
        (float32) at the input's size."""
        from nucstudy.engine.device import choose_fast_path

        if tta:
            raise ValueError("flip test-time augmentation is not available for Mask R-CNN")
        fast = choose_fast_path(images.device, mixed_precision)
        with fast.autocast():
            detections = network(list(images))
        return [
            (
                found["scores"].float().cpu().numpy(),
                found["labels"].cpu().numpy(),
                found["masks"][:, 0].float().cpu().numpy(),
            )
            for found in detections
        ]

    def to_labels(
        self, outputs: Any, mpp: float, route: str, thresholds: Thresholds | None = None
    ) -> np.ndarray:
        """Each image's detections pasted (see
        :func:`nucstudy.postprocess.detections.detections_to_labels`);
        ``route`` and ``thresholds`` do not apply (there is no HoVer-Net post-processing)."""
        return np.stack(
            [
                detections_to_labels(
                    scores,
                    classes,
                    masks,
                    self.score_threshold,
                    self.mask_threshold,
                    min_area_at(mpp),
                )
                for scores, classes, masks in outputs
            ]
        )

    def describe_postprocess(self, route: str) -> str:
        return f"masks pasted (score >= {self.score_threshold:g})"


#: The method class of each registered model.
METHOD_OF_MODEL: dict[str, type[Method]] = {
    "seresunet": DenseMethod,
    "hovernet": DenseMethod,
    "maskrcnn": MaskRCNNMethod,
}

#: The losses each model can train with; the first is its own.
LOSSES_OF_MODEL: dict[str, tuple[str, ...]] = {
    "seresunet": ("paper", "hovernet"),
    "hovernet": ("hovernet", "paper"),
    "maskrcnn": ("maskrcnn",),
}

#: What a model trains with unless told otherwise (``nucstudy train --model``, Table I):
#: its own loss, and the class weights of that loss (HoVer-Net's and Mask R-CNN's have none).
#: The baselines' losses keep their own term weights, whatever term weights a shared
#: protocol gives the proposed model's loss (a recipe's HV terms, for example).
OWN_TRAINING: dict[str, dict[str, Any]] = {
    "seresunet": {"loss": "paper", "class_weights": "paper"},
    "hovernet": {"loss": "hovernet", "class_weights": None, "loss_weights": {}},
    "maskrcnn": {"loss": "maskrcnn", "class_weights": None, "loss_weights": {}},
}


def resolve_class_weights(
    config: ExperimentConfig, scheme: ClassScheme
) -> tuple[float, ...] | None:
    """The TP class weights the config asks for, in the scheme's id order (None: plain CE)."""
    if config.class_weights is None:
        return None
    if config.class_weights == "paper":
        return paper_class_weights(scheme)
    weights = tuple(float(w) for w in config.class_weights)
    if len(weights) != scheme.n_classes:
        raise ValueError(
            f"class_weights has {len(weights)} values, scheme {scheme.name!r} has "
            f"{scheme.n_classes} classes"
        )
    return weights


def build_method(config: ExperimentConfig, scheme: ClassScheme) -> Method:
    """The method of ``config``, with its loss (and the config's class weights) for training."""
    return METHOD_OF_MODEL[config.model].for_training(config, scheme)


def method_for(network: nn.Module) -> Method:
    """The method (inference only, no loss) of a network built by ``build_model``; any
    other module is taken for one with NP, HV and TP heads."""
    for name, model_class in MODELS.items():
        if isinstance(network, model_class):
            return METHOD_OF_MODEL[name]()
    return DenseMethod()
