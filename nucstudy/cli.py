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

A bad argument or missing data is reported as one line on stderr with exit code 2;
``segment`` exits with 1 when some of its images failed (the others are written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nucstudy.checkpoint import CheckpointError
from nucstudy.data import ConicData, import_consep256, open_source, save_conic, synthetic_conic
from nucstudy.experiment import CONFIG_FILE, PRESETS, ExperimentConfig, preset
from nucstudy.methods import OWN_TRAINING
from nucstudy.postprocess import ROUTES
from nucstudy.segment import SegmentOptions

if TYPE_CHECKING:
    from nucstudy.data.tiles import LabelledTile

EXIT_USAGE = 2
EXIT_FAILED = 1


class UsageError(Exception):
    """A bad argument or missing input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def _parse_value(text: str) -> Any:
    """A --set / --model-option value: JSON where it parses (numbers, true, null, lists)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE")
        values[key.replace("-", "_")] = _parse_value(value)
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nucstudy", description="Nuclear segmentation study: train, predict, evaluate, data."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
        help="choose HoVer-Net's two post-processing thresholds on each run's validation patches",
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

    data = commands.add_parser("data", help="generate, import and summarise data sets")
    tools = data.add_subparsers(dest="tool", required=True, parser_class=_Parser)
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


def _train(args: argparse.Namespace) -> int:
    from nucstudy.train import Trainer

    config = ExperimentConfig.load(args.config) if args.config else preset(args.preset)
    changes: dict[str, Any] = {}
    if args.model is not None:  # the model's own loss and class weights unless --set
        changes.update(OWN_TRAINING.get(args.model, {}))
    changes.update(_pairs(args.set, "--set"))
    for field in ("data", "epochs", "steps", "seed", "device", "model", "postprocess"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    # another model than the preset's starts from its own defaults, not the preset's options
    options = {} if args.model not in (None, config.model) else config.model_options
    if args.model_option or options is not config.model_options:
        changes["model_options"] = {**options, **_pairs(args.model_option, "--model-option")}
    if args.out is not None:
        changes.update(name=args.out.name, out_root=str(args.out.parent))
    try:
        config = config.replace(**changes)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    _check_source(config.data)
    trainer = Trainer(config, resume=args.resume, progress=not args.quiet)
    history = trainer.fit()
    print(
        f"trained {config.name}: {len(history)} epochs, {trainer.step} steps -> {trainer.run_dir}"
    )
    return 0


def _check_source(spec: str) -> None:
    from nucstudy.data import parse_source

    kind, folder = parse_source(spec)
    if folder is not None and not folder.exists():
        raise UsageError(f"--data {spec}: folder {folder} not found")


def _check_run_dirs(run_dirs: list[Path]) -> None:
    """Refuse, in one sentence, any folder that is not a run folder."""
    for run_dir in run_dirs:
        if not (run_dir / CONFIG_FILE).is_file():
            raise UsageError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")


def _eval_data(args: argparse.Namespace) -> tuple[ConicData, str]:
    _check_run_dirs([args.run_dir])
    config = ExperimentConfig.load(args.run_dir / CONFIG_FILE)
    spec = args.data or config.data
    _check_source(spec)
    if args.data:  # another source than the run's: its own split, not the run's test_data
        config = config.replace(data=spec, test_data=None)
    return config.open_data(args.split), f"{spec} ({args.split})"


def _evaluate(args: argparse.Namespace) -> int:
    from nucstudy.evaluate import evaluate
    from nucstudy.tuning import read_thresholds

    data, name = _eval_data(args)
    thresholds = read_thresholds(args.run_dir) if args.tuned else None
    result = evaluate(
        args.run_dir,
        data,
        which=args.checkpoint,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        data_name=name,
        postprocess_workers=args.postprocess_workers,
        route=args.postprocess,
        thresholds=thresholds,
    )
    overall = result["overall"]
    print(
        f"{args.run_dir}: mPQ+ {overall['mpq+']:.4f}, R² {overall['r2']:.4f}, "
        f"PQ {overall['pq']:.4f} on {result['patches']} patches of {name}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nucstudy.device import resolve_device
    from nucstudy.evaluate import load_run_model
    from nucstudy.inference import predict_labels
    from nucstudy.submission import write_submission

    data, name = _eval_data(args)
    trained = load_run_model(args.run_dir, args.checkpoint)
    model, config = trained.network, trained.config
    device = resolve_device(args.device)
    model.to(device)
    pred = predict_labels(
        model,
        np.asarray(data.images),
        data.mpp,
        args.batch_size,
        device,
        args.tta,
        config.mixed_precision,
        postprocess_workers=args.postprocess_workers,
        route=args.postprocess or config.postprocess,
        progress=True,
    )
    out = args.out or args.run_dir / "predictions"
    paths = write_submission(out, pred, data.scheme)
    print(f"predictions for {len(pred)} patches of {name}: {paths[0]}, {paths[1]}")
    return 0


def _method_pairs(items: list[str], flag: str) -> dict[str, dict[str, Any]]:
    """``METHOD:KEY=VALUE`` items -> {method: {key: value}}."""
    from nucstudy.table1 import METHODS

    changes: dict[str, dict[str, Any]] = {}
    for item in items:
        method, sep, pair = item.partition(":")
        if not sep or method not in METHODS:
            raise UsageError(
                f"{flag} {item!r}: expected METHOD:KEY=VALUE, METHOD one of {', '.join(METHODS)}"
            )
        changes.setdefault(method, {}).update(_pairs([pair], flag))
    return changes


def _table1(args: argparse.Namespace) -> int:
    from nucstudy.data import parse_source
    from nucstudy.table1 import METHODS, run_table1, table1_base

    _check_source(args.data)
    methods = tuple(args.methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UsageError(f"--methods {' '.join(unknown)}: known methods are {', '.join(METHODS)}")
    changes = _method_pairs(args.method_set, "--method-set")
    for method, options in _method_pairs(args.method_option, "--method-option").items():
        changes.setdefault(method, {})["model_options"] = options
    try:
        base = table1_base(args.data, args.preset, **_pairs(args.set, "--set"))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    out = args.out or Path("runs") / f"table1-{parse_source(args.data)[0]}-{args.preset}"
    if args.compute_minutes is not None and not args.compute_minutes > 0:
        raise UsageError(f"--compute-minutes must be positive, got {args.compute_minutes}")
    table = run_table1(
        base,
        out,
        changes,
        methods=methods,
        budget_minutes=args.budget_minutes,
        n_boot=args.n_boot,
        compute_minutes=args.compute_minutes,
    )
    shown = [
        c
        for c in ("method", "status", "mPQ+", "R²", "PQ", "steps", "train minutes", "protocol")
        if c in table
    ]
    print(table[shown].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"wrote {out / 'table1.csv'}")
    return 0


def _ood(args: argparse.Namespace) -> int:
    import pandas as pd

    from nucstudy.io import atomic_write_text
    from nucstudy.ood import ood_table

    _check_run_dirs(args.run_dirs)
    if not args.run_dirs and args.no_classical:
        raise UsageError("nothing to score: give run folders or keep the classical row")
    if not args.classical_mpp > 0:
        raise UsageError(
            f"--classical-mpp must be a positive resolution, got {args.classical_mpp}"
        )
    normalise = {"both": (False, True), "no": (False,), "yes": (True,)}[args.stain_normalise]
    tiles = _read_tiles(args.tiles)
    per_tile_path = args.out.with_name(f"{args.out.stem}_per_tile{args.out.suffix}")
    kept = [pd.DataFrame(), pd.DataFrame()]
    run_dirs, classical = list(args.run_dirs), not args.no_classical
    if args.update and args.out.is_file() and per_tile_path.is_file():
        kept = [pd.read_csv(args.out), pd.read_csv(per_tile_path)]
        thresholds = "tuned" if args.tuned else "HoVer-Net's"
        networks = kept[0][kept[0]["run"].notna()]
        done = set(networks.loc[networks["thresholds"] == thresholds, "run"].astype(str))
        run_dirs = [run for run in run_dirs if str(run) not in done]
        floors = kept[0][kept[0]["run"].isna()]
        classical = classical and not np.isclose(floors["mpp"], args.classical_mpp).any()
    summary, per_tile = ood_table(
        run_dirs,
        tiles,
        normalise,
        classical,
        args.classical_mpp,
        device=args.device,
        progress=True,
        tuned=args.tuned,
    )
    summary = pd.concat([kept[0], summary], ignore_index=True)
    per_tile = pd.concat([kept[1], per_tile], ignore_index=True)
    atomic_write_text(args.out, summary.to_csv(index=False))
    atomic_write_text(per_tile_path, per_tile.to_csv(index=False))
    shown = summary[["method", "run", "stain normalisation", "thresholds", "pq", "aji", "dice"]]
    print(shown.to_string(float_format="{:.4f}".format))
    print(f"wrote {args.out} and {per_tile_path}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from nucstudy.tuning import save_thresholds, tune_thresholds

    _check_run_dirs(args.run_dirs)
    for run_dir in args.run_dirs:
        best, grid = tune_thresholds(run_dir, device=args.device)
        path = save_thresholds(run_dir, best, grid)
        default = grid["val pq"].iloc[0]
        marker = "HoVer-Net's" if best.min_marker_um2 is None else f"{best.min_marker_um2:g} um²"
        print(
            f"{run_dir}: foreground {best.foreground:g}, energy {best.energy:g}, smallest "
            f"marker {marker} (validation PQ {grid['val pq'].max():.4f}; HoVer-Net's: "
            f"{default:.4f}) -> {path}"
        )
    return 0


def _model_file(path: Path) -> Path:
    """A checkpoint named directly, or a run folder's ``checkpoints/best.pt``."""
    from nucstudy.evaluate import run_checkpoint

    return run_checkpoint(path) if path.is_dir() else path


def _export(args: argparse.Namespace) -> int:
    from nucstudy.inference import export_model, load_model
    from nucstudy.ood import run_stain_reference

    checkpoint = _model_file(args.model)
    stain = None
    if not args.no_stain_reference:
        try:
            stain = run_stain_reference(load_model(checkpoint))
        except FileNotFoundError as error:
            raise UsageError(
                f"{error}; the training data is needed for the colour statistics "
                "(or pass --no-stain-reference)"
            ) from None
    out = export_model(checkpoint, args.out, half=not args.full_precision, stain=stain)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")
    if args.state_scores:
        from nucstudy.stated_scores import stated_scores_path, write_stated_scores

        _check_source(args.state_scores)
        scores = json.loads(write_stated_scores(out, args.state_scores).read_text())["scores"]
        print(
            f"{stated_scores_path(out)}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
    return 0


def _segment(args: argparse.Namespace) -> int:
    from nucstudy.inference import load_model
    from nucstudy.segment import segment_paths
    from nucstudy.slide_segment import SlideOptions, segment_slide
    from nucstudy.slides import SlideError, slide_stem, split_inputs

    images, slides, ignored = split_inputs(args.inputs)
    if args.mpp is None and (images or not slides):
        raise UsageError(
            "--mpp (the images' resolution in um/px) is required for PNG, JPEG and plain TIFF "
            "images; only whole-slide files carry their own"
        )
    if args.tissue_mask is not None and len(slides) != 1:
        raise UsageError(f"--tissue-mask needs exactly one slide, got {len(slides)}")
    if args.region_size is not None and args.region_size < 1:
        raise UsageError(f"--region-size must be positive, got {args.region_size}")
    path = _model_file(args.model)
    model = load_model(path)
    options = SegmentOptions(
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        tta=args.tta,
        postprocess_workers=args.postprocess_workers,
        progress=True,
        stain_normalise=args.stain_normalise,
    )
    report = segment_paths(model, images, args.mpp, args.out, options, args.overwrite, str(path))
    for record in report.written:
        print(f"{record['image']}: {record['nuclei']} nuclei -> {args.out}")
    for ignored_file in ignored:
        print(f"{ignored_file}: ignored (not an image or a whole-slide file)")
    failed = [message for _, message in report.failed]
    stems = {image.stem: image for image in images}
    slide_options = SlideOptions(args.region_size, args.tissue_mask, args.gzip, progress=True)
    for slide in slides:
        stem = slide_stem(slide)
        if stem in stems:
            failed.append(f"{slide}: same name as {stems[stem]}")
            continue
        stems[stem] = slide
        try:
            record = segment_slide(
                model,
                slide,
                args.out,
                slide_options,
                options,
                args.mpp,
                args.overwrite,
                str(path),
            )
        except (SlideError, ValueError, FileExistsError) as error:
            failed.append(str(error))
            continue
        print(
            f"{slide}: {record['nuclei']} nuclei in {record['tissue_area_mm2']:.2f} mm2 of "
            f"tissue -> {args.out}"
        )
    for message in failed:
        print(f"nucstudy: error: {message}", file=sys.stderr)
    if not report.written and not failed and not slides:
        raise UsageError("no images found in " + ", ".join(map(str, args.inputs)))
    return EXIT_FAILED if failed else 0


def _data(args: argparse.Namespace) -> int:
    if args.tool == "synthetic":
        if args.n < 1:
            raise UsageError("--n must be at least 1")
        data = synthetic_conic(args.n, size=args.size, seed=args.seed, scheme=args.scheme)
        print(f"wrote {len(data)} synthetic patches to {save_conic(data, args.out)}")
    elif args.tool == "import-consep":
        data = import_consep256(args.src, args.split, resample=args.resample)
        print(f"wrote {len(data)} CoNSeP-256 {args.split} patches to {save_conic(data, args.out)}")
    elif args.tool == "sizes":
        _sizes(args)
    else:
        source = args.source
        if Path(source).is_dir():
            source = f"conic:{source}"
        _check_source(source)
        data = open_source(source, args.split)
        table = data.class_summary().round({"share": 4})
        print(
            f"{source}: {len(data)} patches of "
            f"{data.images.shape[1]} x {data.images.shape[2]} px, "
            f"{data.mpp:g} um/px, scheme {data.scheme.name}, nuclei counted on the central region"
        )
        print(table.to_string())
    return 0


def _is_source(spec: str) -> bool:
    """Whether ``spec`` names a data source (``synthetic``, ``consep:...``), not a folder."""
    return ":" in spec or spec == "synthetic"


def _read_tiles(spec: str, split: str = "test") -> list[LabelledTile]:
    """Labelled tiles from a labelled-tiles folder, or from a data source's ``split``."""
    from nucstudy.data.tiles import load_tiles, tiles_from_source

    if _is_source(spec):
        _check_source(spec)
        return tiles_from_source(spec, split)
    return load_tiles(spec)


def _sizes(args: argparse.Namespace) -> None:
    import pandas as pd

    from nucstudy.data.tiles import nucleus_sizes
    from nucstudy.io import atomic_write_text

    rows = []
    for source in args.sources:
        tiles = _read_tiles(source, args.split)
        name = f"{source} ({args.split})" if _is_source(source) else source
        try:
            rows.append({"data": name, **nucleus_sizes(tiles)})
        except ValueError as error:
            raise UsageError(f"{source}: {error}") from None
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="{:.1f}".format))
    if args.out is not None:
        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nucstudy`` console script; returns the exit code."""
    from nucstudy.train import TrainingError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = {
            "train": _train,
            "evaluate": _evaluate,
            "predict": _predict,
            "table1": _table1,
            "ood": _ood,
            "tune": _tune,
            "segment": _segment,
            "export": _export,
            "data": _data,
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


if __name__ == "__main__":
    sys.exit(main())
