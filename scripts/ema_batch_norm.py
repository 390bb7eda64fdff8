"""Why the weight average's batch-norm statistics are recomputed: one checkpoint, three ways.

Takes a finished run of the recipe's "ema" arm whose average also averaged the batch-norm
statistics (the first attempt; its folder is kept outside the repository), and scores on
its validation tiles:

1. the average as that run saved it (weights and statistics averaged);
2. the same averaged weights with their statistics recomputed over one epoch of training
   patches (:func:`nucstudy.engine.schedule.refresh_batch_norm`, as the Trainer now does);
3. the trained weights themselves (no average).

    OMP_NUM_THREADS=1 python scripts/ema_batch_norm.py RUN_DIR \
        --out results/recipe/ema_batch_norm.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nucstudy.common.io import atomic_write_text
from nucstudy.engine.trainer import Trainer
from nucstudy.study.experiment import CONFIG_FILE, ExperimentConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished 'ema' run (checkpoints/last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    config = ExperimentConfig.load(args.run_dir / CONFIG_FILE)
    trainer = Trainer(config, run_dir=args.run_dir, progress=False, resume=True)
    scores = {"step": trainer.step, "averaged statistics": trainer.validate()}
    trainer.refresh_average(trainer.epoch - 1)
    scores["recomputed statistics"] = trainer.validate()
    trainer.average = None
    scores["trained weights"] = trainer.validate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(scores, indent=2) + "\n")
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
