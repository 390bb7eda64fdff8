"""Where the study departs from the paper, generated from the configs of its runs.

Every :class:`~nucstudy.study.experiment.ExperimentConfig` field either belongs to one aspect of
the protocol in :data:`ASPECTS` (compared with the paper there) or is listed in
:data:`NOT_PROTOCOL` (names, paths, devices, speed settings that change nothing the paper
describes). A test keeps the two lists complete, so a new config field cannot escape the
table. :func:`departures_table` gives one row per aspect: the paper's value, each run's
value, whether it departs, and why; :func:`departures_summary` gives the same rows with the
runs' values merged into one column (each value once, with the runs that have it), narrow
enough for a page. Aspects of one method only (the set-up of the Table I baselines) have an
``applies`` test: they are listed only when some run is of that method. The values are in
words (:mod:`nucstudy.study.config_words`).
"""

from __future__ import annotations

import pandas as pd

from nucstudy.data.classes import get_scheme
from nucstudy.data.sources import parse_source, source_name
from nucstudy.engine.run_folder import trained_in_bf16
from nucstudy.study.baseline_departures import BASELINE_ASPECTS
from nucstudy.study.config_words import (
    augmentation_words,
    extra_words,
    loss_words,
    network_words,
    rate_words,
    stain_words,
)
from nucstudy.study.defect_departures import DEFECT_ASPECTS
from nucstudy.study.departure_rows import Aspect, Run, departures_summary

__all__ = [
    "ASPECTS",
    "BASELINE_ASPECTS",
    "NOT_PROTOCOL",
    "departures_summary",
    "departures_table",
]


def _data(run: Run) -> str:
    return source_name(run.config.data)


def _split(run: Run) -> str:
    config = run.config
    if config.test_data is not None:
        return f"separate test source {config.test_data}"
    kind, _ = parse_source(config.data)
    if kind == "consep":
        return "CoNSeP's official test tiles"
    if kind == "synthetic":
        return "synthetic patches from another seed"
    return f"{config.test_fraction:.0%} of the source images, fixed seed"


def _mpp(run: Run) -> float | None:
    return run.metrics.get("mpp")


def _crop(run: Run) -> str:
    config = run.config
    if not config.augment:
        return "no augmentation"
    if config.crop_fraction is None and config.crop_size is None:
        return "none"
    side = run.env.get("crop_px") or config.crop_size
    size = f"{side} px" if side else "side not recorded"
    return size + (f" ({config.crop_fraction:g} of the side)" if config.crop_fraction else "")


#: Class schemes as the table names them.
_SCHEME_NAMES = {"conic": "CoNIC", "consep": "CoNSeP"}


def _classes(run: Run) -> str:
    name = run.metrics.get("scheme")
    if name is None:
        return "not recorded"
    return f"{get_scheme(name).n_classes - 1} {_SCHEME_NAMES.get(name, name)} classes"


def _length(run: Run) -> str:
    config = run.config
    if config.steps is not None:
        return f"{config.steps:,} optimiser steps"
    if config.images is not None:
        return f"{config.images:,} patches seen"
    return f"{config.epochs} epochs"


def _optimiser(run: Run) -> str:
    config = run.config
    if config.lr_schedule == "cosine":
        schedule = "cosine to 0"
    else:
        at = config.lr_milestone_fractions or config.lr_milestones
        of = " of the run" if config.lr_milestone_fractions else ""
        epochs = "" if config.lr_milestone_fractions else "epochs "
        schedule = f"x{config.lr_gamma:g} at {epochs}{', '.join(f'{m:g}' for m in at)}{of}"
    extras = [
        f"weight decay {config.weight_decay:g}" if config.weight_decay else "",
        f"warm-up {config.warmup_steps} steps" if config.warmup_steps else "",
        f"weight average (EMA {config.ema_decay:g}, batch-norm statistics recomputed)"
        if config.ema_decay is not None
        else "",
    ]
    return ", ".join([f"Adam, {rate_words(config.lr)}, {schedule}", *filter(None, extras)])


def _paper_optimiser(run: Run) -> bool:
    config = run.config
    return (config.lr, config.lr_milestones, config.lr_gamma) == (3e-4, [25, 35], 0.1) and (
        config.lr_schedule == "step"
        and not (config.lr_milestone_fractions or config.weight_decay or config.warmup_steps)
        and config.ema_decay is None
    )


def _weights(run: Run) -> str:
    weights = run.config.class_weights
    if weights is None:
        return "none (plain cross-entropy)"
    if weights == "paper":
        scheme = run.metrics.get("scheme", "conic")
        shown = _SCHEME_NAMES.get(scheme, scheme)
        return "the paper's" + ("" if scheme == "conic" else f", mapped onto {shown}'s classes")
    return str(weights)


def _precision(run: Run) -> str:
    names = {True: "bf16 autocast + channels_last", False: "float32", None: "not recorded"}
    return names.get(trained_in_bf16(run.env), "bf16 and float32")


def _device(run: Run) -> str:
    return run.env.get("device_name") or "not recorded"


#: The aspects of the protocol, in the order the table lists them.
ASPECTS: tuple[Aspect, ...] = (
    Aspect(
        "data set",
        "CoNIC (Lizard, colon H&E from several centres)",
        ("data", "synthetic_patches", "synthetic_size"),
        _data,
        lambda run: _data(run) == "CoNIC",
        "CoNIC cannot be downloaded on the study's machines: synthetic H&E is the embedded "
        "default, CoNSeP-256 (one of Lizard's sources) the real data at hand",
    ),
    Aspect(
        "classes",
        "6 CoNIC classes",
        (),
        _classes,
        lambda run: run.metrics.get("scheme") == "conic",
        "CoNSeP has HoVer-Net's 4 merged classes; mPQ+ over 4 classes is another quantity",
    ),
    Aspect(
        "test split",
        "not stated",
        ("test_fraction", "test_data"),
        _split,
        lambda run: False,
        "the paper does not say how it held out test patches; ours never shares an image",
    ),
    Aspect(
        "magnification",
        "20x (0.5 um/px)",
        ("resample",),
        lambda run: f"{_mpp(run)} um/px" if _mpp(run) else "?",
        lambda run: _mpp(run) == 0.5,
        "CoNSeP is 40x; halved (block majority for labels) to CoNIC's 20x",
    ),
    Aspect(
        "network width, depth",
        "not given",
        ("model", "model_options"),
        lambda run: network_words(run.config.model, run.config.model_options),
        lambda run: False,
        "the paper gives no widths: the default is 32 channels, 5 levels; cpu-demo halves "
        "the width and drops a level to train in minutes on 2 CPU cores",
    ),
    Aspect(
        "epochs",
        "50 epochs",
        ("epochs", "steps", "images"),
        _length,
        lambda run: _length(run) == "50 epochs",
        "the compute at hand: 2 CPU cores, no GPU",
    ),
    Aspect(
        "batch size",
        "32",
        ("batch_size",),
        lambda run: str(run.config.batch_size),
        lambda run: run.config.batch_size == 32,
        "smaller batches take more optimiser steps per epoch in the CPU budget",
    ),
    Aspect(
        "optimiser, learning rate, schedule",
        "Adam, 3e-4, x0.1 at epochs 25 and 35",
        ("lr", "lr_milestones", "lr_gamma", "weight_decay", "lr_schedule")
        + ("lr_milestone_fractions", "warmup_steps", "ema_decay"),
        _optimiser,
        _paper_optimiser,
        "a shorter schedule needs a larger rate to learn in fewer steps (Mask R-CNN, trained "
        "from scratch, keeps 3e-4: at 2e-3 it stopped learning)",
    ),
    Aspect(
        "augmentation",
        "flips, rescale, rotation, random HSV (ranges not given)",
        ("augment", "scale_range", "keep_ratio"),
        lambda run: augmentation_words(run.config),
        lambda run: False,
        "the paper gives no ranges: these are the study's",
    ),
    Aspect(
        "random crop",
        "random cropping (size not given)",
        ("crop_size", "crop_fraction"),
        _crop,
        lambda run: _crop(run) not in ("none", "no augmentation"),
        "the paper gives no size: the paper preset crops 0.75 of the side; cpu-demo trains "
        "on whole (already small) patches",
    ),
    Aspect(
        "stain augmentation",
        "none (random HSV only)",
        ("stain_augment", "stain_strength"),
        lambda run: stain_words(run.config.stain_augmentation_used),
        lambda run: run.config.stain_augmentation_used == "none",
        "added for tissue stained unlike the training set (the out-of-domain page)",
    ),
    Aspect(
        "blur, noise, grayscale",
        "none",
        ("extra_augment",),
        lambda run: (
            ", ".join(map(extra_words, run.config.extra_augment))
            if run.config.augment and run.config.extra_augment
            else "none"
        ),
        lambda run: not (run.config.augment and run.config.extra_augment),
        "tried for tissue whose background the training set does not show (the "
        "out-of-domain page)",
    ),
    Aspect(
        "synthetic training patches",
        "none",
        ("synthetic_mix",),
        lambda run: (
            f"{run.config.synthetic_mix:g} synthetic patch(es) per real training patch"
            if run.config.synthetic_mix
            else "none"
        ),
        lambda run: not run.config.synthetic_mix,
        "tried for tissue unlike the training set: the procedural generator's stains and "
        "nuclei beside the real patches (the out-of-domain page)",
    ),
    Aspect(
        "TP class weights",
        "epithelial 2, lymphocyte 2, plasma 3, eosinophil 4, neutrophil 4, connective 2, "
        "background 1",
        ("class_weights",),
        _weights,
        lambda run: run.config.class_weights == "paper" and run.metrics.get("scheme") == "conic",
        "for CoNSeP's classes the paper's weights are mapped by the study "
        "(nucstudy.data.classes.paper_class_weights)",
    ),
    Aspect(
        "loss",
        "CE + Dice (NP), MSE (HV), weighted CE + Dice (TP); Dice the mean over classes",
        ("loss", "loss_weights", "dice_classes"),
        lambda run: loss_words(run.config),
        lambda run: (
            (run.config.loss, run.config.dice_classes) == ("paper", "all")
            and not run.config.loss_weights
        ),
        "the study's recipe adds HoVer-Net's HV terms to the paper's loss (the recipe page "
        "measures them against the loss as written); a Table I baseline keeps its own loss",
    ),
    Aspect(
        "patch sampling",
        "every patch once an epoch (implied by epochs)",
        ("sampling",),
        lambda run: {"uniform": "every patch once an epoch", "rare": "rare classes more often"}[
            run.config.sampling
        ],
        lambda run: run.config.sampling == "uniform",
        "rare-class sampling is a training recipe option for the rare classes",
    ),
    Aspect(
        "post-processing",
        "HoVer-Net's (constants for 40x)",
        ("postprocess",),
        lambda run: {
            "native": "HoVer-Net's, constants scaled to the data's mpp",
            "resample": "HoVer-Net's at 40x on maps resized x2 (the CoNIC baseline's route)",
        }[run.config.postprocess],
        lambda run: False,
        "HoVer-Net's 40x constants lose PQ at 20x even on perfect maps",
    ),
    Aspect(
        "model selection",
        "not stated",
        ("val_fraction", "eval_every", "seed"),
        lambda run: (
            f"best validation mPQ+ (every {run.config.eval_every} epochs) on "
            f"{run.config.val_fraction:.0%} of the training images; seed {run.config.seed}"
        ),
        lambda run: False,
        "the paper does not say which epoch it reports",
    ),
    Aspect(
        "hardware",
        "GPUs",
        (),
        _device,
        lambda run: _device(run) not in ("cpu", "not recorded"),
        "the study's machines have 2 CPU cores and no GPU",
    ),
    Aspect(
        "precision",
        "not stated",
        ("mixed_precision",),
        _precision,
        lambda run: False,
        "bf16 where the hardware computes it natively; its effect is measured on the "
        "performance pages",
    ),
    Aspect(
        "pretraining",
        "not stated",
        (),
        lambda run: "none (random initialisation)",
        lambda run: False,
        "nothing is downloaded on the study's machines",
    ),
)


#: Config fields that are not part of the protocol the paper describes.
NOT_PROTOCOL: dict[str, str] = {
    "name": "the run folder's name",
    "preset": "provenance: the preset the config started from",
    "out_root": "where the run folder is written",
    "device": "where it runs (the hardware row records the device used)",
    "workers": "DataLoader processes: speed only (since the loader fix; see its row)",
    "compile": "torch.compile: speed only",
}


def departures_table(runs: list[Run]) -> pd.DataFrame:
    """One row per aspect that applies to some run: paper, each run's value ("does not
    apply" where the aspect is of another method), whether any run departs, why.

    Returns:
        DataFrame indexed by aspect with columns ``paper``, one per run (its name),
        ``departs`` ("yes" / "no") and ``why`` (empty where no run departs).

    Raises:
        ValueError: two runs of one name, or a run named like one of the other columns.
    """
    names = [run.name for run in runs]
    taken = {"paper", "departs", "why"} & set(names)
    if taken or len(set(names)) < len(names):
        raise ValueError(
            "every run of the departures table needs a name of its own, not paper, departs "
            f"or why; got {', '.join(names)}"
        )
    rows = []
    for aspect in ASPECTS + DEFECT_ASPECTS + BASELINE_ASPECTS:
        applying = [aspect.applies(run) for run in runs]
        if aspect in BASELINE_ASPECTS and not any(applying):
            continue
        if aspect in DEFECT_ASPECTS and all(aspect.same(run) for run in runs):
            continue
        row = {"aspect": aspect.name, "paper": aspect.paper}
        for run, applies in zip(runs, applying, strict=True):
            row[run.name] = aspect.ours(run) if applies else "does not apply"
        departs = not all(aspect.same(r) for r, a in zip(runs, applying, strict=True) if a)
        row["departs"] = "yes" if departs else "no"
        row["why"] = aspect.why if departs else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("aspect")
