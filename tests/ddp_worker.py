"""Run by tests/test_train.py under torchrun: train the smoke preset, save this rank's weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from nucstudy.experiment import preset
from nucstudy.train import Trainer

if __name__ == "__main__":
    out = Path(sys.argv[1])
    config = preset("smoke", epochs=2, device="cpu", synthetic_patches=16, batch_size=4)
    trainer = Trainer(config, run_dir=out / "run", progress=False)
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
