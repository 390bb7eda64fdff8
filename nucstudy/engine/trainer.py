"""Training: the :class:`Trainer` behind ``nucstudy train`` and the experiment notebooks.

One code path serves a laptop CPU, one GPU and several GPUs: under ``torchrun
--nproc_per_node=N`` each process trains a DistributedDataParallel replica on its share of
every epoch (:mod:`nucstudy.engine.distributed`) and rank 0 validates and writes the run
folder. Where the device supports it (CUDA, or a CPU with native bf16), the forward pass
runs under bf16 autocast with channels_last tensors (``mixed_precision``; chosen at run
time by :func:`nucstudy.engine.device.choose_fast_path` and recorded in ``env.json``).

Logs: one line per epoch (and the validation scores of the epochs that have them); a tqdm
bar over the batches only when stderr is a terminal, so ``nucstudy train > log`` stays
readable.

Length and learning rate: a run lasts ``epochs`` passes over its training patches, or
``steps`` optimiser steps, or ``images`` patches seen (the last epoch may stop part-way). The
learning rate is a pure function of the optimiser step
(:meth:`ExperimentConfig.lr_schedule_of`), set before every step. With ``ema_decay`` an
exponential moving average of the weights is validated, saved as the checkpoint's
``"model"`` and so evaluated (the raw weights are kept as ``"train_model"`` for resuming);
its batch-norm statistics are recomputed over the epoch's training batches before each
validation and at the end of the run.

Reproducibility: weights, shuffling (reseeded every epoch), the split and every item's
augmentation (:mod:`nucstudy.engine.training_data`) follow from the config's seed, so a
resumed run reaches the same weights as an uninterrupted one on the CPU. Checkpoints
(``checkpoints/last.pt`` every epoch, ``checkpoints/best.pt`` at the best validation mPQ+,
or the last where nothing validates) are written atomically and hold model, optimiser,
epoch, optimiser step, RNG states and the config.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from nucstudy.common.io import atomic_write_text
from nucstudy.data import ConicData, NucleiDataset
from nucstudy.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from nucstudy.engine.device import FastPath, choose_fast_path, loader_workers
from nucstudy.engine.distributed import process_device, replicate, share_buffers
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.methods import build_method
from nucstudy.engine.run_folder import (
    CONFIG_FILE,
    ENV_FILE,
    HISTORY_FILE,
    TRAINED_ON_FILE,
    earlier_segments,
    new_segment,
    now,
    write_env,
)
from nucstudy.engine.schedule import refresh_batch_norm, set_lr, weight_average
from nucstudy.engine.training_data import (
    crop_side,
    training_augmentation,
    training_loader,
    training_split,
)
from nucstudy.metrics import conic_metrics
from nucstudy.models import build_model

if TYPE_CHECKING:  # the study's config reaches the Trainer as an object
    from nucstudy.study.experiment import ExperimentConfig


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss, a run folder that does not match)."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains one :class:`ExperimentConfig` into its run folder.

    Args:
        config: the experiment.
        data: training data; default: ``config.open_data("train")``.
        run_dir: where to write; default ``config.run_dir``.
        resume: continue from ``run_dir/checkpoints/last.pt`` (its config must match).
        progress: log one line per epoch, and a tqdm bar over the batches when stderr is a
            terminal (rank 0 only).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        data: ConicData | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else config.run_dir
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = self.world_size > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = process_device(config.device, self.distributed)
        self.fast_path: FastPath = choose_fast_path(self.device, config.mixed_precision)
        self.workers = loader_workers(config.workers, self.device)
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.earlier_segments: list[dict[str, Any]] = []
        seed_everything(config.seed)

        self.data = data if data is not None else config.open_data("train")
        self.scheme = self.data.scheme
        self.data, self.train_idx, self.val_idx = training_split(config, self.data)
        self.crop = crop_side(config, min(self.data.images.shape[1:3]))
        augment = training_augmentation(config, self.crop)
        self.method = build_method(config, self.scheme)
        self.train_set = NucleiDataset(
            self.data, self.train_idx, augment, seed=config.seed, targets=self.method.targets
        )

        self.model = build_model(
            config.model, n_types=self.scheme.n_classes, **config.model_options
        )
        self.model.to(self.device, memory_format=self.fast_path.memory_format)
        self.method.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.average = (
            weight_average(self.model, config.ema_decay) if config.ema_decay is not None else None
        )
        self.network: nn.Module = self.model
        if self.distributed:
            self.network = replicate(self.model, self.device, self.method.may_skip_parameters)
        if config.compile:
            self.network = torch.compile(self.network)
        if config.sampling == "rare" and self.distributed:
            raise TrainingError("sampling 'rare' is not available with several processes")
        self.loader = training_loader(
            config, self.train_set, self.scheme.n_classes, self.method.collate,
            self.world_size, self.workers, self.device,
        )  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        self.lr_at = config.lr_schedule_of(self.steps_per_epoch)
        self.total_steps = self.lr_at.total_steps
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.epoch = 0
        self.step = 0
        self.multiply_adds_per_patch: float | None = None
        self.best_score = -math.inf
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume()

    # -- set-up ------------------------------------------------------------------------------

    def _resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        state = load_checkpoint(path)
        saved = type(self.config).from_dict(json.loads(state["config"]))
        if saved.to_dict() != self.config.to_dict():
            raise TrainingError(f"{path}: saved with another config; resume with the same one")
        self.model.load_state_dict(state.get("train_model", state["model"]))
        if self.average is not None:
            self.average.module.load_state_dict(state["model"])
            self.average.n_averaged.fill_(int(state["ema_updates"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        # checkpoints before the step count was kept ended every epoch on a full epoch
        self.step = int(state.get("step", self.epoch * self.steps_per_epoch))
        self.best_score = float(state["best_score"])
        set_rng_state(state["rng"])
        self.earlier_segments = earlier_segments(self.run_dir / ENV_FILE)
        history = self.run_dir / HISTORY_FILE
        if history.is_file():
            rows = pd.read_csv(history).to_dict("records")
            self.history = [row for row in rows if row["epoch"] <= self.epoch]
            for row in self.history:  # rows written before steps were counted
                if pd.isna(row.get("step", math.nan)):
                    row["step"] = row["epoch"] * self.steps_per_epoch
                    row["images_seen"] = row["step"] * self.config.batch_size

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> pd.DataFrame:
        """Train for the run's steps; returns the history (one row per epoch)."""
        self.segment = new_segment(self.step, self.fast_path.bf16)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / CONFIG_FILE)
            trained_on = {"data": self.config.data, "fingerprints": self.data.fingerprints()}
            atomic_write_text(self.run_dir / TRAINED_ON_FILE, json.dumps(trained_on) + "\n")
            self._write_env()
        try:
            while self.step < self.total_steps:
                row = self._train_epoch(self.epoch)
                self.epoch += 1
                last = self.step >= self.total_steps
                if self.is_main and (self.epoch % self.config.eval_every == 0 or last):
                    if self.average is not None:
                        self.refresh_average(self.epoch - 1)
                    row.update(self.validate())
                self._end_epoch(row)
        finally:
            if self.distributed and dist.is_initialized():
                dist.barrier()
        if self.is_main:
            self.segment["finished"] = now()
            self._write_env()
        return pd.DataFrame(self.history)

    def _write_env(self) -> None:
        """env.json: versions, set-up, and every segment of the run (one per ``fit``, a
        resumed run adds one); ``started`` and ``finished`` are the current segment's."""
        write_env(
            self.run_dir,
            started=self.segment["started"],
            finished=self.segment["finished"],
            segments=[*self.earlier_segments, self.segment],
            **self._env(),
        )

    def _env(self) -> dict[str, Any]:
        """What env.json records of this run's set-up beside the package versions."""
        return {
            "world_size": self.world_size,
            "fast_path": self.fast_path.to_dict(),
            "threads": torch.get_num_threads(),
            "workers": self.workers,
            "crop_px": self.crop if self.config.augment else None,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            # forward + backward of one training patch, counted on the first step
            "train_multiply_adds_per_patch": self.multiply_adds_per_patch,
        }

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.network.train()
        self._seed_epoch(epoch)
        sums: dict[str, float] = defaultdict(float)
        batches = images = 0
        lr = self.lr_at(self.step)
        start = time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.total_epochs}",
            unit="batch",
            disable=not (self.progress and sys.stderr.isatty()),
            leave=False,
        )
        for batch in bar:
            if self.step >= self.total_steps:
                break
            set_lr(self.optimizer, self.lr_at(self.step))
            terms = self._step(batch, epoch)
            self.step += 1
            for name, value in terms.items():
                sums[name] += value
            batches += 1
            images += len(batch["image"]) * self.world_size
            bar.set_postfix({k: f"{v / batches:.3f}" for k, v in sums.items()}, refresh=False)
        if self.distributed:  # DDP keeps only the weights in step
            share_buffers(self.model)
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train_{name}": value / max(batches, 1) for name, value in sums.items()})
        row.update({"seconds": seconds, "images_per_s": images / seconds if seconds else 0.0})
        row.update({"step": self.step, "images_seen": self.step * self.config.batch_size})
        return row

    def _step(self, batch: dict[str, Any], epoch: int) -> dict[str, float]:
        # the first step of an uncompiled run counts its multiply-adds (the training cost)
        counting = self.multiply_adds_per_patch is None and not self.config.compile
        counter = FlopCounterMode(display=False) if counting else contextlib.nullcontext()
        with counter:
            terms = self.method.loss_terms(self.network, batch, self.device, self.fast_path)
            total = terms["total"]
            if not torch.isfinite(total):
                raise TrainingError(
                    f"the loss became {total.item()} in epoch {epoch + 1}; training stopped. "
                    f"The last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'} "
                    "(try a lower lr)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
        if counting:
            self.multiply_adds_per_patch = counter.get_total_flops() / 2 / len(batch["image"])
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return {name: float(value.detach()) for name, value in terms.items()}

    def _seed_epoch(self, epoch: int) -> None:
        """Shuffling and augmentation of ``epoch``'s batches, from the config's seed."""
        self.train_set.set_epoch(epoch)
        if self.distributed:
            self.loader.sampler.set_epoch(epoch)
        else:
            self.loader.generator.manual_seed(self.config.seed * 100_003 + epoch)

    def refresh_average(self, epoch: int) -> None:
        """The weight average's batch-norm statistics over ``epoch``'s training batches (the
        same patches and augmentation; reseeded per epoch, so training goes on unchanged)."""
        self._seed_epoch(epoch)
        refresh_batch_norm(self.average.module, self.loader, self._training_forward)

    def _training_forward(self, network: nn.Module, batch: dict[str, Any]) -> object:
        return self.method.loss_terms(network, batch, self.device, self.fast_path)

    @property
    def kept_model(self) -> nn.Module:
        """The weights validated, saved as the checkpoint's model and so evaluated: the
        weight average where the run keeps one, else the trained weights."""
        return self.average.module if self.average is not None else self.model

    def validate(self) -> dict[str, float]:
        """mPQ+, R² and PQ of the current model on the validation patches."""
        if self.val_idx.size == 0:
            return {}
        val = self.data.subset(self.val_idx)
        pred = predict_labels(
            self.kept_model,
            val.images,
            val.mpp,
            batch_size=max(1, self.config.batch_size),
            device=self.device,
            mixed_precision=self.config.mixed_precision,
            route=self.config.postprocess,
        )
        scores = conic_metrics(pred, val.labels, val.scheme)
        return {"val_mpq+": scores["mpq+"], "val_r2": scores["r2"], "val_pq": scores["pq"]}

    def _end_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        score = row.get("val_mpq+")
        improved = score is not None and score > self.best_score
        improved = improved or self.val_idx.size == 0  # nothing validates: keep the last
        if improved:
            self.best_score = score
        state = self.state()
        folder = self.run_dir / "checkpoints"
        save_checkpoint(folder / "last.pt", state)
        if improved:
            save_checkpoint(folder / "best.pt", state)
        atomic_write_text(
            self.run_dir / HISTORY_FILE, pd.DataFrame(self.history).to_csv(index=False)
        )
        self.segment.update(last_checkpoint=now(), to_step=self.step)
        self._write_env()
        if self.progress:
            shown = {k: v for k, v in row.items() if k.startswith(("train_total", "val_"))}
            text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            tqdm.write(
                f"epoch {row['epoch']}/{self.total_epochs} (step {self.step}): {text} "
                f"({row['seconds']:.1f} s, {row['images_per_s']:.1f} images/s)"
            )
            sys.stdout.flush()

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (tensors and plain values only)."""
        state: dict[str, Any] = {
            "model": self.kept_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "images_seen": self.step * self.config.batch_size,
            "best_score": self.best_score,
            "n_types": self.scheme.n_classes,
            "scheme": self.scheme.name,
            "mpp": self.data.mpp,
            "rng": rng_state(),
            "config": json.dumps(self.config.to_dict()),
            "spec": self.config.model_spec(
                self.scheme.n_classes, self.scheme.name, self.data.mpp
            ).to_json(),
        }
        if self.average is not None:
            state["train_model"] = self.model.state_dict()
            state["ema_updates"] = int(self.average.n_averaged)
        return state
