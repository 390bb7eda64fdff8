"""The ``nucstudy`` command's parser: every command and its flags (:func:`build_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nucstudy.cli.arguments import Parser
from nucstudy.postprocess import ROUTES
from nucstudy.segment.images import SegmentOptions
from nucstudy.study.presets import PRESETS

#: The help of ``--recipe`` (``train`` and ``table1``).
RECIPE_HELP = (
    "train with the study's recipe (HoVer-Net's HV terms, cosine decay, batch 8, lr 2e-3; "
    "the book's recipe page) and these of its ingredients, e.g. --recipe 'step schedule'; "
    "--set overrides it"
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="nucstudy", description="Nuclear segmentation study: train, predict, evaluate, data."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train one experiment into a run folder")
    train.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    train.add_argument(
        "--config", type=Path, help="a config.json to start from instead of a preset"
    )
    train.add_argument("--data", help="synthetic, consep:<folder> or conic:<folder>")
    train.add_argument("--out", type=Path, help="run folder (default runs/<preset>)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--steps", type=int, help="the run's length in optimiser steps")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu or cuda")
    train.add_argument(
        "--model",
        help="seresunet, hovernet or maskrcnn (trained with its own loss unless --set loss=...)",
    )
    train.add_argument(
        "--postprocess", choices=list(ROUTES), help="post-processing route of validation"
    )
    train.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any ExperimentConfig field, e.g. --set class_weights=null",
    )
    train.add_argument("--recipe", nargs="*", default=None, metavar="INGREDIENT", help=RECIPE_HELP)
    train.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt")
    train.add_argument(
        "--quiet", action="store_true", help="no per-epoch lines and no progress bar"
    )

    for name, text in (
        ("evaluate", "score a run and write metrics.json"),
        ("predict", "write CoNIC-layout predictions and counts"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("run_dir", type=Path)
        sub.add_argument("--data", help="data to run on (default: the run's own source)")
        sub.add_argument("--split", default="test", choices=["train", "test"])
        sub.add_argument("--checkpoint", default="best", choices=["best", "last"])
        sub.add_argument("--tta", action="store_true", help="flip test-time augmentation")
        sub.add_argument("--device", default="auto")
        sub.add_argument("--batch-size", type=int, default=16)
        sub.add_argument(
            "--postprocess",
            choices=list(ROUTES),
            help="post-processing route (default: the run's config)",
        )
        sub.add_argument(
            "--postprocess-workers",
            type=int,
            default=0,
            help="processes that post-process while the network runs (0: none)",
        )
        if name == "predict":
            sub.add_argument("--out", type=Path, help="folder (default <run_dir>/predictions)")
        else:
            sub.add_argument(
                "--tuned",
                action="store_true",
                help="HoVer-Net's thresholds as `nucstudy tune` chose them (metrics-tuned.json)",
            )

    tune = commands.add_parser(
        "tune",
        help="choose HoVer-Net's post-processing thresholds on each run's validation patches "
        "(and score flip TTA there)",
    )
    tune.add_argument("run_dirs", type=Path, nargs="+", help="run folders (checkpoints/best.pt)")
    tune.add_argument("--device", default="auto")

    table1 = commands.add_parser(
        "table1", help="train what is missing of Table I's three methods and write the table"
    )
    table1.add_argument(
        "--data", required=True, help="synthetic, consep:<folder> or conic:<folder>"
    )
    table1.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    table1.add_argument(
        "--out",
        type=Path,
        help="registry folder of the comparison (default runs/table1-<data>-<preset>)",
    )
    table1.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a change to the protocol all three share, e.g. --set epochs=20",
    )
    table1.add_argument(
        "--recipe", nargs="*", default=None, metavar="INGREDIENT", help=RECIPE_HELP
    )
    table1.add_argument(
        "--method-set",
        action="append",
        default=[],
        metavar="METHOD:FIELD=VALUE",
        help="one method's departure from the protocol, named in its row, e.g. hovernet:epochs=15",
    )
    table1.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="one method's model option, e.g. maskrcnn:backbone=resnet18",
    )
    table1.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="train only these where missing (default: proposed, hovernet and maskrcnn)",
    )
    table1.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="train a missing method only if its measured cost fits in what is left",
    )
    table1.add_argument(
        "--compute-minutes",
        type=float,
        default=None,
        help="equal compute: every method trains for the steps this many minutes buy at its "
        "step time measured on this machine (instead of the protocol's epochs)",
    )
    table1.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")

    ood = commands.add_parser(
        "ood", help="score runs and the classical floor on out-of-domain labelled tiles"
    )
    ood.add_argument("run_dirs", type=Path, nargs="*", help="run folders (checkpoints/best.pt)")
    ood.add_argument(
        "--tiles",
        required=True,
        help="a labelled-tiles folder (CPM-15), or a data source whose test split is scored",
    )
    ood.add_argument("--out", type=Path, required=True, help="summary CSV (per tile beside it)")
    ood.add_argument("--no-classical", action="store_true", help="leave out the classical row")
    ood.add_argument(
        "--classical-mpp",
        type=float,
        default=0.5,
        help="the resolution (um/px) the classical row is scored at (default 0.5, 20x)",
    )
    ood.add_argument(
        "--stain-normalise",
        choices=["both", "no", "yes"],
        default="both",
        help="Reinhard-normalise the tiles to each run's training images (default: both rows)",
    )
    ood.add_argument("--device", default="auto")
    ood.add_argument(
        "--tuned",
        action="store_true",
        help="post-process with each run's tuned thresholds (`nucstudy tune`)",
    )
    ood.add_argument(
        "--update",
        action="store_true",
        help="keep the rows already in --out and score only the runs it lacks",
    )

    segment = commands.add_parser(
        "segment",
        help="find the nuclei of your own images (PNG, JPEG, TIFF) or whole slides (.svs, "
        "pyramidal TIFF, OME-TIFF, ...) with a model",
    )
    segment.add_argument(
        "inputs", type=Path, nargs="+", help="image or slide files, or folders of them"
    )
    segment.add_argument(
        "--model", type=Path, required=True, help="a checkpoint (.pt) or a run folder"
    )
    segment.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="the images' resolution in um/px (40x: about 0.25, 20x: about 0.5); required "
        "for images, optional for slides (it overrides their metadata)",
    )
    segment.add_argument("--out", type=Path, required=True, help="output folder")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segment.add_argument(
        "--region-size",
        type=int,
        default=None,
        help="slides: side of the regions read one at a time, in px at the model's "
        "resolution (default: two tiles)",
    )
    segment.add_argument(
        "--tissue-mask",
        type=Path,
        default=None,
        help="slides: an image of the slide's tissue (non-zero), any size (default: Otsu)",
    )
    segment.add_argument(
        "--gzip", action="store_true", help="slides: write the GeoJSON gzip-compressed"
    )
    segment.add_argument(
        "--tile-size",
        type=int,
        default=SegmentOptions.tile_size,
        help="tile side in px at the model's resolution, a multiple of 32",
    )
    segment.add_argument(
        "--overlap", type=int, default=SegmentOptions.overlap, help="px shared by tiles"
    )
    segment.add_argument("--batch-size", type=int, default=SegmentOptions.batch_size)
    segment.add_argument("--device", default="auto", help="auto, cpu or cuda")
    segment.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    segment.add_argument(
        "--stain-normalise",
        action="store_true",
        help="bring the images' colours to the model's training images first (Reinhard)",
    )
    segment.add_argument(
        "--postprocess-workers",
        type=int,
        default=0,
        help="processes that post-process tiles while the network runs (0: none)",
    )

    export = commands.add_parser(
        "export", help="write a small inference-only model file from a run's best checkpoint"
    )
    export.add_argument("model", type=Path, help="a run folder or a training checkpoint (.pt)")
    export.add_argument("--out", type=Path, required=True, help="the model file to write")
    export.add_argument(
        "--full-precision", action="store_true", help="keep float32 weights (default float16)"
    )
    export.add_argument(
        "--restore-batch-norm",
        action="store_true",
        help="estimate again, from the model's training patches, the batch-norm statistics "
        "that an earlier float16 export lost to overflow (MODEL: that model file)",
    )
    export.add_argument(
        "--no-stain-reference",
        action="store_true",
        help="do not store the training images' colour statistics (then the model's data "
        "need not be at hand, and segment --stain-normalise is not available)",
    )
    export.add_argument(
        "--state-scores",
        metavar="DATA",
        help="score the written file on a fixed subset of DATA's test split (e.g. "
        "consep:../shared/data/consep256) and write <out>.scores.json beside it",
    )

    render = commands.add_parser(
        "render",
        help="execute experiment pages of the book (book/experiments/...) again from their "
        "templates, with the parameters each was rendered with; finished runs are reused",
    )
    render.add_argument("pages", type=Path, nargs="+", help="train, ablations or table1 pages")

    data = commands.add_parser("data", help="generate, import and summarise data sets")
    tools = data.add_subparsers(dest="tool", required=True, parser_class=Parser)
    synth = tools.add_parser("synthetic", help="generate synthetic H&E in the CoNIC layout")
    synth.add_argument("--n", type=int, default=64)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scheme", default="conic", choices=["conic", "consep"])
    synth.add_argument("--out", type=Path, required=True)
    imp = tools.add_parser("import-consep", help="write a CoNSeP-256 split in the CoNIC layout")
    imp.add_argument("src", type=Path)
    imp.add_argument("--split", default="train", choices=["train", "test"])
    imp.add_argument("--resample", action="store_true", help="halve to 0.5 um/px")
    imp.add_argument("--out", type=Path, required=True)
    summary = tools.add_parser("summary", help="patches and nuclei per class of a data set")
    summary.add_argument("source", help="a CoNIC-layout folder, or synthetic / consep:<folder>")
    summary.add_argument("--split", default="train", choices=["train", "test"])
    sizes = tools.add_parser(
        "sizes", help="how large the nuclei of data sets are, in um (are yours the model's?)"
    )
    sizes.add_argument(
        "sources", nargs="+", help="labelled-tiles folders, or synthetic / consep:<folder> / ..."
    )
    sizes.add_argument("--split", default="test", choices=["train", "test"])
    sizes.add_argument("--out", type=Path, help="also write the table here (CSV)")
    return parser
