"""Model cost and speed: parameters, multiply-adds and training images/s at 256 x 256.

For each variant (the paper's SE-Res U-Net in full, without SE, without CA, HoVer-Net and
Mask R-CNN) it counts parameters and the multiply-adds of one forward pass on one patch (for
the dense networks; a detector's depends on what it detects), then times forward + loss +
backward (no optimiser step) through each method (:mod:`nucstudy.engine.methods`: its own targets
and loss) on synthetic H&E patches in training mode, the fastest of a few steps after two
warm-up steps, and counts the multiply-adds of that training step per patch: float32, and
bf16 autocast with channels_last where the device has native bf16 (CUDA; AVX512-BF16 or
AMX CPUs), with peak GPU memory on CUDA.

Usage: python benchmarks/models.py [--batch N] [--steps 3] [--variants full hovernet]
                                   [--out results/benchmarks/models_cpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform

import torch

from nucstudy.common.io import atomic_write_text
from nucstudy.data.classes import CONIC
from nucstudy.engine.cost import (
    WARM_UP_STEPS,
    synthetic_batch,
    time_training_steps,
    training_multiply_adds,
)
from nucstudy.engine.device import choose_fast_path
from nucstudy.engine.methods import OWN_TRAINING, build_method
from nucstudy.models import build_model, count_multiply_adds, count_parameters
from nucstudy.study.experiment import ExperimentConfig

#: name -> (model name, options, config changes of its method)
VARIANTS = {
    "full": ("seresunet", {}, {}),
    "no_se": ("seresunet", {"use_se": False}, {}),
    "no_ca": ("seresunet", {"use_ca": False}, {}),
    "hovernet": ("hovernet", {}, OWN_TRAINING["hovernet"]),
    # the Table I baseline: ResNet-50-FPN, 512 sampled RoIs, images at twice their size (the
    # model's default upscale 2, so that its anchors cover 20x nuclei)
    "maskrcnn": ("maskrcnn", {}, OWN_TRAINING["maskrcnn"]),
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


def measure(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Figures of one variant: one row per precision mode."""
    model_name, options, training = VARIANTS[name]
    torch.manual_seed(0)
    model = build_model(model_name, CONIC.n_classes, **options)
    config = ExperimentConfig(model=model_name, model_options=options, **training)
    method = build_method(config, CONIC).to(device)  # paper: CoNIC class weights
    dense = model_name != "maskrcnn"
    common = {
        "variant": name,
        "model": model_name,
        "options": options,
        "parameters": count_parameters(model),
        # the forward pass of a detector depends on what it detects: counted for dense ones
        "multiply_adds_g": count_multiply_adds(model, args.size, args.size) / 1e9
        if dense
        else None,
    }
    model.to(device).train()
    batch = synthetic_batch(method, args.batch, args.size)
    modes = ["fp32"] + (["bf16_channels_last"] if device.type == "cuda" else [])
    if device.type == "cpu" and choose_fast_path(device, True).bf16:
        modes.append("bf16_channels_last")
    rows = []
    for mode in modes:
        fast = choose_fast_path(device, mode != "fp32")
        row = dict(common, mode=mode, batch=args.batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            seconds = time_training_steps(model, method, batch, args.steps, fast)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of GPU memory"
            torch.cuda.empty_cache()
        else:
            row["seconds_per_step"] = seconds
            row["images_per_s"] = args.batch / seconds
            row["train_multiply_adds_g"] = (
                training_multiply_adds(model, method, batch, device, fast) / 1e9
            )
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
        "data": "synthetic H&E patches, each method's own targets",
        "rows": [row for name in args.variants for row in measure(name, args, device)],
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
