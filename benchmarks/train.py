"""Training speed: optimiser steps/s of the default model, and the data loader's images/s.

1. The default model (``build_model("seresunet", 7)``) with the paper's loss and Adam, full
   training steps (forward, loss, backward, optimiser step) on a batch of real synthetic
   patches: float32, and on CUDA also bf16 autocast + channels_last, and that plus
   ``torch.compile``. The fastest of a few steps after warm-up counts.
2. The DataLoader with the paper's augmentation and the HV/NP/TP targets, at batch 32, for a
   few worker counts: does it keep up with the model?

Usage: python benchmarks/train.py [--batch 32] [--steps 3] [--workers 0 1 2]
                                  [--out results/benchmarks/train_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext

import torch

from nucstudy.data import NucleiDataset, build_augmentation, make_loader, synthetic_conic
from nucstudy.io import atomic_write_text
from nucstudy.losses import SegmentationLoss
from nucstudy.models import build_model

WARM_UP_STEPS = 2


def machine() -> str:
    """CPU (and GPU) in words."""
    cpu = "cpu"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if "model name" in line]
        cpu = names[0] if names else cpu
    words = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        words += f"; {torch.cuda.get_device_name()}"
    return words


def time_training(batch: dict, device: torch.device, mode: str, steps: int) -> dict:
    """Fastest optimiser step of the default model in ``mode`` (fp32, bf16-cl, bf16-cl-compile)."""
    torch.manual_seed(0)
    model = build_model("seresunet", n_types=7).to(device)
    images = batch["image"].to(device)
    if mode != "fp32":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    network = torch.compile(model) if mode.endswith("compile") else model
    targets = {k: batch[k].to(device) for k in ("np", "hv", "tp")}
    loss_fn = SegmentationLoss().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if mode != "fp32" else nullcontext()
    times = []
    for step in range(WARM_UP_STEPS + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            outputs = network(images)
        loss = loss_fn(outputs, targets)["total"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARM_UP_STEPS:
            times.append(time.perf_counter() - start)
    seconds = min(times)
    row = {
        "mode": mode,
        "batch": len(images),
        "seconds_per_step": seconds,
        "images_per_s": len(images) / seconds,
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return row


def time_loader(dataset: NucleiDataset, batch: int, workers: int, batches: int) -> dict:
    """Images/s delivered by the loader (augmentation and targets included)."""
    loader = make_loader(dataset, batch, shuffle=True, seed=0, num_workers=workers, drop_last=True)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not counted
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(iterator)["image"])
    seconds = time.perf_counter() - start
    return {"workers": workers, "batch": batch, "images_per_s": count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps; the fastest counts")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--loader-batches", type=int, default=4)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = synthetic_conic(args.batch * (args.loader_batches + 2), seed=0)
    dataset = NucleiDataset(data, augment=build_augmentation(), seed=0)
    batch = next(iter(make_loader(dataset, args.batch)))
    modes = ["fp32"] + (
        ["bf16-channels_last", "bf16-channels_last-compile"] if device.type == "cuda" else []
    )
    training = [time_training(batch, device, mode, args.steps) for mode in modes]
    loading = [time_loader(dataset, args.batch, w, args.loader_batches) for w in args.workers]
    result = {
        "machine": machine(),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": 256,
        "training": training,
        "loader": loading,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
