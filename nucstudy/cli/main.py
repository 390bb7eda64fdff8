"""The ``nucstudy`` command: train, predict, evaluate, Table I, and data tools.

Examples::

    nucstudy train --preset smoke --data synthetic --out runs/x
    nucstudy evaluate runs/x --data consep:../shared/data/consep256
    nucstudy predict runs/x --data synthetic --out runs/x/predictions
    nucstudy table1 --data consep:../shared/data/consep256 --preset paper --out runs/t1
    nucstudy tune results/runs/consep-paper/full-stainstrong-scale-blur-seed0
    nucstudy ood results/runs/consep/full-seed0 --tiles ../shared/data/cpm15 --out ood.csv --tuned
    nucstudy export results/runs/consep/full-stain-seed0 --out results/models/consep-cpu-demo.pt
    nucstudy segment slide_tiles/ --model results/models/consep-cpu-demo.pt --mpp 0.25 --out seg
    nucstudy data synthetic --n 64 --out data/synthetic
    nucstudy data import-consep ../shared/data/consep256 --split test --out data/consep-test
    nucstudy data summary consep:../shared/data/consep256
    nucstudy data sizes ../shared/data/cpm15 consep:../shared/data/consep256 --split train
    nucstudy render book/experiments/table1.ipynb

A bad argument or missing data is reported as one line on stderr with exit code 2;
``segment`` exits with 1 when some of its images failed (the others are written).
"""

from __future__ import annotations

import sys

from nucstudy.cli.arguments import EXIT_FAILED, EXIT_USAGE, UsageError
from nucstudy.cli.data_commands import data_command
from nucstudy.cli.parser import build_parser
from nucstudy.cli.run_commands import (
    evaluate_command,
    export_command,
    predict_command,
    train_command,
    tune_command,
)
from nucstudy.cli.segment_command import segment_command
from nucstudy.cli.study_commands import ood_command, render_command, table1_command
from nucstudy.engine.checkpoint import CheckpointError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nucstudy`` console script; returns the exit code."""
    from nucstudy.engine.trainer import TrainingError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = {
            "train": train_command,
            "evaluate": evaluate_command,
            "predict": predict_command,
            "table1": table1_command,
            "ood": ood_command,
            "tune": tune_command,
            "segment": segment_command,
            "export": export_command,
            "data": data_command,
            "render": render_command,
        }
        return handler[args.command](args)
    except UsageError as error:
        print(f"nucstudy: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        print(f"nucstudy: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingError as error:
        print(f"nucstudy: training stopped: {error}", file=sys.stderr)
        return EXIT_FAILED
