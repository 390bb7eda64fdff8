"""An experiment as data: :class:`ExperimentConfig`, everything that defines one training run.

A config is saved beside its run (``config.json``, :mod:`nucstudy.engine.run_folder`), checked
field by field when made (one sentence per problem: :mod:`nucstudy.study.experiment_checks`),
and produces what the engine needs from it: the run's length and learning rate by step
(:meth:`ExperimentConfig.lr_schedule_of`), its data (:meth:`ExperimentConfig.open_data`) and
the spec its model files carry (:meth:`ExperimentConfig.model_spec`). Presets are
:mod:`nucstudy.study.presets`'; gathering run folders into a table is
:mod:`nucstudy.study.registry`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nucstudy.common.io import atomic_write_text
from nucstudy.data.augment import SCALE_RANGE
from nucstudy.data.conic import ConicData
from nucstudy.data.sources import open_source, parse_source
from nucstudy.engine.model_file import ModelSpec, TrainedModel
from nucstudy.engine.run_folder import (  # noqa: F401 (names of this module before the engine)
    CONFIG_FILE,
    ENV_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PER_IMAGE_FILE,
    TRAINED_ON_FILE,
    environment_info,
    git_commit,
    now,
    write_env,
)
from nucstudy.engine.schedule import LRSchedule, milestone_steps
from nucstudy.engine.training_data import crop_side  # noqa: F401 (a name of this module too)
from nucstudy.study.experiment_checks import config_problems


@dataclass
class ExperimentConfig:
    """Everything that defines one training run.

    Attributes:
        name: run name (the default run folder is ``<out_root>/<name>``).
        preset: the preset the config started from (provenance only; ``custom`` if none).
        model: registered model name (``"seresunet"``, ``"hovernet"``, ``"maskrcnn"``).
        model_options: keyword options of the model (``width``, ``depth``, ``use_se``,
            ``use_ca``, ...).
        class_weights: TP class weights: ``"paper"`` (the paper's, mapped by class name onto
            the data's scheme), ``None`` (plain cross-entropy: the "no class weights"
            ablation), or one float per class of the scheme.
        loss: ``"paper"`` (eqs. 1-5) or ``"hovernet"`` (HoVer-Net's loss) for the networks
            with NP, HV and TP heads; ``"maskrcnn"`` (torchvision's losses, no class
            weights) for Mask R-CNN (see :data:`nucstudy.engine.methods.LOSSES_OF_MODEL`).
        postprocess: post-processing route for validation and evaluation (see
            :func:`nucstudy.postprocess.hover_postprocess`): ``"native"`` (HoVer-Net's
            constants scaled to the data's resolution) or ``"resample"`` (the CoNIC baseline:
            maps resized to 0.25 um/px, the 40x constants, and back).
        data: data source: ``"synthetic"``, ``"consep:<folder>"`` or ``"conic:<folder>"``.
        synthetic_patches: patches generated when ``data`` is synthetic.
        synthetic_size: their side in pixels.
        resample: halve CoNSeP's 40x to CoNIC's 20x.
        test_fraction: CoNIC folder: share of its patches held out, by source image, as the
            test split (:func:`nucstudy.data.sources.conic_split`, a fixed seed).
        test_data: a separate test source (e.g. ``"conic:<test folder>"``); then ``data`` is
            trained on whole and the test split is read from here.
        val_fraction: share of patches (grouped by source image) held out for validation.
        augment: apply the paper's augmentation to training patches.
        crop_size: side of the random training crop in pixels (None: see ``crop_fraction``).
        crop_fraction: side of the random training crop as a share of the patch side,
            rounded down to a multiple of 32 px, the networks' size multiple (None: whole
            patches unless ``crop_size`` is set; the two are exclusive). The paper preset
            crops 0.75 of the side: 192 of CoNIC's 256 px, 96 of CoNSeP's 128 px at 20x,
            so that every step sees a new window of each patch while keeping most of its
            context. See :func:`crop_side`.
        stain_augment: add stain augmentation (albumentations' ``HEStain``) to the paper's
            list, for tissue stained unlike the training set (not in the paper).
        stain_strength: ``"default"`` (HEStain at albumentations' defaults, on half the
            patches) or ``"strong"`` (every patch, the widest stain ranges, plus brightness,
            contrast and gamma); see :func:`nucstudy.data.augment.build_augmentation`.
        scale_range: (low, high) range of the random rescale factor, e.g. ``[0.5, 2.0]``
            for nuclei up to twice as large or small as the training set's.
        extra_augment: optional augmentations beyond the paper's list and stain, any of
            ``"blur_noise"`` and ``"grayscale"`` (not in the paper); see
            :func:`nucstudy.data.augment.build_augmentation`.
        synthetic_mix: synthetic patches added to the training side of the split, as a
            share of its real patches (0: none; 1: as many synthetic as real). They are
            generated in the data's class scheme and patch size at its resolution (20x),
            seeded by ``seed``, and never reach validation or test (not in the paper; for
            tissue unlike the training set, the out-of-domain page).
        epochs, batch_size, lr, weight_decay: optimisation (Adam). ``epochs`` is the run's
            length unless ``steps`` or ``images`` is set.
        steps: the run's length in optimiser steps (None: ``epochs`` passes over the
            training patches). The last epoch may stop part-way.
        images: the run's length in training patches seen, ``images // batch_size`` steps
            (exclusive with ``steps``).
        lr_schedule: ``"step"`` (the paper's: the rate times ``lr_gamma`` at each
            milestone) or ``"cosine"`` (half a cosine down to 0 at the last step); see
            :class:`nucstudy.engine.schedule.LRSchedule`.
        lr_milestones, lr_gamma: ``"step"`` schedule: the learning rate is multiplied by
            ``lr_gamma`` at each milestone epoch.
        lr_milestone_fractions: milestones as shares of the run's steps instead
            (``[0.5, 0.7]``: the paper's epochs 25 and 35 of 50 in a run of any length).
        warmup_steps: linear warm-up of the learning rate over the first steps (0: none).
        ema_decay: keep an exponential moving average of the weights with this decay
            (e.g. 0.999) and validate, save and evaluate the average (None: no average).
        loss_weights: term weights of the loss by term name, over its defaults (e.g.
            ``{"hv_mse": 2, "hv_msge": 1}``: HoVer-Net's HV terms in the paper's loss; a
            weight for ``hv_msge`` adds that term); see :mod:`nucstudy.engine.losses`.
        dice_classes: ``"all"`` (the paper's eq. (5): the Dice averaged over every class) or
            ``"present"`` (over the classes present in the batch's targets, so that a rare
            class absent from a batch is not driven to zero; not in the paper).
        sampling: ``"uniform"`` (every training patch once an epoch, shuffled) or
            ``"rare"`` (patches drawn with replacement, more often where they hold rare
            classes: :func:`nucstudy.data.rare_class_weights`; not in the paper).
        keep_ratio: the random rescale keeps the aspect ratio (albumentations' ``Affine``
            otherwise draws x and y scales independently).
        seed: seeds weights, shuffling, augmentation and the split.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        mixed_precision: take the device's fast path, bf16 autocast and channels_last where
            the device supports them (CUDA; CPUs with AVX512-BF16 or AMX), detected at run
            time by :func:`nucstudy.engine.device.choose_fast_path`; False: float32 everywhere.
            The path taken is recorded in ``env.json``.
        compile: train through ``torch.compile`` (inductor). On the study's 2-core CPU it
            makes a training step of the default network 25 % faster and one of the
            ``cpu-demo`` network 5 %, after a compilation of about 100 s the first time
            (inductor then caches it on disk; ``benchmarks/train.py``): it repays itself
            after about 170 steps of the default network, so the ``paper`` preset turns it
            on, and after about 12,000 of the ``cpu-demo`` network, so that preset does not.
        workers: DataLoader processes (on a CPU at most the cores the intra-op threads
            leave free: :func:`nucstudy.engine.device.loader_workers`).
        eval_every: validate every this many epochs (and after the last). With
            ``val_fraction`` 0 every source image trains and nothing validates: the
            checkpoint kept is the last.
        out_root: folder under which run folders are made.
    """

    name: str = "run"
    preset: str = "custom"
    model: str = "seresunet"
    model_options: dict[str, Any] = field(default_factory=dict)
    class_weights: str | list[float] | None = "paper"
    loss: str = "paper"
    postprocess: str = "native"
    data: str = "synthetic"
    synthetic_patches: int = 512
    synthetic_size: int = 256
    resample: bool = False
    test_fraction: float = 0.2
    test_data: str | None = None
    val_fraction: float = 0.2
    augment: bool = True
    crop_size: int | None = None
    crop_fraction: float | None = None
    stain_augment: bool = False
    stain_strength: str = "default"
    scale_range: list[float] = field(default_factory=lambda: list(SCALE_RANGE))
    extra_augment: list[str] = field(default_factory=list)
    synthetic_mix: float = 0.0
    epochs: int = 50
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.0
    steps: int | None = None
    images: int | None = None
    lr_schedule: str = "step"
    lr_milestones: list[int] = field(default_factory=lambda: [25, 35])
    lr_milestone_fractions: list[float] | None = None
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    ema_decay: float | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    dice_classes: str = "all"
    sampling: str = "uniform"
    keep_ratio: bool = False
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    compile: bool = False
    workers: int = 4
    eval_every: int = 1
    out_root: str = "runs"

    def __post_init__(self) -> None:
        problems = config_problems(self)
        if problems:
            raise ValueError("invalid experiment config: " + "; ".join(problems))

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length in optimiser steps, given the steps of one pass over the
        training patches: ``steps``, ``images // batch_size`` or ``epochs`` passes."""
        if self.steps is not None:
            return self.steps
        if self.images is not None:
            return self.images // self.batch_size
        return self.epochs * steps_per_epoch

    def lr_schedule_of(self, steps_per_epoch: int) -> LRSchedule:
        """The learning rate of every step of this run (:class:`LRSchedule`)."""
        total = self.total_steps(steps_per_epoch)
        milestones = milestone_steps(
            self.lr_milestone_fractions, self.lr_milestones, total, steps_per_epoch
        )
        return LRSchedule(
            self.lr, total, self.lr_schedule, milestones, self.lr_gamma, self.warmup_steps
        )

    def model_spec(self, n_types: int, scheme: str, mpp: float) -> ModelSpec:
        """The spec a model file trained by this config carries
        (:mod:`nucstudy.engine.model_file`),
        for ``n_types`` TP classes of the scheme named ``scheme`` at ``mpp`` um/px."""
        return ModelSpec(
            model=self.model,
            model_options=dict(self.model_options),
            n_types=n_types,
            scheme=scheme,
            mpp=mpp,
            postprocess=self.postprocess,
            mixed_precision=self.mixed_precision,
        )

    @classmethod
    def of_model(cls, trained: TrainedModel) -> ExperimentConfig:
        """The config a loaded model file was trained by."""
        return cls.from_dict(trained.training_config)

    @property
    def stain_augmentation_used(self) -> str:
        """How the training patches were recoloured: ``"none"`` (no stain augmentation, or
        no augmentation at all), or the stain strength (``"default"`` or ``"strong"``)."""
        return self.stain_strength if self.augment and self.stain_augment else "none"

    @property
    def model_text(self) -> str:
        """The network and its options as a reader reads them: ``seresunet width 16, depth 4``,
        ``maskrcnn backbone resnet18, upscale 1.0``, or the network's name alone."""
        options = ", ".join(f"{key} {value}" for key, value in self.model_options.items())
        return f"{self.model} {options}".strip()

    @property
    def run_dir(self) -> Path:
        """The run folder, ``<out_root>/<name>``."""
        return Path(self.out_root) / self.name

    def open_data(self, split: str = "train") -> ConicData:
        """The data set of this experiment: ``split`` ``"train"`` or ``"test"`` of its source.

        CoNSeP gives its official split; a synthetic test split is drawn from another seed;
        a CoNIC folder is split by source image (``test_fraction``). With ``test_data``,
        training takes the whole of ``data`` and testing the whole of ``test_data`` (for a
        CoNIC folder; the test split of another source).
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        spec = self.data if split == "train" or self.test_data is None else self.test_data
        if self.test_data is not None and parse_source(spec)[0] == "conic":
            split = "all"
        return open_source(
            spec,
            split,
            resample=self.resample,
            synthetic_patches=self.synthetic_patches,
            synthetic_size=self.synthetic_size,
            seed=self.seed,
            test_fraction=self.test_fraction,
        )

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes`` applied (unknown names raise a clear error)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperimentConfig:
        """Read a config written by :meth:`save`; a bad file gets an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config not found")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None
