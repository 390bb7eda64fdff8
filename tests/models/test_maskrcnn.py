"""Mask R-CNN: targets from labels, detections to labels, the model's configuration (anchors
that cover CoNSeP's nuclei, the nucleus score, old checkpoints), training."""

import numpy as np
import pandas as pd
import pytest
import torch

from nucstudy.cli import main
from nucstudy.data import synthetic_conic
from nucstudy.data.targets import instance_targets
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.methods import OWN_TRAINING, MaskRCNNMethod, method_for
from nucstudy.engine.model_file import load_model
from nucstudy.models import build_model
from nucstudy.models.maskrcnn import SETUP_VERSION
from nucstudy.postprocess.detections import detections_to_labels, min_area_at
from nucstudy.study.presets import preset

#: A Mask R-CNN small enough to train in seconds (tests only).
SMALL = {"backbone": "resnet18", "box_batch_size_per_image": 32, "detections_per_image": 50}
MASKRCNN = {"model": "maskrcnn", "loss": "maskrcnn", "class_weights": None, "model_options": SMALL}


def test_instance_targets_give_pixel_edge_boxes_and_majority_classes():
    inst = np.zeros((8, 10), np.int32)
    cls = np.zeros((8, 10), np.int32)
    inst[1:3, 2:5] = 4  # ids need not be contiguous
    cls[1:3, 2:5] = 2
    cls[1, 2] = 3  # one pixel of another class: the majority wins
    inst[6, 7] = 9  # a one-pixel nucleus
    cls[6, 7] = 1
    inst[5, 0] = 11  # a nucleus without a class pixel: left out
    target = instance_targets(inst, cls)
    assert target["boxes"].tolist() == [[2, 1, 5, 3], [7, 6, 8, 7]]
    assert target["labels"].tolist() == [2, 1]
    assert target["masks"].shape == (2, 8, 10) and target["masks"].dtype == np.uint8
    assert target["masks"][0].sum() == 6 and target["masks"][1, 6, 7] == 1


def test_instance_targets_of_an_empty_patch_are_empty():
    target = instance_targets(np.zeros((6, 6), np.int32), np.zeros((6, 6), np.int32))
    assert target["boxes"].shape == (0, 4)
    assert target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 6, 6)


def _square(size, top, left, side, value=1.0):
    mask = np.zeros((size, size), np.float32)
    mask[top : top + side, left : left + side] = value
    return mask


def test_overlaps_go_to_the_higher_scoring_nucleus():
    masks = np.stack([_square(12, 0, 0, 6), _square(12, 3, 3, 6)])
    labels = detections_to_labels(np.array([0.6, 0.9]), np.array([1, 2]), masks)
    inst, cls = labels[..., 0], labels[..., 1]
    assert inst[4, 4] == 1 and cls[4, 4] == 2  # the overlap: the 0.9 nucleus, numbered first
    assert (inst == 1).sum() == 36
    assert (inst == 2).sum() == 36 - 9 and cls[0, 0] == 1


def test_mask_rcnn_nuclei_carry_their_detection_classes_and_no_class_probability():
    masks = np.stack([_square(12, 0, 0, 6), _square(12, 3, 3, 6)])
    outputs = [(np.array([0.6, 0.9]), np.array([1, 2]), masks)]
    (nuclei,) = MaskRCNNMethod().to_nuclei(outputs, mpp=0.5, route="native")
    labels = MaskRCNNMethod().to_labels(outputs, mpp=0.5, route="native")[0]
    assert (nuclei.inst_map == labels[..., 0]).all() and (nuclei.class_map == labels[..., 1]).all()
    assert nuclei.class_id.tolist() == [2, 1] and nuclei.area.tolist() == [36, 27]
    assert np.isnan(nuclei.class_prob).all()


def test_score_and_mask_thresholds_and_small_remnants():
    masks = np.stack([_square(12, 0, 0, 4), _square(12, 6, 6, 4, 0.4), _square(12, 0, 8, 3)])
    labels = detections_to_labels(
        np.array([0.3, 0.8, 0.9]), np.array([1, 1, 3]), masks, min_area=1
    )
    assert labels[..., 0].max() == 1  # the 0.3 detection and the 0.4 mask are dropped
    assert labels[0, 8, 1] == 3
    small = detections_to_labels(np.array([0.9]), np.array([2]), masks[2:], min_area=10)
    assert small.max() == 0  # 9 px < 10 px


def test_a_nucleus_cut_in_two_keeps_its_larger_piece():
    masks = np.stack([_square(12, 0, 0, 10), _square(12, 0, 3, 2)])
    masks[1, :, 3:5] = 1.0  # a high-scoring column cuts the first nucleus in two
    labels = detections_to_labels(np.array([0.7, 0.9]), np.array([1, 2]), masks)
    first = labels[..., 0] == 2
    assert first.sum() == 50 and first[:10, 5:10].all() and not first[:, :3].any()


def test_no_detections_give_an_empty_label_map():
    labels = detections_to_labels(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 5, 7)))
    assert labels.shape == (5, 7, 2) and labels.max() == 0


def test_min_area_scales_with_resolution():
    assert min_area_at(0.25) == 10
    assert min_area_at(0.5) == 2


def test_the_model_is_configured_for_nuclei_not_coco():
    model = build_model("maskrcnn", n_types=5, backbone="resnet18", upscale=2.0)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.detections_per_img >= 500
    assert model.rpn.post_nms_top_n() >= 2000
    assert model.anchor_sizes == (12, 24, 48, 96, 192)  # 6..96 px at the data's resolution
    assert model.detection_rule == "nucleus" and model.roi_heads.rule == "nucleus"
    default = build_model("maskrcnn", n_types=5, backbone="resnet18")
    assert default.upscale == 2.0 and default.anchor_sizes == model.anchor_sizes
    assert build_model("maskrcnn", 5, backbone="resnet18", upscale=1.0).anchor_sizes == (
        6,
        12,
        24,
        48,
        96,
    )
    image = torch.rand(3, 96, 64)
    scaled, _ = model.transform.resize(image)
    assert scaled.shape[-2:] == (192, 128)  # one fixed factor, not the short side to 800 px
    model.eval()
    with torch.no_grad():
        found = model([image])[0]
    assert found["masks"].shape[-2:] == (96, 64)  # detections come back at the input's size


def test_the_model_loads_no_weights_unless_given_a_local_file(tmp_path):
    model = build_model("maskrcnn", n_types=3, backbone="resnet18")
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    again = build_model("maskrcnn", n_types=3, backbone="resnet18", weights=str(path))
    key = "backbone.body.conv1.weight"
    assert torch.equal(again.state_dict()[key], model.state_dict()[key])
    with pytest.raises(ValueError, match="cannot load Mask R-CNN weights"):
        build_model("maskrcnn", n_types=4, backbone="resnet18", weights=str(path))
    with pytest.raises(ValueError, match="backbone"):
        build_model("maskrcnn", n_types=3, backbone="vgg")


def test_a_batch_with_an_empty_patch_trains():
    data = synthetic_conic(2, size=64, seed=0)
    labels = np.asarray(data.labels).copy()
    labels[1] = 0
    method = MaskRCNNMethod()
    items = [
        {"image": torch.rand(3, 64, 64), **method.targets(label), "index": torch.tensor(i)}
        for i, label in enumerate(labels)
    ]
    batch = method.collate(items)
    assert batch["image"].shape == (2, 3, 64, 64) and len(batch["targets"]) == 2
    assert batch["targets"][1]["boxes"].shape == (0, 4)
    network = build_model("maskrcnn", n_types=data.scheme.n_classes, **SMALL)
    fast = choose_fast_path(torch.device("cpu"), False)
    terms = method.loss_terms(network, batch, torch.device("cpu"), fast)
    assert set(terms) == {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg", "total"}
    assert torch.isfinite(terms["total"])
    terms["total"].backward()


def test_predict_labels_gives_conic_labels_for_mask_rcnn():
    network = build_model("maskrcnn", n_types=7, **SMALL)
    assert isinstance(method_for(network), MaskRCNNMethod)
    images = np.asarray(synthetic_conic(3, size=64, seed=1).images)
    labels = predict_labels(network, images, mpp=0.5, batch_size=2, device="cpu")
    assert labels.shape == (3, 64, 64, 2) and labels.dtype == np.int32
    with pytest.raises(ValueError, match="test-time augmentation"):
        predict_labels(network, images, mpp=0.5, device="cpu", tta=True)


def _same_weights(a, b):
    return all(torch.equal(a[key], b[key]) for key in a)


def test_resume_reaches_the_same_weights_for_mask_rcnn(tmp_path, straight_and_resumed):
    config = preset("smoke", epochs=2, device="cpu", lr_milestones=[1], **MASKRCNN)
    straight, resumed = straight_and_resumed(config)
    assert _same_weights(straight.model.state_dict(), resumed.model.state_dict())
    history = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert {"train_mask", "train_classifier", "train_total"} <= set(history.columns)
    trained = load_model(tmp_path / "resumed" / "checkpoints" / "last.pt")  # weights-only
    assert _same_weights(trained.network.state_dict(), resumed.model.state_dict())


@pytest.mark.parametrize(
    "model, options",
    [
        ("seresunet", ["width=8", "depth=3"]),
        ("hovernet", []),
        ("maskrcnn", ["backbone=resnet18", "box_batch_size_per_image=32"]),
    ],
)
def test_each_method_trains_and_evaluates_through_the_cli(tmp_path, capsys, model, options):
    run = tmp_path / model
    flags = [flag for option in options for flag in ("--model-option", option)]
    args = ["train", "--preset", "smoke", "--model", model, *flags, "--out", str(run)]
    assert main([*args, "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    config = pd.read_json(run / "config.json", typ="series")
    assert config["model"] == model
    assert config["loss"] == OWN_TRAINING[model]["loss"]  # each model trains with its own loss
    assert main(["evaluate", str(run), "--device", "cpu", "--batch-size", "4"]) == 0
    assert "mPQ+" in capsys.readouterr().out


def _logits(*probabilities):
    return torch.tensor(probabilities, dtype=torch.float32).log()


def test_the_nucleus_score_keeps_a_nucleus_whose_class_is_uncertain():
    """Hand-built box-head outputs for four proposals of one 128 px image (4 classes):
    A: no class reaches 0.5 but the nucleus is 0.9 likely; B: mostly background;
    C: overlaps A, class 1 at 0.55; D: background at 0.97."""
    proposals = [
        torch.tensor([[10, 10, 30, 30], [60, 60, 80, 80], [11, 11, 31, 31], [90, 10, 110, 30.0]])
    ]
    logits = _logits(
        [0.1, 0.3, 0.35, 0.25],
        [0.8, 0.1, 0.05, 0.05],
        [0.25, 0.55, 0.1, 0.1],
        [0.97, 0.01, 0.01, 0.01],
    )
    deltas = torch.zeros(4, 4 * 4)  # every class's box is the proposal
    heads = build_model("maskrcnn", n_types=4, backbone="resnet18").roi_heads
    (boxes,), (scores,), (labels,) = heads.postprocess_detections(
        logits, deltas, proposals, [(128, 128)]
    )
    assert boxes.tolist() == [[10, 10, 30, 30], [60, 60, 80, 80]]  # C suppressed, D below 0.05
    assert scores.tolist() == pytest.approx([0.9, 0.2])  # 1 - p(background)
    assert labels.tolist() == [2, 1]  # the most probable foreground class
    masks = np.zeros((2, 128, 128), np.float32)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
        mask[y0:y1, x0:x1] = 1.0
    outputs = [(scores.numpy(), labels.numpy(), masks)]
    label = MaskRCNNMethod().to_labels(outputs, mpp=0.5, route="native")[0]
    assert label[..., 0].max() == 1 and (label[10:30, 10:30] == (1, 2)).all()
    assert label[60:80, 60:80].max() == 0  # the background-dominated box is dropped at 0.5
    heads.rule = "per_class"  # torchvision's rule: A's classes all fall below 0.5
    (boxes,), (scores,), (labels,) = heads.postprocess_detections(
        logits, deltas, proposals, [(128, 128)]
    )
    kept = scores >= 0.5
    assert boxes[kept].tolist() == [[11, 11, 31, 31]] and labels[kept].tolist() == [1]


def test_a_state_dict_saved_before_the_setup_had_versions_loads_with_the_old_setup(tmp_path):
    new = build_model("maskrcnn", n_types=3, backbone="resnet18")
    assert float(new.setup_version) == SETUP_VERSION
    old_state = {k: v for k, v in new.state_dict().items() if k != "setup_version"}
    path = tmp_path / "old.pt"
    torch.save(old_state, path)
    old = build_model("maskrcnn", n_types=3, backbone="resnet18", weights=str(path))
    assert (old.upscale, old.anchor_sizes, old.detection_rule) == (
        1.0,
        (4, 8, 16, 32, 64),
        "per_class",
    )
    assert old.transform.scale == 1.0 and old.roi_heads.rule == "per_class"
    assert float(old.state_dict()["setup_version"]) == 1
    explicit = build_model(
        "maskrcnn", 3, backbone="resnet18", upscale=2.0, detection_rule="nucleus"
    )
    explicit.load_state_dict(old_state)  # options given explicitly stay
    assert (explicit.upscale, explicit.anchor_sizes, explicit.detection_rule) == (
        2.0,
        (8, 16, 32, 64, 128),
        "nucleus",
    )
    old.load_state_dict(new.state_dict())  # a current state dict brings the current set-up
    assert (old.upscale, old.anchor_sizes, old.detection_rule) == (
        2.0,
        (12, 24, 48, 96, 192),
        "nucleus",
    )
    future = dict(new.state_dict(), setup_version=torch.tensor(9.0))
    with pytest.raises(ValueError, match="set-up version 9"):
        old.load_state_dict(future)
    with pytest.raises(ValueError, match="detection_rule"):
        build_model("maskrcnn", 3, backbone="resnet18", detection_rule="max")
    with pytest.raises(ValueError, match="one size per FPN level"):
        build_model("maskrcnn", 3, backbone="resnet18", anchor_sizes=[4, 8])
