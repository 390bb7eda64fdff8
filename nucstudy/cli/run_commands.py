"""Commands on one run: ``train``, ``evaluate``, ``predict``, ``tune`` and ``export``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from nucstudy.cli.arguments import (
    UsageError,
    check_run_dirs,
    check_source,
    model_file,
    recipe_settings,
    settings,
)
from nucstudy.data import ConicData
from nucstudy.engine.methods import OWN_TRAINING
from nucstudy.study.experiment import CONFIG_FILE, ExperimentConfig
from nucstudy.study.presets import preset


def train_command(args: argparse.Namespace) -> int:
    from nucstudy.engine.trainer import Trainer

    config = ExperimentConfig.load(args.config) if args.config else preset(args.preset)
    changes: dict[str, Any] = {}
    if args.model is not None:  # the model's own loss and class weights unless --set
        changes.update(OWN_TRAINING.get(args.model, {}))
    changes.update(recipe_settings(args.recipe))
    changes.update(settings(args.set, "--set"))
    for field in ("data", "epochs", "steps", "seed", "device", "model", "postprocess"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    # another model than the preset's starts from its own defaults, not the preset's options
    options = {} if args.model not in (None, config.model) else config.model_options
    if args.model_option or options is not config.model_options:
        changes["model_options"] = {**options, **settings(args.model_option, "--model-option")}
    if args.out is not None:
        changes.update(name=args.out.name, out_root=str(args.out.parent))
    try:
        config = config.replace(**changes)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    check_source(config.data)
    trainer = Trainer(config, resume=args.resume, progress=not args.quiet)
    history = trainer.fit()
    print(
        f"trained {config.name}: {len(history)} epochs, {trainer.step} steps -> {trainer.run_dir}"
    )
    return 0


def eval_data(args: argparse.Namespace) -> tuple[ConicData, str]:
    check_run_dirs([args.run_dir])
    config = ExperimentConfig.load(args.run_dir / CONFIG_FILE)
    spec = args.data or config.data
    check_source(spec)
    if args.data:  # another source than the run's: its own split, not the run's test_data
        config = config.replace(data=spec, test_data=None)
    return config.open_data(args.split), f"{spec} ({args.split})"


def evaluate_command(args: argparse.Namespace) -> int:
    from nucstudy.study.evaluate import evaluate
    from nucstudy.study.tuning import read_thresholds

    data, name = eval_data(args)
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


def predict_command(args: argparse.Namespace) -> int:
    from nucstudy.engine.device import resolve_device
    from nucstudy.engine.inference import predict_labels
    from nucstudy.study.evaluate import load_run_model
    from nucstudy.study.submission import write_submission

    data, name = eval_data(args)
    trained = load_run_model(args.run_dir, args.checkpoint)
    model, config = trained.network, ExperimentConfig.of_model(trained)
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


def tune_command(args: argparse.Namespace) -> int:
    from nucstudy.study.tuning import flip_tta_pq, save_thresholds, tune_thresholds

    check_run_dirs(args.run_dirs)
    for run_dir in args.run_dirs:
        best, grid = tune_thresholds(run_dir, device=args.device)
        tta_pq = flip_tta_pq(run_dir, best, device=args.device)
        path = save_thresholds(run_dir, best, grid, tta_pq)
        default = grid["val pq"].iloc[0]
        marker = "HoVer-Net's" if best.min_marker_um2 is None else f"{best.min_marker_um2:g} um²"
        print(
            f"{run_dir}: foreground {best.foreground:g}, energy {best.energy:g}, smallest "
            f"marker {marker} (validation PQ {grid['val pq'].max():.4f}; HoVer-Net's: "
            f"{default:.4f}; these with flip TTA: {tta_pq:.4f}) -> {path}"
        )
    return 0


def export_command(args: argparse.Namespace) -> int:
    from nucstudy.engine.model_file import export_model, load_model
    from nucstudy.study.ood import run_stain_reference

    checkpoint = model_file(args.model)
    model = load_model(checkpoint, require_finite=not args.restore_batch_norm)
    weights = None
    if args.restore_batch_norm:
        from nucstudy.study.restore import restore_lost_batch_norms

        try:
            restored = restore_lost_batch_norms(model)
        except (FileNotFoundError, ValueError) as error:
            raise UsageError(f"{checkpoint}: {error}") from None
        weights = model.network.state_dict()
        print(f"{checkpoint}: statistics estimated again for {', '.join(restored)}")
    stain = None
    if not args.no_stain_reference:
        try:
            stain = run_stain_reference(model)
        except FileNotFoundError as error:
            raise UsageError(
                f"{error}; the training data is needed for the colour statistics "
                "(or pass --no-stain-reference)"
            ) from None
    out = export_model(
        checkpoint, args.out, half=not args.full_precision, stain=stain, weights=weights
    )
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")
    if args.state_scores:
        from nucstudy.study.stated_scores import stated_scores_path, write_stated_scores

        check_source(args.state_scores)
        scores = json.loads(write_stated_scores(out, args.state_scores).read_text())["scores"]
        print(
            f"{stated_scores_path(out)}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
    return 0
