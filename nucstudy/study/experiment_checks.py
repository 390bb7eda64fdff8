"""The checks an :class:`~nucstudy.study.experiment.ExperimentConfig` passes when it is made.

Every field is first checked against its type hint; then the values: ranges, the names the
library knows (models and their options, losses, augmentations, samplings, learning-rate
schedules, post-processing routes, data sources) and the fields that go together or
exclude each other. Each problem is one sentence naming the field, and a config is refused
with all of its problems at once.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING

from nucstudy.common.validation import type_problems
from nucstudy.data.augment import EXTRA_AUGMENTS, STAIN_STRENGTHS
from nucstudy.data.sampling import SAMPLINGS
from nucstudy.data.sources import parse_source
from nucstudy.engine.losses import DENSE_LOSS_TERMS, DICE_CLASSES
from nucstudy.engine.methods import LOSSES_OF_MODEL
from nucstudy.engine.schedule import LR_SCHEDULES
from nucstudy.models import model_option_problems
from nucstudy.postprocess import ROUTES

if TYPE_CHECKING:  # the checks read a config; the config module calls them
    from nucstudy.study.experiment import ExperimentConfig


def config_problems(config: ExperimentConfig) -> list[str]:
    """One sentence per problem with the fields of ``config`` (empty: all fine). Where a
    field has the wrong type only the type problems are given."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    problems = type_problems(values, typing.get_type_hints(type(config)), "config field")
    if problems:  # the range checks below need the right types
        return problems
    problems = model_option_problems(config.model, config.model_options)
    if config.epochs < 1:
        problems.append(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {config.batch_size}")
    if not config.lr > 0:
        problems.append(f"lr must be positive, got {config.lr}")
    if config.crop_size is not None and config.crop_fraction is not None:
        problems.append("set crop_size or crop_fraction, not both")
    if config.crop_fraction is not None and not 0 < config.crop_fraction <= 1:
        problems.append(f"crop_fraction must be in (0, 1], got {config.crop_fraction}")
    if config.crop_size is not None and config.crop_size < 1:
        problems.append(f"crop_size must be >= 1, got {config.crop_size}")
    if config.stain_strength not in STAIN_STRENGTHS:
        problems.append(
            f"stain_strength must be {' or '.join(map(repr, STAIN_STRENGTHS))}, "
            f"got {config.stain_strength!r}"
        )
    if config.stain_strength != "default" and not config.stain_augment:
        problems.append("stain_strength applies only with stain_augment: set it to true")
    low_high = config.scale_range
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
        problems.append(f"scale_range must be [low, high] with 0 < low <= high, got {low_high}")
    unknown = sorted(set(config.extra_augment) - set(EXTRA_AUGMENTS))
    if unknown:
        problems.append(
            f"extra_augment must list only {' and '.join(map(repr, EXTRA_AUGMENTS))}, "
            f"got {unknown}"
        )
    if config.extra_augment and not config.augment:
        problems.append("extra_augment applies only with augment: set it to true")
    if config.synthetic_mix < 0:
        problems.append(f"synthetic_mix must be >= 0, got {config.synthetic_mix}")
    if config.synthetic_mix and config.data.partition(":")[0] == "synthetic":
        problems.append("synthetic_mix adds synthetic patches to real data; data is synthetic")
    if config.synthetic_mix and config.data.partition(":")[0] == "consep" and not config.resample:
        problems.append("synthetic_mix needs the data at 20x: set resample to true")
    if not 0 < config.test_fraction < 1:
        problems.append(f"test_fraction must be in (0, 1), got {config.test_fraction}")
    if not 0 <= config.val_fraction < 1:
        problems.append(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    problems += _schedule_problems(config)
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        problems.append(f"device must be auto, cpu or cuda, got {config.device!r}")
    if config.eval_every < 1:
        problems.append(f"eval_every must be >= 1, got {config.eval_every}")
    if config.workers < 0:
        problems.append(f"workers must be >= 0, got {config.workers}")
    losses = LOSSES_OF_MODEL.get(config.model, ())
    if losses and config.loss not in losses:
        problems.append(
            f"model {config.model!r} trains with loss {' or '.join(map(repr, losses))}, "
            f"got {config.loss!r}"
        )
    if config.loss == "maskrcnn" and config.class_weights is not None:
        problems.append("Mask R-CNN's loss has no class weights: set class_weights to null")
    if config.postprocess not in ROUTES:
        problems.append(
            f"postprocess must be {' or '.join(map(repr, ROUTES))}, got {config.postprocess!r}"
        )
    if isinstance(config.class_weights, str) and config.class_weights != "paper":
        problems.append(
            f"class_weights must be 'paper', null or a list, got {config.class_weights!r}"
        )
    for spec in [config.data] + ([config.test_data] if config.test_data is not None else []):
        try:
            parse_source(spec)
        except ValueError as error:
            problems.append(str(error))
    return problems


def _schedule_problems(config: ExperimentConfig) -> list[str]:
    """What is wrong with the run's length, learning-rate schedule, average and loss."""
    problems = []
    if config.steps is not None and config.images is not None:
        problems.append("set steps or images, not both")
    for name in ("steps", "images"):
        value = getattr(config, name)
        if value is not None and value < 1:
            problems.append(f"{name} must be >= 1, got {value}")
    if config.images is not None and config.images < config.batch_size:
        problems.append(f"images ({config.images}) must be at least one batch")
    if config.lr_schedule not in LR_SCHEDULES:
        problems.append(f"lr_schedule must be 'step' or 'cosine', got {config.lr_schedule!r}")
    fractions = config.lr_milestone_fractions or []
    if not all(0 < f < 1 for f in fractions):
        problems.append(f"lr_milestone_fractions must lie in (0, 1), got {fractions}")
    if config.warmup_steps < 0:
        problems.append(f"warmup_steps must be >= 0, got {config.warmup_steps}")
    if config.ema_decay is not None and not 0 < config.ema_decay < 1:
        problems.append(f"ema_decay must be in (0, 1), got {config.ema_decay}")
    if config.dice_classes not in DICE_CLASSES:
        problems.append(f"dice_classes must be 'all' or 'present', got {config.dice_classes!r}")
    if config.sampling not in SAMPLINGS:
        problems.append(f"sampling must be 'uniform' or 'rare', got {config.sampling!r}")
    if config.loss_weights and config.loss == "maskrcnn":
        problems.append("loss_weights apply to the NP/HV/TP losses, not Mask R-CNN's")
    unknown = sorted(set(config.loss_weights) - set(DENSE_LOSS_TERMS))
    if unknown:
        problems.append(
            f"loss_weights names unknown term(s) {', '.join(unknown)}; "
            f"terms: {', '.join(DENSE_LOSS_TERMS)}"
        )
    if any(weight < 0 for weight in config.loss_weights.values()):
        problems.append(f"loss_weights must be >= 0, got {config.loss_weights}")
    return problems
