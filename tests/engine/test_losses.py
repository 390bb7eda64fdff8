"""Losses: the paper's class weights, hand-computed terms, perfect predictions, HoVer-Net's
gradient term along the right axes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nucstudy.data.classes import CONIC
from nucstudy.engine.losses import (
    HOVERNET_TERM_WEIGHTS,
    PAPER_CLASS_WEIGHTS,
    HoVerNetLoss,
    SegmentationLoss,
    cross_entropy,
    hv_gradients,
    msge_loss,
    soft_dice_loss,
)

EPS = 1e-3


def test_paper_class_weights_follow_the_conic_ids():
    # The paper's list, in the paper's order.
    paper = [
        ("epithelial", 2),
        ("lymphocyte", 2),
        ("plasma", 3),
        ("eosinophil", 4),
        ("neutrophil", 4),
        ("connective", 2),
        ("background", 1),
    ]
    by_id = [0.0] * CONIC.n_classes
    for name, weight in paper:
        by_id[CONIC.id_of(name)] = float(weight)
    assert PAPER_CLASS_WEIGHTS == tuple(by_id) == (1.0, 4.0, 2.0, 2.0, 3.0, 4.0, 2.0)


def logits_from_probabilities(p1: list[float]) -> torch.Tensor:
    """1 x 2 x 1 x N logits whose softmax gives class 1 probabilities ``p1``."""
    p1 = torch.tensor(p1)
    return torch.stack([torch.zeros_like(p1), torch.log(p1 / (1 - p1))])[None, :, None, :]


def test_cross_entropy_by_hand():
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # 1 x 2 x 1 x 2
    target = torch.tensor([[[1, 0]]])
    # pixel 0: p = (1/2, 1/2), target 1; pixel 1: p = (3/4, 1/4), target 0
    nll = [math.log(2), -math.log(0.75)]
    assert cross_entropy(logits, target).item() == pytest.approx(sum(nll) / 2)
    weights = torch.tensor([1.0, 3.0])
    weighted = (3 * nll[0] + 1 * nll[1]) / 2
    assert cross_entropy(logits, target, weights).item() == pytest.approx(weighted)
    # The pixel mean differs from PyTorch's weighted mean, which divides by 3 + 1.
    assert F.cross_entropy(logits, target, weight=weights).item() == pytest.approx(
        (3 * nll[0] + nll[1]) / 4
    )
    # Scaling every weight scales the loss.
    assert cross_entropy(logits, target, 2 * weights).item() == pytest.approx(2 * weighted)


def test_class_weights_reweight_each_pixel_by_its_true_class():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 4, 4)
    target = torch.randint(0, 7, (2, 4, 4))
    plain = F.cross_entropy(logits, target, reduction="none")
    weights = torch.tensor(PAPER_CLASS_WEIGHTS)
    expected = (plain * weights[target]).mean()
    assert torch.allclose(cross_entropy(logits, target, weights), expected)
    assert torch.allclose(cross_entropy(logits, target), plain.mean())


def _two_class_dice_by_hand():
    logits = logits_from_probabilities([0.8, 0.6, 0.3, 0.1])
    target = torch.tensor([[[1, 1, 0, 0]]])
    # class 1: sum p g = 0.8 + 0.6, sum p = 1.8, sum g = 2
    dice1 = (2 * 1.4 + EPS) / (1.8 + 2 + EPS)
    # class 0: p = 0.2, 0.4, 0.7, 0.9; sum p g = 0.7 + 0.9, sum p = 2.2, sum g = 2
    dice0 = (2 * 1.6 + EPS) / (2.2 + 2 + EPS)
    return logits, target, (dice0, dice1)


def test_paper_dice_is_one_minus_the_mean_over_classes():
    logits, target, dice = _two_class_dice_by_hand()
    expected = 1 - sum(dice) / 2  # eq. (5), -(2/|C|) sum_c ..., plus the constant 1
    assert soft_dice_loss(logits, target, EPS).item() == pytest.approx(expected)
    assert soft_dice_loss(logits, target, EPS, "mean").item() == pytest.approx(expected)


def test_hovernet_dice_is_the_sum_over_classes():
    logits, target, dice = _two_class_dice_by_hand()
    expected = (1 - dice[0]) + (1 - dice[1])
    assert soft_dice_loss(logits, target, EPS, "sum").item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="mean' or 'sum"):
        soft_dice_loss(logits, target, EPS, "max")


def test_the_summed_dice_has_k_times_the_gradient_of_the_mean():
    torch.manual_seed(0)
    target = torch.randint(0, 7, (2, 8, 8))
    grads = {}
    for reduction in ("mean", "sum"):
        logits = torch.randn(2, 7, 8, 8, requires_grad=True)
        with torch.no_grad():
            logits.copy_(torch.linspace(-2, 2, logits.numel()).view_as(logits))
        soft_dice_loss(logits, target, EPS, reduction).backward()
        grads[reduction] = logits.grad
    assert torch.allclose(grads["sum"], 7 * grads["mean"], atol=1e-6)


def test_the_paper_loss_takes_the_mean_and_hovernet_the_sum():
    assert SegmentationLoss().dice == "mean"
    assert HoVerNetLoss().dice == "sum"
    with pytest.raises(ValueError, match="dice must be"):
        SegmentationLoss(dice="max")


def perfect(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Logits of a confident, correct prediction of ``target`` (B x H x W)."""
    return 40.0 * F.one_hot(target, n_classes).permute(0, 3, 1, 2).float() - 20.0


def example_targets() -> dict[str, torch.Tensor]:
    tp = torch.zeros(2, 8, 8, dtype=torch.long)
    tp[0, 1:4, 1:4], tp[0, 5:7, 2:6], tp[1, 2:6, 2:6] = 2, 5, 1
    tp[1, 0, :6] = torch.arange(1, 7)  # every class somewhere
    hv = torch.rand(2, 2, 8, 8) * 2 - 1
    return {"np": (tp > 0).long(), "hv": hv * (tp > 0), "tp": tp}


@pytest.mark.parametrize("loss_class", [SegmentationLoss, HoVerNetLoss])
def test_perfect_predictions_give_near_zero_loss(loss_class):
    targets = example_targets()
    outputs = {
        "np": perfect(targets["np"], 2),
        "hv": targets["hv"].clone(),
        "tp": perfect(targets["tp"], 7),
    }
    terms = loss_class()(outputs, targets)
    assert terms["total"].item() < 1e-6
    wrong = dict(outputs, tp=perfect((targets["tp"] + 1) % 7, 7))
    assert loss_class()(wrong, targets)["total"].item() > 1.0


def test_terms_by_hand_and_their_weighted_total():
    np_logits = logits_from_probabilities([0.8, 0.6, 0.3, 0.1])
    np_target = torch.tensor([[[1, 1, 0, 0]]])
    tp_logits = torch.zeros(1, 7, 1, 4)  # uniform: -log p = log 7 everywhere
    tp_target = torch.tensor([[[0, 1, 2, 6]]])
    outputs = {"np": np_logits, "hv": torch.zeros(1, 2, 1, 4), "tp": tp_logits}
    targets = {"np": np_target, "hv": torch.ones(1, 2, 1, 4) / 2, "tp": tp_target}
    loss = SegmentationLoss(term_weights={"hv_mse": 10.0})
    terms = loss(outputs, targets)
    assert set(terms) == {"np_ce", "np_dice", "hv_mse", "tp_ce", "tp_dice", "total"}
    np_ce = -(math.log(0.8) + math.log(0.6) + math.log(0.7) + math.log(0.9)) / 4
    assert terms["np_ce"].item() == pytest.approx(np_ce)
    assert terms["hv_mse"].item() == pytest.approx(0.25)
    # weights of classes 0, 1, 2, 6: 1, 4, 2, 2
    assert terms["tp_ce"].item() == pytest.approx((1 + 4 + 2 + 2) * math.log(7) / 4)
    # tp Dice: classes 0, 1, 2, 6 hold one pixel (sum p = 4/7, overlap 1/7); 3, 4, 5 none
    present = 1 - (2 / 7 + EPS) / (4 / 7 + 1 + EPS)
    absent = 1 - EPS / (4 / 7 + EPS)
    assert terms["tp_dice"].item() == pytest.approx((4 * present + 3 * absent) / 7)
    expected_total = sum(terms[k].item() for k in ("np_ce", "np_dice", "tp_ce", "tp_dice"))
    expected_total += 10 * terms["hv_mse"].item()
    assert terms["total"].item() == pytest.approx(expected_total)
    unweighted = SegmentationLoss(class_weights=None)(outputs, targets)
    assert unweighted["tp_ce"].item() == pytest.approx(math.log(7))


def test_hv_gradients_differentiate_along_the_right_axes():
    size = 12
    ramp = torch.arange(size, dtype=torch.float32)
    along_x = ramp[None, :].expand(size, size)  # increases to the right
    along_y = ramp[:, None].expand(size, size)  # increases downwards
    inside = (slice(2, -2), slice(2, -2))  # away from the zero padding
    # On a unit ramp, the kernel x / (x^2 + y^2) sums x^2 / (x^2 + y^2) over the 5 x 5
    # window: for x = +-1, 1 + 2 (1/2) + 2 (1/5) = 2.4 each; for x = +-2, 1 + 2 (4/5) + 2 (1/2)
    # = 3.6 each; in all 2 (2.4 + 3.6) = 12.
    grads = hv_gradients(torch.stack([along_x, along_y])[None])[0]
    assert torch.allclose(grads[0][inside], torch.tensor(12.0))
    assert torch.allclose(grads[1][inside], torch.tensor(12.0))
    crossed = hv_gradients(torch.stack([along_y, along_x])[None])[0]
    assert crossed[:, 2:-2, 2:-2].abs().max().item() < 1e-5


def test_msge_averages_inside_nuclei_only():
    size = 12
    ramp = torch.arange(size, dtype=torch.float32)
    true_hv = torch.zeros(1, 2, size, size)
    true_hv[0, 0] = ramp[None, :]  # horizontal map: unit slope along x
    focus = torch.zeros(1, size, size, dtype=torch.long)
    focus[0, 4:8, 4:8] = 1
    # gradient error 12 on channel 0, 0 on channel 1: mean over both channels 12^2 / 2
    assert msge_loss(torch.zeros_like(true_hv), true_hv, focus).item() == pytest.approx(72.0)
    assert msge_loss(true_hv, true_hv, focus).item() == 0.0
    assert msge_loss(torch.zeros_like(true_hv), true_hv, torch.zeros_like(focus)).item() == 0.0


def test_hovernet_loss_adds_msge_with_its_weights():
    targets = example_targets()
    torch.manual_seed(3)
    outputs = {"np": torch.randn(2, 2, 8, 8), "hv": torch.randn(2, 2, 8, 8)}
    outputs["tp"] = torch.randn(2, 7, 8, 8)
    terms = HoVerNetLoss()(outputs, targets)
    assert set(terms) == set(HOVERNET_TERM_WEIGHTS) | {"total"}
    assert HOVERNET_TERM_WEIGHTS["hv_mse"] == 2.0 and HOVERNET_TERM_WEIGHTS["hv_msge"] == 1.0
    expected = sum(HOVERNET_TERM_WEIGHTS[k] * terms[k] for k in HOVERNET_TERM_WEIGHTS)
    assert torch.allclose(terms["total"], expected)
    expected_msge = msge_loss(outputs["hv"], targets["hv"], targets["np"])
    assert torch.allclose(terms["hv_msge"], expected_msge)
    assert torch.allclose(terms["tp_ce"], cross_entropy(outputs["tp"], targets["tp"]))


def test_bad_arguments_get_clear_errors():
    targets = example_targets()
    outputs = {"np": torch.zeros(2, 2, 8, 8), "hv": torch.zeros(2, 2, 8, 8)}
    with pytest.raises(ValueError, match="outputs lack 'tp'"):
        SegmentationLoss()(outputs, targets)
    outputs["tp"] = torch.zeros(2, 5, 8, 8)
    with pytest.raises(ValueError, match="7 class weights for a TP output of 5"):
        SegmentationLoss()(outputs, targets)
    with pytest.raises(ValueError, match=r"targets\['hv'\] has shape \(2, 8, 8\)"):
        SegmentationLoss(None)(outputs, dict(targets, hv=targets["hv"][:, 0]))
    with pytest.raises(ValueError, match=r"outputs\['hv'\] has shape \(2, 1, 8, 8\)"):
        SegmentationLoss(None)(dict(outputs, hv=outputs["hv"][:, :1]), targets)
    with pytest.raises(ValueError, match="integer class ids"):
        SegmentationLoss(None)(outputs, dict(targets, tp=targets["tp"].float()))
    with pytest.raises(ValueError, match="unknown loss term.*hv_grad"):
        SegmentationLoss(term_weights={"hv_grad": 1.0})
    with pytest.raises(ValueError, match="dice_classes"):
        SegmentationLoss(dice_classes="some")
    with pytest.raises(ValueError, match="positive"):
        SegmentationLoss(class_weights=[1.0, 0.0])


def test_msge_in_the_paper_loss_only_where_it_has_a_weight():
    targets = example_targets()
    torch.manual_seed(4)
    outputs = {"np": torch.randn(2, 2, 8, 8), "hv": torch.randn(2, 2, 8, 8)}
    outputs["tp"] = torch.randn(2, 7, 8, 8)
    plain = SegmentationLoss()(outputs, targets)
    assert "hv_msge" not in plain
    hv_terms = SegmentationLoss(term_weights={"hv_mse": 2.0, "hv_msge": 1.0})(outputs, targets)
    expected_msge = msge_loss(outputs["hv"], targets["hv"], targets["np"])
    assert torch.allclose(hv_terms["hv_msge"], expected_msge)
    by_hand = plain["total"] + plain["hv_mse"] + expected_msge  # HV MSE once more, plus MSGE
    assert torch.allclose(hv_terms["total"], by_hand)


def test_the_dice_over_present_classes_leaves_absent_ones_out():
    # three classes, two pixels of class 0 and 1; class 2 absent from the target
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])  # pixel x class
    logits = probs.log().T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    dice = [
        (2 * 0.6 + EPS) / (0.8 + 1 + EPS),
        (2 * 0.5 + EPS) / (0.8 + 1 + EPS),
        EPS / (0.4 + EPS),  # absent: only 1 once the class is predicted nowhere
    ]
    every = soft_dice_loss(logits, target, EPS, "mean", "all").item()
    assert every == pytest.approx(1 - sum(dice) / 3)
    present = soft_dice_loss(logits, target, EPS, "mean", "present").item()
    assert present == pytest.approx(1 - (dice[0] + dice[1]) / 2)
    summed = soft_dice_loss(logits, target, EPS, "sum", "present").item()
    assert summed == pytest.approx((1 - dice[0]) + (1 - dice[1]))
    loss = SegmentationLoss(class_weights=None, dice_classes="present")
    outputs = {"np": logits[:, :2], "hv": torch.zeros(1, 2, 1, 2), "tp": logits}
    targets = {"np": target, "hv": torch.zeros(1, 2, 1, 2), "tp": target}
    assert loss(outputs, targets)["tp_dice"].item() == pytest.approx(present)
