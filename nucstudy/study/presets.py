"""Presets: named starting points of an experiment's config.

``paper`` is the paper's protocol; ``cpu-demo`` a small model that learns visibly in minutes
on two CPU cores; ``smoke`` seconds, for tests and for checking that everything runs.
:func:`preset` gives a preset's :class:`~nucstudy.study.experiment.ExperimentConfig` with
changes applied.
"""

from __future__ import annotations

from typing import Any

from nucstudy.study.experiment import ExperimentConfig

#: HoVer-Net's HV terms as term weights of the paper's loss: HV MSE counted twice, plus MSGE.
#: The study's recipe (:mod:`nucstudy.study.recipe`) measured them worth about +0.1 binary PQ
#: on CoNSeP; the ``cpu-demo`` preset trains with them, the ``paper`` preset without.
HV_TERMS: dict[str, float] = {"hv_mse": 2.0, "hv_msge": 1.0}

PRESETS: dict[str, dict[str, Any]] = {
    # As the paper: Adam 3e-4, x0.1 at epochs 25 and 35, 50 epochs, batch 32, full model,
    # and its augmentation list including the random crop (its size is the study's choice).
    # Validation (which picks the best checkpoint; the paper says nothing of it) every 5
    # epochs, so that a CPU spends its time training. torch.compile: a step of this network
    # takes 25 % less time compiled (benchmarks/train.py), which repays a cold compilation
    # (about 100 s on the study's CPU) after about 170 steps; a paper run has 500 (CoNSeP) to
    # 7,800 (CoNIC). The cpu-demo network gains 5 % a step: it would need about 12,000.
    "paper": {"crop_fraction": 0.75, "eval_every": 5, "compile": True},
    # A small model on synthetic data that learns visibly in minutes on two CPU cores
    # (about 3 min of training), trained with the study's recipe where it fits those
    # minutes: HoVer-Net's HV terms and cosine decay of the learning rate (not the paper's
    # loss and step schedule; the departures table lists both).
    "cpu-demo": {
        "model_options": {"width": 16, "depth": 4},
        "synthetic_patches": 256,
        "synthetic_size": 128,
        "epochs": 30,
        "batch_size": 8,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "lr_milestones": [20, 26],  # for --set lr_schedule=step
        "loss_weights": HV_TERMS,
        "workers": 0,
        "eval_every": 5,
    },
    # Seconds: for tests and for checking that everything runs.
    "smoke": {
        "model_options": {"width": 8, "depth": 3},
        "synthetic_patches": 8,
        "synthetic_size": 64,
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "lr_milestones": [1],
        "workers": 0,
        "eval_every": 1,
    },
}


def preset(preset_name: str, /, **changes: Any) -> ExperimentConfig:
    """The config of a preset (``paper``, ``cpu-demo``, ``smoke``) with ``changes`` applied.

    The run is named after the preset unless ``changes`` names it.
    """
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; known: {', '.join(PRESETS)}")
    values = {"name": preset_name, "preset": preset_name, **PRESETS[preset_name]}
    return ExperimentConfig().replace(**values).replace(**changes)
