"""Training: the :class:`Trainer` behind ``nucstudy train`` and the experiment notebooks.

One code path serves a laptop CPU, one GPU and several GPUs: under ``torchrun
--nproc_per_node=N`` each process trains a DistributedDataParallel replica on its share of
every epoch and rank 0 validates and writes the run folder. Where the device supports it
(CUDA, or a CPU with native bf16), the forward pass runs under bf16 autocast with
channels_last tensors (``mixed_precision``; chosen at run time by
:func:`nucstudy.engine.device.choose_fast_path` and recorded in ``env.json``).

Logs: one line per epoch (and the validation scores of the epochs that have them); a tqdm
bar over the batches only when stderr is a terminal, so ``nucstudy train > log`` stays
readable.

Length and learning rate: a run lasts ``epochs`` passes over its training patches, or
``steps`` optimiser steps, or ``images`` patches seen (the last epoch may stop part-way). The
learning rate is a pure function of the optimiser step
(:meth:`ExperimentConfig.lr_schedule_of`), set before every step. With ``ema_decay`` an
exponential moving average of the weights is validated, saved as the checkpoint's
``"model"`` and so evaluated (the raw weights are kept as ``"train_model"`` for resuming).

Reproducibility: weights, shuffling (reseeded every epoch), the split and every item's
augmentation follow from the config's seed, so a resumed run reaches the same weights as an
uninterrupted one on the CPU. Checkpoints (``checkpoints/last.pt`` every epoch,
``checkpoints/best.pt`` at the best validation mPQ+, or the last where nothing validates)
are written atomically and hold model, optimiser, epoch, optimiser step, RNG states and the
config.
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from nucstudy.common.io import atomic_write_text
from nucstudy.data import (
    ConicData,
    NucleiDataset,
    build_augmentation,
    make_loader,
    mix_synthetic,
    rare_class_weights,
    split_by_source,
)
from nucstudy.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from nucstudy.engine.device import FastPath, choose_fast_path, loader_workers, resolve_device
from nucstudy.engine.inference import predict_labels
from nucstudy.engine.methods import build_method
from nucstudy.engine.run_folder import (
    CONFIG_FILE,
    ENV_FILE,
    HISTORY_FILE,
    TRAINED_ON_FILE,
    earlier_segments,
    git_commit,
    now,
    write_env,
)
from nucstudy.engine.schedule import set_lr, weight_average
from nucstudy.metrics import conic_metrics
from nucstudy.models import SIZE_MULTIPLE, build_model

if TYPE_CHECKING:  # the study's config reaches the Trainer as an object
    from nucstudy.study.experiment import ExperimentConfig

#: The environment variable that says what ran beside a run (recorded in env.json).
BESIDE_VARIABLE = "NUCSTUDY_BESIDE"


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss, a run folder that does not match)."""


def crop_side(config: ExperimentConfig, patch_side: int) -> int | None:
    """The side in pixels of the random training crop of ``config`` on patches of this side.

    ``crop_size`` as given, or ``crop_fraction`` of the side rounded down to a multiple of
    :data:`nucstudy.models.SIZE_MULTIPLE` (at least one multiple); None: no crop.

    Raises:
        ValueError: the crop is larger than the patch.
    """
    if config.crop_fraction is not None:
        side = int(config.crop_fraction * patch_side) // SIZE_MULTIPLE * SIZE_MULTIPLE
        return max(side, SIZE_MULTIPLE)
    if config.crop_size is not None and config.crop_size > patch_side:
        raise ValueError(
            f"crop_size {config.crop_size} is larger than the {patch_side} px patches; "
            "use a smaller crop_size or crop_fraction"
        )
    return config.crop_size


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
        self.device = self._setup_device()
        self.fast_path: FastPath = choose_fast_path(self.device, config.mixed_precision)
        self.workers = loader_workers(config.workers, self.device)
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.earlier_segments: list[dict[str, Any]] = []
        seed_everything(config.seed)

        self.data = data if data is not None else config.open_data("train")
        self.scheme = self.data.scheme
        if config.val_fraction > 0:
            self.train_idx, self.val_idx = split_by_source(
                self.data, config.val_fraction, config.seed
            )
        else:  # every source image trains; nothing validates
            self.train_idx, self.val_idx = np.arange(len(self.data)), np.arange(0)
        if config.synthetic_mix:
            self.data, self.train_idx = mix_synthetic(
                self.data, self.train_idx, config.synthetic_mix, config.seed
            )
        self.crop = crop_side(config, min(self.data.images.shape[1:3]))
        augment = (
            build_augmentation(
                self.crop,
                scale=tuple(config.scale_range),
                stain=config.stain_augment,
                stain_strength=config.stain_strength,
                extra=tuple(config.extra_augment),
                keep_ratio=config.keep_ratio,
            )
            if config.augment
            else None
        )
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
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(
                self.model,
                device_ids=ids,
                find_unused_parameters=self.method.may_skip_parameters,
            )
        if config.compile:
            self.network = torch.compile(self.network)
        self.sampler = (
            DistributedSampler(self.train_set, shuffle=True, seed=config.seed, drop_last=True)
            if self.distributed
            else None
        )
        self.loader = self._make_loader()
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

    def _setup_device(self) -> torch.device:
        if not self.distributed:
            return resolve_device(self.config.device)
        use_cuda = resolve_device(self.config.device).type == "cuda"
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")

    def _make_loader(self):
        per_rank = max(1, self.config.batch_size // self.world_size)
        if self.config.sampling == "rare" and self.distributed:
            raise TrainingError("sampling 'rare' is not available with several processes")
        if self.sampler is None:
            weights = None
            if self.config.sampling == "rare":
                class_maps = self.data.labels[self.train_idx, ..., 1]
                weights = rare_class_weights(class_maps, self.scheme.n_classes)
            return make_loader(
                self.train_set,
                per_rank,
                shuffle=True,
                seed=self.config.seed,
                num_workers=self.workers,
                drop_last=len(self.train_set) > per_rank,
                collate_fn=self.method.collate,
                sample_weights=weights,
            )
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=self.workers,
            collate_fn=self.method.collate,
            persistent_workers=self.workers > 0,
            pin_memory=self.device.type == "cuda",
        )

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
        self.segment = {
            "started": now(),
            "last_checkpoint": None,
            "finished": None,
            "from_step": self.step,
            "to_step": self.step,
            "threads": torch.get_num_threads(),
            "git_commit": git_commit(),
            # what else ran on the machine, as the person starting the run says
            "beside": os.environ.get(BESIDE_VARIABLE),
        }
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
        self.train_set.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        else:
            self.loader.generator.manual_seed(self.config.seed * 100_003 + epoch)
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
        self._sync_buffers()
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        row.update({f"train_{name}": value / max(batches, 1) for name, value in sums.items()})
        row.update({"seconds": seconds, "images_per_s": images / seconds if seconds else 0.0})
        row.update({"step": self.step, "images_seen": self.step * self.config.batch_size})
        return row

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's batch-norm statistics (DDP keeps only weights in step)."""
        if self.distributed:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

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
