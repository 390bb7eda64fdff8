"""Run by tests/engine/test_trainer.py under torchrun:
train the smoke preset, save this rank's weights.

Usage: ddp_worker.py OUT [MODEL]; MODEL ``maskrcnn`` trains a small Mask R-CNN instead."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nucstudy.engine.trainer import Trainer
from nucstudy.study.presets import preset

if __name__ == "__main__":
    out = Path(sys.argv[1])
    model = sys.argv[2] if len(sys.argv) > 2 else "seresunet"
    changes = {}
    if model == "maskrcnn":
        options = {"backbone": "resnet18", "box_batch_size_per_image": 32}
        changes = {"model": model, "loss": model, "class_weights": None, "model_options": options}
    config = preset("smoke", epochs=2, device="cpu", synthetic_patches=16, batch_size=4, **changes)
    trainer = Trainer(config, run_dir=out / "run", progress=False)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
