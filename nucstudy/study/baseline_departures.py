"""The departures table's rows on the set-up of the Table I baselines (HoVer-Net's output
layers; Mask R-CNN's image scale, anchors, detection score and detection counts), listed
where a run of that method is in the table. The paper states none of them."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from nucstudy.models.hovernet import HEAD_INIT_STD
from nucstudy.models.maskrcnn import SETUP_VERSION, SETUPS, NucleusMaskRCNN
from nucstudy.postprocess.detections import SCORE_THRESHOLD
from nucstudy.study.departure_rows import Aspect, Run

_DETECTIONS = inspect.signature(NucleusMaskRCNN).parameters["detections_per_image"].default
_RULES = {
    "nucleus": "nucleus score 1 - p(background), likeliest foreground class",
    "per_class": "torchvision's per-class scores",
}
#: How each baseline option reads in the table.
_TEXT: dict[str, Callable[[object], str]] = {
    "head_init": lambda v: (
        f"output convs normal (std {HEAD_INIT_STD:g}), zero bias"
        if v == "small"
        else "Kaiming fan-out, output convs included"
    ),
    "upscale": lambda v: f"images x{v:g}",
    "anchor_sizes": lambda v: f"anchors {list(v)} px of the data",
    "detection_rule": lambda v: _RULES[v],
    "detections_per_image": lambda v: f"2,000 proposals, up to {v} detections per image",
}


def _option(name: str, now: object, then: object | None = None) -> Callable[[Run], str]:
    """A baseline's model option in words. One its config leaves out is at the default,
    which fixing the baselines changed from ``then`` to ``now``: the config cannot tell which
    held."""

    def ours(run: Run) -> str:
        text, value = _TEXT[name], run.config.model_options.get(name)
        if value is not None:
            return text(value)
        before = "" if then in (None, now) else f" by default ({text(then)} in the earlier runs)"
        return text(now) + before

    return ours


def _baseline(name: str, model: str, ours: Callable[[Run], str], why: str) -> Aspect:
    """An aspect of one baseline's set-up (the paper states none)."""
    applies = lambda run: run.config.model == model  # noqa: E731
    return Aspect(name, "not stated", (), ours, lambda run: False, why, applies)


_NOW, _THEN = SETUPS[SETUP_VERSION], SETUPS[1]
#: The set-up of the Table I baselines, listed where a run is of that method.
BASELINE_ASPECTS: tuple[Aspect, ...] = (
    _baseline(
        "HoVer-Net output layers",
        "hovernet",
        _option("head_init", "small", "kaiming"),
        "Kaiming's fan-out on the 1 x 1 output convs starts the HV maps at several units; "
        "started small, the first losses are of the order of the proposed network's",
    ),
    _baseline(
        "Mask R-CNN image scale and anchors",
        "maskrcnn",
        lambda run: "; ".join(
            _option(name, _NOW[name], _THEN[name])(run) for name in ("upscale", "anchor_sizes")
        ),
        "COCO's (short side 800 px, anchors 32-512 px) miss 20x nuclei: most nuclei need an "
        "anchor at IoU >= 0.5 (maskrcnn_anchors.anchor_coverage; at least 75 % on CoNSeP, tested)",
    ),
    _baseline(
        "Mask R-CNN detection score",
        "maskrcnn",
        lambda run: (
            _option("detection_rule", _NOW["detection_rule"], _THEN["detection_rule"])(run)
            + f"; masks pasted from score {SCORE_THRESHOLD:g}"
        ),
        "per-class scores lose a nucleus whose class probability an under-trained "
        "classifier spreads over several classes",
    ),
    _baseline(
        "Mask R-CNN proposals and detections",
        "maskrcnn",
        _option("detections_per_image", _DETECTIONS),
        "COCO's 1,000 proposals and 100 detections are fewer than CoNSeP's densest patches need",
    ),
)
