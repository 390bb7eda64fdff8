"""Training losses: the paper's equations (1)-(5) and HoVer-Net's loss for the baseline.

Both take the model's output dict (``"np"`` B x 2 x H x W logits, ``"hv"`` B x 2 x H x W,
``"tp"`` B x K x H x W logits) and a targets dict (``"np"`` B x H x W integer 0/1, ``"hv"``
B x 2 x H x W float, ``"tp"`` B x H x W integer class ids), and return a dict of named scalar
terms, unweighted, plus ``"total"``, the sum of the terms times their term weights. All terms
are computed in float32, whatever the dtype of the outputs (e.g. under bf16 autocast).

The paper's loss, :class:`SegmentationLoss`::

    total = (np_ce + np_dice) + hv_mse + (tp_ce + tp_dice)

- cross-entropy, optionally class-weighted (:func:`cross_entropy`), over all N = B H W pixels:
  ``CE = (1/N) sum_i w[g_i] * (-log p_i[g_i])``; with no weights, ``w = 1``;
- soft Dice, eq. (5) (:func:`soft_dice_loss`): for each class c, with sums over the batch's
  pixels, the Dice coefficient ``d_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps)``,
  and ``Dice = 1 - (1/|C|) sum_c d_c``, the mean over all |C| classes, background included,
  with eps = 1e-3. This is the paper's eq. (5), ``-(2/|C|) sum_c (...)``, shifted by the
  constant 1 so that it is 0 at a perfect prediction; eps sits as in HoVer-Net (the printed
  ``2 (sum p g + eps)`` would give a class absent from batch and prediction a Dice of 2).
  HoVer-Net's loss sums instead, ``sum_c (1 - d_c)`` (``dice="sum"``): |C| times the
  gradient. A class absent from the batch has ``d_c = eps / (sum p_c + eps)``, which only
  reaches 1 once the model predicts it nowhere;
- ``hv_mse``: the mean squared error of the HV maps over every pixel and both channels.

The TP cross-entropy uses :data:`PAPER_CLASS_WEIGHTS`; ``class_weights=None`` gives the plain
cross-entropy of the "no class weights" ablation. HoVer-Net's loss, :class:`HoVerNetLoss`,
adds ``hv_msge`` (:func:`msge_loss`), uses plain cross-entropy and weights the terms as in
:data:`HOVERNET_TERM_WEIGHTS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nucstudy.data.classes import CONIC, PAPER_CLASS_WEIGHTS_BY_NAME, class_weights

#: How the soft Dice reduces over classes: the paper's mean or HoVer-Net's sum.
DICE_REDUCTIONS = ("mean", "sum")
#: Which classes the soft Dice counts: all of them (the paper's eq. (5)) or those present
#: in the batch's targets.
DICE_CLASSES = ("all", "present")
#: Every term the losses of the NP/HV/TP networks can weigh (``hv_msge`` is computed only
#: where it has a weight).
DENSE_LOSS_TERMS = ("np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice")

#: The paper's TP class weights in CoNIC id order (background, neutrophil, epithelial,
#: lymphocyte, plasma, eosinophil, connective): (1, 4, 2, 2, 3, 4, 2).
PAPER_CLASS_WEIGHTS: tuple[float, ...] = class_weights(CONIC, PAPER_CLASS_WEIGHTS_BY_NAME)

#: Term weights of the paper's loss: all five terms count once.
PAPER_TERM_WEIGHTS: dict[str, float] = {
    "np_ce": 1.0,
    "np_dice": 1.0,
    "hv_mse": 1.0,
    "tp_ce": 1.0,
    "tp_dice": 1.0,
}

#: HoVer-Net's term weights as in its released TensorFlow configuration (``loss_term``:
#: bce 1, dice 1, mse 2, msge 1) and MONAI's HoVerNetLoss: the HV MSE counts twice. HoVer-Net's
#: later PyTorch release sets all six to 1.
HOVERNET_TERM_WEIGHTS: dict[str, float] = {
    "np_ce": 1.0,
    "np_dice": 1.0,
    "hv_mse": 2.0,
    "hv_msge": 1.0,
    "tp_ce": 1.0,
    "tp_dice": 1.0,
}


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-mean, optionally class-weighted, cross-entropy.

    ``(1/N) sum_i w[g_i] * (-log softmax(logits)_i[g_i])`` over all N = B H W pixels. Unlike
    ``F.cross_entropy(weight=w)``, which divides by ``sum_i w[g_i]``, the weights here scale
    the loss as well as shifting emphasis between classes.

    Args:
        logits: B x K x H x W float.
        target: B x H x W integer class ids in 0..K-1.
        class_weights: K floats, or None for weight 1 everywhere.

    Returns:
        A float32 scalar.
    """
    per_pixel = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if class_weights is not None:
        per_pixel = per_pixel * class_weights.to(per_pixel)[target.long()]
    return per_pixel.mean()


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1e-3,
    reduction: str = "mean",
    classes: str = "all",
) -> torch.Tensor:
    """Soft Dice loss over classes: the paper's mean (eq. (5)) or HoVer-Net's sum.

    With ``d_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps)``, p the softmax of
    ``logits``, g the one-hot target and the sums over the batch and all pixels:
    ``reduction="mean"`` gives ``1 - (1/K) sum_c d_c`` (the paper's eq. (5) plus 1), and
    ``reduction="sum"`` gives ``sum_c (1 - d_c)`` (HoVer-Net's form, K times the mean).
    With ``classes="present"`` the mean or sum runs over the classes present in ``target``
    only: a class absent from the batch then adds nothing, instead of a term that only
    reaches 0 once the model predicts that class nowhere.

    Args:
        logits: B x K x H x W float.
        target: B x H x W integer class ids in 0..K-1.
        eps: smoothing added to numerator and denominator.
        reduction: ``"mean"`` or ``"sum"`` over the classes.
        classes: ``"all"`` K classes, or those ``"present"`` in ``target``.

    Returns:
        A float32 scalar in [0, 1] (mean) or [0, K] (sum).
    """
    if reduction not in DICE_REDUCTIONS:
        raise ValueError(f"dice reduction must be 'mean' or 'sum', got {reduction!r}")
    if classes not in DICE_CLASSES:
        raise ValueError(f"dice classes must be 'all' or 'present', got {classes!r}")
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs)
    overlap = (probs * onehot).sum(dim=(0, 2, 3))
    truth = onehot.sum(dim=(0, 2, 3))
    per_class = 1 - (2 * overlap + eps) / (probs.sum(dim=(0, 2, 3)) + truth + eps)
    if classes == "present":
        per_class = per_class[truth > 0]
    return per_class.mean() if reduction == "mean" else per_class.sum()


def sobel_kernels(size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """HoVer-Net's derivative kernels: ``k_x[y, x] = x / (x^2 + y^2)``, ``k_y = k_x^T``.

    Offsets x (column) and y (row) run over -size//2..size//2, the centre is 0. Applied by
    cross-correlation (``F.conv2d``), ``k_x`` gives a positive response to values increasing
    to the right (along W), ``k_y`` to values increasing downwards (along H). The kernels are
    not normalised: on a unit ramp the 5 x 5 ``k_x`` responds with 12, as in HoVer-Net.

    Returns:
        ``(k_x, k_y)``, each size x size float32.
    """
    offsets = torch.arange(size, dtype=torch.float32) - size // 2
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    squared = x * x + y * y
    squared[size // 2, size // 2] = 1.0  # the centre's x is 0 anyway
    k_x = x / squared
    return k_x, k_x.T.contiguous()


def hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """Derivative of the horizontal map along x and of the vertical map along y.

    Args:
        hv: B x 2 x H x W float, channel 0 horizontal, channel 1 vertical.

    Returns:
        B x 2 x H x W float32: channel 0 is d(hv[:, 0])/dx, channel 1 is d(hv[:, 1])/dy, with
        the 5 x 5 kernels of :func:`sobel_kernels` and zero padding.
    """
    hv = hv.float()
    k_x, k_y = (k.to(hv.device)[None, None] for k in sobel_kernels(5))
    d_x = F.conv2d(hv[:, 0:1], k_x, padding=2)
    d_y = F.conv2d(hv[:, 1:2], k_y, padding=2)
    return torch.cat([d_x, d_y], dim=1)


def msge_loss(pred_hv: torch.Tensor, true_hv: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """HoVer-Net's mean squared gradient error of the HV maps inside nuclei.

    The squared difference of :func:`hv_gradients` of prediction and target, averaged over
    both channels and the pixels where ``focus`` is nonzero (0 if there are none).

    Args:
        pred_hv: B x 2 x H x W float.
        true_hv: B x 2 x H x W float.
        focus: B x H x W, nonzero on nuclear pixels (the NP target).

    Returns:
        A float32 scalar.
    """
    error = (hv_gradients(pred_hv) - hv_gradients(true_hv)) ** 2
    mask = (focus > 0).to(error)[:, None]
    return (error * mask).sum() / (2 * mask.sum() + 1e-8)


def _check_inputs(
    outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
) -> None:
    """Raise ValueError naming the first missing key or mismatched shape or dtype."""
    for key in ("np", "hv", "tp"):
        if key not in outputs or key not in targets:
            where = "model outputs" if key not in outputs else "targets"
            raise ValueError(f"{where} lack {key!r}; need 'np', 'hv' and 'tp'")
    batch, _, height, width = outputs["np"].shape
    for key, channels in (("np", 2), ("hv", 2), ("tp", outputs["tp"].shape[1])):
        if tuple(outputs[key].shape) != (batch, channels, height, width):
            raise ValueError(
                f"outputs[{key!r}] has shape {tuple(outputs[key].shape)}, expected "
                f"{(batch, channels, height, width)}"
            )
    expected = {"np": (batch, height, width), "hv": (batch, 2, height, width)}
    expected["tp"] = expected["np"]
    for key, shape in expected.items():
        if tuple(targets[key].shape) != shape:
            raise ValueError(
                f"targets[{key!r}] has shape {tuple(targets[key].shape)}, expected {shape} "
                f"for outputs of shape {tuple(outputs['np'].shape)}"
            )
    for key in ("np", "tp"):
        if targets[key].is_floating_point():
            raise ValueError(
                f"targets[{key!r}] must hold integer class ids, got {targets[key].dtype}"
            )


class SegmentationLoss(nn.Module):
    """The paper's loss: NP CE + Dice, HV MSE, TP (weighted) CE + Dice.

    Args:
        class_weights: TP cross-entropy weights in class-id order, one per TP channel;
            defaults to :data:`PAPER_CLASS_WEIGHTS` (CoNIC); None for plain cross-entropy.
        term_weights: overrides of the term weights by name (defaults: all 1). A weight for
            ``"hv_msge"`` adds HoVer-Net's gradient term (:func:`msge_loss`), which the
            paper's loss lacks: ``{"hv_mse": 2, "hv_msge": 1}`` gives HoVer-Net's HV terms.
        dice_eps: smoothing of the soft Dice.
        dice: ``"mean"`` over classes (the paper's eq. (5), the default) or ``"sum"``
            (HoVer-Net's form).
        dice_classes: the Dice over ``"all"`` classes (the paper's) or those ``"present"``
            in the batch (see :func:`soft_dice_loss`).

    Calling it returns ``{"np_ce", "np_dice", "hv_mse", "tp_ce", "tp_dice", "total"}`` (and
    ``"hv_msge"`` where it has a weight), each a float32 scalar; the terms unweighted,
    ``total`` their weighted sum.
    """

    default_term_weights: Mapping[str, float] = PAPER_TERM_WEIGHTS

    def __init__(
        self,
        class_weights: Sequence[float] | None = PAPER_CLASS_WEIGHTS,
        term_weights: Mapping[str, float] | None = None,
        dice_eps: float = 1e-3,
        dice: str = "mean",
        dice_classes: str = "all",
    ) -> None:
        super().__init__()
        if dice not in DICE_REDUCTIONS:
            raise ValueError(f"dice must be 'mean' or 'sum', got {dice!r}")
        if dice_classes not in DICE_CLASSES:
            raise ValueError(f"dice_classes must be 'all' or 'present', got {dice_classes!r}")
        self.dice = dice
        self.dice_classes = dice_classes
        weights = dict(self.default_term_weights)
        unknown = sorted(set(term_weights or {}) - set(DENSE_LOSS_TERMS))
        if unknown:
            raise ValueError(
                f"unknown loss term(s) {', '.join(unknown)}; terms: {', '.join(DENSE_LOSS_TERMS)}"
            )
        weights.update(term_weights or {})
        self.term_weights = weights
        self.dice_eps = dice_eps
        tensor = None
        if class_weights is not None:
            tensor = torch.as_tensor(class_weights, dtype=torch.float32)
            if tensor.ndim != 1 or not bool((tensor > 0).all()):
                raise ValueError(f"class_weights must be positive numbers, got {class_weights}")
        self.register_buffer("class_weights", tensor)

    def terms(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms, by name."""
        _check_inputs(outputs, targets)
        n_types = outputs["tp"].shape[1]
        if self.class_weights is not None and len(self.class_weights) != n_types:
            raise ValueError(
                f"{len(self.class_weights)} class weights for a TP output of {n_types} "
                "channels; pass class_weights for this scheme (or None)"
            )
        dice = (self.dice_eps, self.dice, self.dice_classes)
        terms = {
            "np_ce": cross_entropy(outputs["np"], targets["np"]),
            "np_dice": soft_dice_loss(outputs["np"], targets["np"], *dice),
            "hv_mse": F.mse_loss(outputs["hv"].float(), targets["hv"].float()),
            "tp_ce": cross_entropy(outputs["tp"], targets["tp"], self.class_weights),
            "tp_dice": soft_dice_loss(outputs["tp"], targets["tp"], *dice),
        }
        if "hv_msge" in self.term_weights:
            terms["hv_msge"] = msge_loss(outputs["hv"], targets["hv"], targets["np"])
        return terms

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Named terms and their weighted sum ``"total"``."""
        terms = self.terms(outputs, targets)
        terms["total"] = sum(self.term_weights[name] * value for name, value in terms.items())
        return terms


class HoVerNetLoss(SegmentationLoss):
    """HoVer-Net's loss: the paper's terms plus ``hv_msge``, with HoVer-Net's term weights.

    ``hv_msge`` is :func:`msge_loss` of the HV maps inside the NP target. Defaults: plain TP
    cross-entropy (``class_weights=None``), :data:`HOVERNET_TERM_WEIGHTS` and the Dice summed
    over classes (``dice="sum"``), as HoVer-Net has it.
    Returns ``{"np_ce", "np_dice", "hv_mse", "tp_ce", "tp_dice", "hv_msge", "total"}``.
    """

    default_term_weights = HOVERNET_TERM_WEIGHTS

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        term_weights: Mapping[str, float] | None = None,
        dice_eps: float = 1e-3,
        dice: str = "sum",
        dice_classes: str = "all",
    ) -> None:
        super().__init__(class_weights, term_weights, dice_eps, dice, dice_classes)
