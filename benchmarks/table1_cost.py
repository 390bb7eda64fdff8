"""What each Table I method costs to train here, protocol by protocol, on real batches.

For each candidate protocol of the three methods (the proposed network, HoVer-Net, Mask
R-CNN with several backbones, input scales and sampled RoIs) it builds the real
:class:`nucstudy.engine.trainer.Trainer` on the data, with the paper preset's augmentation and
crop,
and times whole training steps (loader, targets, forward, loss, backward, Adam step) after
one warm-up step. From the seconds per step it estimates the minutes of an epoch and of 50
epochs (validation not included), which is what the CPU protocols of Table I are chosen
from.

Usage: python benchmarks/table1_cost.py [--data consep:../shared/data/consep256]
           [--steps 2] [--candidates proposed hovernet ...]
           [--out results/benchmarks/table1_cost_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from nucstudy.common.io import atomic_write_text
from nucstudy.engine.trainer import Trainer
from nucstudy.study.compute_budget import measure_step_seconds
from nucstudy.study.table1 import method_config, table1_base

#: name -> (method, config changes)
CANDIDATES = {
    "proposed": ("proposed", {}),
    "hovernet": ("hovernet", {}),
    "maskrcnn-r50-x2-roi512": ("maskrcnn", {}),
    "maskrcnn-r50-x1-roi512": ("maskrcnn", {"model_options": {"upscale": 1.0}}),
    "maskrcnn-r18-x2-roi256": (
        "maskrcnn",
        {"model_options": {"backbone": "resnet18", "box_batch_size_per_image": 256}},
    ),
    "maskrcnn-r18-x1-roi256": (
        "maskrcnn",
        {
            "model_options": {
                "backbone": "resnet18",
                "upscale": 1.0,
                "box_batch_size_per_image": 256,
            }
        },
    ),
}


def measure(name: str, data: str, steps: int, root: str) -> dict:
    method, changes = CANDIDATES[name]
    config = method_config(table1_base(data, "paper"), method, changes).replace(out_root=root)
    torch.manual_seed(0)
    trainer = Trainer(config, progress=False)
    seconds = measure_step_seconds(trainer, steps)
    per_epoch = seconds * len(trainer.loader)
    row = {
        "candidate": name,
        "method": method,
        "model": config.model,
        "model_options": config.model_options,
        "batch": config.batch_size,
        "crop_px": trainer.crop,
        "bf16": trainer.fast_path.bf16,
        "steps_per_epoch": len(trainer.loader),
        "seconds_per_step": seconds,
        "images_per_s": config.batch_size / seconds,
        "minutes_per_epoch": per_epoch / 60,
        "minutes_for_50_epochs": 50 * per_epoch / 60,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="consep:../shared/data/consep256")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=None)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    names = args.candidates or list(CANDIDATES)
    started = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as root:
        rows = [measure(name, args.data, args.steps, root) for name in names]
    result = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1min_at_start": started,
        "data": args.data,
        "timed_steps": args.steps,
        "step": "loader + targets + forward + loss + backward + Adam step, mean after one",
        "rows": rows,
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
