"""Training and inference speed on this machine, setting by setting.

For the default network (``build_model("seresunet", 7)``, 32 M parameters, the paper's batch
of 32) and the cpu-demo network (width 16, depth 4, batch 8), both at 128 x 128 (CoNSeP-256
halved to 20x), it times:

1. **training steps** (forward, the paper's loss, backward, Adam step) on augmented
   synthetic patches, in each precision/layout mode: ``fp32``, ``channels_last`` (fp32),
   ``bf16`` (autocast), ``bf16+channels_last`` and that under ``torch.compile`` (inductor;
   its compile time is reported apart). bf16 rows run only where
   :func:`nucstudy.engine.device.choose_fast_path` finds native bf16 support;
2. **inference** (forward under ``no_grad``, eval mode) in the same modes;
3. **threads**: the fastest eager mode with 1 intra-op thread and with all of them;
4. **DataLoader workers**: real training epochs of the cpu-demo network (loader, augmentation
   and targets included) with 0, 1 and 2 worker processes: do the workers steal the cores
   from the intra-op threads?

Each timing is the fastest of a few steps after warm-up. Achieved GFLOP/s come from the
model's multiply-adds (:func:`nucstudy.models.count_multiply_adds`; a training step counts
3 x the forward pass, 2 FLOPs per multiply-add) and are set against the CPU's nominal peaks
(:func:`cpu_peaks`).

Usage: python benchmarks/train.py [--steps 3] [--no-compile]
                                  [--out results/benchmarks/train_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import torch

from nucstudy.common.io import atomic_write_text
from nucstudy.data import NucleiDataset, build_augmentation, make_loader, synthetic_conic
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.losses import SegmentationLoss
from nucstudy.models import build_model, count_multiply_adds

WARM_UP_STEPS = 1
SIZE = 128
#: name -> (model options, batch)
NETWORKS = {"default": ({}, 32), "cpu-demo": ({"width": 16, "depth": 4}, 8)}


def cpu_info() -> dict:
    """CPU model, cores, clock (MHz, from /proc/cpuinfo) and the ISA flags that matter."""
    info = {"model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as lines:
        for line in lines:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["model"] = value.strip()
            elif key == "cpu MHz":
                info["mhz"] = float(value)
            elif key == "flags":
                flags = set(value.split())
    info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    return info


def cpu_peaks(info: dict) -> dict:
    """Nominal peak GFLOP/s of the CPU, from its cores, clock and ISA flags.

    Assumptions (stated on the performance page): two 512-bit FMA units per core (32 fp32
    FLOPs per unit and cycle; 16 with AVX2 only), AVX512-BF16 doubling that for bf16, and AMX
    at 1,024 bf16 multiply-adds per core and cycle. Turbo clocks are not counted.
    """
    ghz = info.get("mhz", 0.0) / 1000
    cores = info["cores"]
    flags = set(info["flags"])
    fp32_per_cycle = 64 if "avx512f" in flags else 32
    peaks = {"fp32": cores * ghz * fp32_per_cycle}
    if "amx_bf16" in flags:
        peaks["bf16"] = cores * ghz * 2048
    elif "avx512_bf16" in flags:
        peaks["bf16"] = cores * ghz * 2 * fp32_per_cycle
    return peaks


def training_batch(batch: int) -> dict[str, torch.Tensor]:
    """One batch of augmented synthetic patches with their NP/HV/TP targets."""
    data = synthetic_conic(batch, size=SIZE, seed=0)
    dataset = NucleiDataset(data, augment=build_augmentation(), seed=0)
    return next(iter(make_loader(dataset, batch)))


def prepare(options: dict, mode: str):
    """A fresh network in ``mode``'s layout, the memory format and the autocast context."""
    torch.manual_seed(0)
    model = build_model("seresunet", n_types=7, **options)
    layout = torch.channels_last if "channels_last" in mode else torch.contiguous_format
    model = model.to(memory_format=layout)
    bf16 = mode.startswith("bf16")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    return model, layout, autocast


def fastest(step, steps: int) -> tuple[float, float]:
    """(seconds of the first call, fastest of ``steps`` calls after warm-up)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(WARM_UP_STEPS - 1):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, min(times)


def time_mode(options: dict, batch: dict, mode: str, steps: int, train: bool) -> dict:
    """Images/s of one network in one mode, training or inference."""
    model, layout, autocast = prepare(options, mode)
    images = batch["image"].contiguous(memory_format=layout)
    targets = {k: batch[k] for k in ("np", "hv", "tp")}
    network = torch.compile(model) if mode.endswith("compile") else model
    loss_fn = SegmentationLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)

    def train_step() -> None:
        with autocast:
            outputs = network(images)
        loss = loss_fn({k: v.float() for k, v in outputs.items()}, targets)["total"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def infer_step() -> None:
        with torch.no_grad(), autocast:
            network(images)

    model.train(train)
    first, seconds = fastest(train_step if train else infer_step, steps)
    row = {"mode": mode, "batch": len(images), "seconds_per_step": seconds}
    row["images_per_s"] = len(images) / seconds
    if mode.endswith("compile"):
        row["first_step_seconds"] = first  # compilation included
    return row


def time_epochs(options: dict, batch: int, workers: int, batches: int, mode: str) -> dict:
    """Images/s of real training (loader, augmentation and targets included)."""
    data = synthetic_conic(batch * batches, size=SIZE, seed=1)
    dataset = NucleiDataset(data, augment=build_augmentation(), seed=0)
    loader = make_loader(dataset, batch, shuffle=True, seed=0, num_workers=workers)
    model, layout, autocast = prepare(options, mode)
    loss_fn = SegmentationLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)

    def epoch() -> int:
        count = 0
        for item in loader:
            images = item["image"].contiguous(memory_format=layout)
            with autocast:
                outputs = model(images)
            targets = {k: item[k] for k in ("np", "hv", "tp")}
            loss = loss_fn({k: v.float() for k, v in outputs.items()}, targets)["total"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            count += len(images)
        return count

    epoch()  # warm-up (and worker start-up)
    start = time.perf_counter()
    count = epoch()
    seconds = time.perf_counter() - start
    return {"mode": mode, "workers": workers, "batch": batch, "images_per_s": count / seconds}


def add_flops(row: dict, multiply_adds: int, train: bool, peaks: dict) -> dict:
    """Achieved GFLOP/s of a row, and its share of the nominal peak of its precision."""
    flops_per_image = 2 * multiply_adds * (3 if train else 1)
    row["gflops"] = row["images_per_s"] * flops_per_image / 1e9
    peak = peaks.get("bf16" if row["mode"].startswith("bf16") else "fp32")
    row["share_of_peak"] = row["gflops"] / peak if peak else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps; the fastest counts")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--epoch-batches", type=int, default=8, help="batches per timed epoch")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    info = cpu_info()
    peaks = cpu_peaks(info)
    fast = choose_fast_path(torch.device("cpu"), enabled=True)
    modes = ["fp32", "channels_last"]
    if fast.bf16:
        modes += ["bf16", "bf16+channels_last"]
    eager_best = modes[-1]
    if not args.no_compile:
        modes.append(f"{eager_best}+compile")
    threads = torch.get_num_threads()
    result: dict = {
        "machine": f"{info['model']}, {info['cores']} cores",
        "cpu": info,
        "nominal_peak_gflops": peaks,
        "fast_path": fast.to_dict(),
        "torch": torch.__version__,
        "threads": threads,
        "size": SIZE,
        "load_average_1min_at_start": os.getloadavg()[0],
        "networks": {},
    }
    for name in args.networks:
        options, batch_size = NETWORKS[name]
        batch = training_batch(batch_size)
        multiply_adds = count_multiply_adds(build_model("seresunet", 7, **options), SIZE, SIZE)
        rows: dict[str, list] = {"training": [], "inference": [], "threads": []}
        for mode in modes:
            for kind, train in (("training", True), ("inference", False)):
                row = add_flops(
                    time_mode(options, batch, mode, args.steps, train), multiply_adds, train, peaks
                )
                print(name, kind, json.dumps(row), flush=True)
                rows[kind].append(row)
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            row = time_mode(options, batch, eager_best, args.steps, train=True)
            row["threads"] = count
            rows["threads"].append(add_flops(row, multiply_adds, True, peaks))
            print(name, "threads", json.dumps(row), flush=True)
        torch.set_num_threads(threads)
        result["networks"][name] = {
            "options": options,
            "multiply_adds_g": multiply_adds / 1e9,
            **rows,
        }
    options, batch_size = NETWORKS["cpu-demo"]
    result["loader_workers"] = []
    for workers in (0, 1, 2):
        for mode in ("fp32", eager_best):
            row = time_epochs(options, batch_size, workers, args.epoch_batches, mode)
            print("cpu-demo epochs", json.dumps(row), flush=True)
            result["loader_workers"].append(row)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
