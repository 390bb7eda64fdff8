"""The trained-model file: a network's weights and the small spec that says how to use it.

A model file describes itself (:class:`ModelSpec`): the architecture and its options, the
number of TP classes and the class scheme, the training resolution, the post-processing
route and whether to take the fast path. :func:`load_model` rebuilds the network from the
spec alone, so that a file can be used without its run folder and without the study that
trained it; the training config is kept beside it as saved (``training_config``), for the
study to read (:meth:`nucstudy.study.experiment.ExperimentConfig.of_model`).

Files written before the spec was stored carry the same facts in their training config,
``scheme``, ``mpp`` and ``n_types``: :meth:`ModelSpec.of_checkpoint` reads them from there, so
old checkpoints and the committed models keep loading. Files load weights-only, after their
SHA-256 digest is checked (:mod:`nucstudy.engine.checkpoint`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nucstudy.data.classes import ClassScheme, get_scheme
from nucstudy.data.stain import StainReference
from nucstudy.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nucstudy.models import build_model


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model file says of itself.

    Attributes:
        model: registered model name (:func:`nucstudy.models.build_model`).
        model_options: its keyword options (width, depth, use_se, ...).
        n_types: TP classes, background included.
        scheme: the class scheme's name (``"conic"``, ``"consep"``).
        mpp: the training resolution in um/px.
        postprocess: the post-processing route (``"native"`` or ``"resample"``).
        mixed_precision: take the device's fast path at inference.
    """

    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    n_types: int = 2
    scheme: str = "conic"
    mpp: float = 0.5
    postprocess: str = "native"
    mixed_precision: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def of_checkpoint(cls, state: dict[str, Any]) -> ModelSpec:
        """The spec a checkpoint stores (``"spec"``), or for a checkpoint written before
        specs were stored, the same facts from its training config and its own keys."""
        if "spec" in state:
            return cls(**json.loads(state["spec"]))
        config = json.loads(state["config"])
        return cls(
            model=config.get("model", "seresunet"),
            model_options=dict(config.get("model_options", {})),
            n_types=int(state["n_types"]),
            scheme=str(state["scheme"]),
            mpp=float(state["mpp"]),
            postprocess=config.get("postprocess", "native"),
            mixed_precision=bool(config.get("mixed_precision", True)),
        )


@dataclass
class TrainedModel:
    """A trained network with what it needs to be used anywhere.

    Attributes:
        network: the model, on the CPU, in eval mode.
        scheme: the class scheme of its TP head.
        mpp: the resolution it was trained at, in um/px.
        postprocess: its post-processing route (``"native"`` or ``"resample"``).
        training_config: the config it was trained by, as saved (a dict; the study reads it
            as an ExperimentConfig).
        epoch: the epoch of the checkpoint.
        stain: the colour statistics of its training images (stored by
            :func:`export_model`), the target of stain normalisation; None if not stored.
    """

    network: nn.Module
    scheme: ClassScheme
    mpp: float
    postprocess: str
    training_config: dict[str, Any]
    epoch: int
    stain: StainReference | None = None
    step: int | None = None
    spec: ModelSpec | None = None


#: What a trained-model checkpoint must hold (the rest of a training checkpoint, optimiser
#: and generator states, is only for resuming).
MODEL_KEYS = ("model", "config", "scheme", "mpp", "n_types", "epoch")
#: What a trained-model checkpoint may hold beside them: the optimiser step it was saved at
#: (checkpoints since steps were counted) and its spec (since specs were stored).
OPTIONAL_MODEL_KEYS = ("step", "spec")


def _trained_model_state(path: str | os.PathLike) -> dict:
    """A checkpoint's contents, checked to hold what a trained model needs."""
    state = load_checkpoint(path)
    missing = [key for key in MODEL_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trained-model checkpoint (no {', '.join(missing)})")
    return state


#: The largest magnitude a float16 holds; :func:`export_model` keeps a tensor with a larger
#: value in float32 (a batch-norm variance of large activations can exceed it).
FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def non_finite_weights(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """The floating-point tensors of a state dict that hold infinities or NaNs, with how
    many values of each (empty where every value is finite)."""
    counts = {
        name: int((~torch.isfinite(value)).sum())
        for name, value in weights.items()
        if value.is_floating_point()
    }
    return {name: count for name, count in counts.items() if count}


def load_model(path: str | os.PathLike, require_finite: bool = True) -> TrainedModel:
    """Restore a trained model from its checkpoint file alone, without its run folder.

    The checkpoint (written by :class:`nucstudy.engine.trainer.Trainer`) carries its
    :class:`ModelSpec` (architecture and options, class scheme, training resolution,
    post-processing route) and the config it was trained by. It is loaded weights-only; its
    SHA-256 sidecar is checked when it
    is there, and a checkpoint without one loads with a warning.

    Args:
        path: the checkpoint or model file.
        require_finite: refuse a file with infinite or NaN weights (False only to repair
            one: :func:`nucstudy.study.restore.restore_lost_batch_norms`).

    Raises:
        nucstudy.engine.checkpoint.CheckpointError: missing, modified or unsafe file, one that
            lacks what a trained model needs, or one with weights that are not finite.
    """
    state = _trained_model_state(path)
    lost = non_finite_weights(state["model"])
    if require_finite and lost:
        names = ", ".join(f"{name} ({count})" for name, count in lost.items())
        raise CheckpointError(
            f"{path}: weights that are not finite in {names}; export the model again from "
            "its checkpoint, or where only batch-norm statistics are lost (a float16 export "
            f"that overflowed), re-estimate them: nucstudy export {path} --out FILE "
            "--restore-batch-norm"
        )
    spec = ModelSpec.of_checkpoint(state)
    network = build_model(spec.model, n_types=spec.n_types, **spec.model_options)
    network.load_state_dict(state["model"])
    network.eval()
    stain = None
    if "stain_mean" in state and "stain_std" in state:
        stain = StainReference(tuple(state["stain_mean"]), tuple(state["stain_std"]))
    return TrainedModel(
        network=network,
        scheme=get_scheme(spec.scheme),
        mpp=spec.mpp,
        postprocess=spec.postprocess,
        training_config=json.loads(state["config"]),
        epoch=int(state["epoch"]),
        stain=stain,
        step=int(state["step"]) if "step" in state else None,
        spec=spec,
    )


def export_model(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    half: bool = True,
    stain: StainReference | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a small checkpoint for inference only: weights and what :func:`load_model` needs.

    Args:
        checkpoint: a training checkpoint (``checkpoints/best.pt`` of a run).
        out: the file to write (with its ``.sha256`` digest beside it).
        half: store floating-point weights as float16 (half the size; they are read back
            into float32, which changes the outputs by far less than the network's errors),
            except a tensor with a value beyond float16's range (:data:`FLOAT16_MAX`), which
            is stored in float32 rather than as infinities.
        stain: the colour statistics of the model's training images, stored for stain
            normalisation at inference (``segment_image(..., stain_normalise=True)``).
        weights: the network's state dict to store instead of the checkpoint's (one whose
            batch-norm statistics were re-estimated); None: the checkpoint's.

    Raises:
        nucstudy.engine.checkpoint.CheckpointError: the checkpoint is missing, unsafe or
            incomplete, or the weights to store are not all finite.
    """
    state = _trained_model_state(checkpoint)
    slim = {key: state[key] for key in MODEL_KEYS + OPTIONAL_MODEL_KEYS if key in state}
    if weights is not None:
        slim["model"] = weights
    lost = non_finite_weights(slim["model"])
    if lost:
        names = ", ".join(lost)
        raise CheckpointError(
            f"{checkpoint}: weights that are not finite ({names}); nothing written"
        )
    if half:
        slim["model"] = {name: _half_if_it_fits(value) for name, value in slim["model"].items()}
    if stain is not None:
        slim["stain_mean"], slim["stain_std"] = list(stain.mean), list(stain.std)
    return save_checkpoint(out, slim)


def _half_if_it_fits(value: torch.Tensor) -> torch.Tensor:
    """A float16 copy of a floating-point tensor whose values float16 can hold; any other
    tensor (integers, or a value beyond :data:`FLOAT16_MAX`) as it is."""
    if not value.is_floating_point() or (value.numel() and value.abs().max() > FLOAT16_MAX):
        return value
    return value.half()
