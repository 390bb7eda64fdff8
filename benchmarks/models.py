"""Model cost and speed: parameters, multiply-adds and training images/s at 256 x 256.

For each variant (the paper's SE-Res U-Net in full, without SE, without CA, and HoVer-Net)
it counts parameters and the multiply-adds of one forward pass on one patch, then times
forward + loss + backward (no optimiser step) on random patches in training mode, the
fastest of a few steps after two warm-up steps: float32 on the CPU; on CUDA float32 and bf16
autocast with channels_last, with peak GPU memory.

Usage: python benchmarks/models.py [--batch N] [--steps 3] [--variants full hovernet]
                                   [--out results/benchmarks/models_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import torch

from nucstudy.classes import CONIC
from nucstudy.io import atomic_write_text
from nucstudy.losses import HoVerNetLoss, SegmentationLoss
from nucstudy.models import build_model, count_multiply_adds, count_parameters

WARM_UP_STEPS = 2  # the first steps pay for memory allocation and kernel selection

#: name -> (model name, options, loss class)
VARIANTS = {
    "full": ("seresunet", {}, SegmentationLoss),
    "no_se": ("seresunet", {"use_se": False}, SegmentationLoss),
    "no_ca": ("seresunet", {"use_ca": False}, SegmentationLoss),
    "hovernet": ("hovernet", {}, HoVerNetLoss),
}


def machine() -> str:
    """CPU model and core count (and the GPU, if any), in words."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        cpu = names[0] if names else cpu
    words = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        words += f"; {torch.cuda.get_device_name()}"
    return words


def random_batch(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Random images in [0, 1] and random targets of the three heads."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator)
    tp = torch.randint(0, CONIC.n_classes, (batch, size, size), generator=generator)
    targets = {
        "np": (tp > 0).long(),
        "hv": torch.rand(batch, 2, size, size, generator=generator) * 2 - 1,
        "tp": tp,
    }
    return images.to(device), {key: value.to(device) for key, value in targets.items()}


def time_training_steps(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    images: torch.Tensor,
    targets: dict,
    steps: int,
    bf16_channels_last: bool,
) -> float:
    """Seconds of the fastest of ``steps`` forward + loss + backward steps, after warm-up."""
    device = images.device
    if bf16_channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_channels_last):
            outputs = model(images)
        loss_fn(outputs, targets)["total"].backward()

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(WARM_UP_STEPS):
        step()
    times = []
    for _ in range(steps):
        synchronise()
        start = time.perf_counter()
        step()
        synchronise()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Figures of one variant: one row per precision mode."""
    model_name, options, loss_class = VARIANTS[name]
    torch.manual_seed(0)
    model = build_model(model_name, CONIC.n_classes, **options)
    common = {
        "variant": name,
        "model": model_name,
        "options": options,
        "parameters": count_parameters(model),
        "multiply_adds_g": count_multiply_adds(model, args.size, args.size) / 1e9,
    }
    model.to(device).train()
    loss_fn = loss_class().to(device)  # paper: CoNIC class weights; HoVer-Net: none
    images, targets = random_batch(args.batch, args.size, device)
    modes = ["fp32"] + (["bf16_channels_last"] if device.type == "cuda" else [])
    rows = []
    for mode in modes:
        row = dict(common, mode=mode, batch=args.batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            seconds = time_training_steps(
                model, loss_fn, images, targets, args.steps, mode != "fp32"
            )
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of GPU memory"
            torch.cuda.empty_cache()
        else:
            row["seconds_per_step"] = seconds
            row["images_per_s"] = args.batch / seconds
            if device.type == "cuda":
                row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 32 on CUDA")
    parser.add_argument("--steps", type=int, default=3, help="timed steps; the fastest counts")
    parser.add_argument("--size", type=int, default=256, help="patch side, a multiple of 32")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch is None:
        args.batch = 32 if device.type == "cuda" else 2
    result = {
        "machine": machine(),
        "device": device.type,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "size": args.size,
        "timed_steps": args.steps,
        "warm_up_steps": WARM_UP_STEPS,
        "step": "forward + loss + backward, training mode, no optimiser step; fastest step",
        "rows": [row for name in args.variants for row in measure(name, args, device)],
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
