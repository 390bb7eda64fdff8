"""Commands of the study's comparisons: ``table1``, ``ood`` (unseen tissue), and ``render``
(an experiment page of the book executed again from its template)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from nucstudy.cli.arguments import (
    UsageError,
    check_run_dirs,
    check_source,
    read_tiles,
    recipe_settings,
    settings,
)


def method_settings(items: list[str], flag: str) -> dict[str, dict[str, Any]]:
    """``METHOD:KEY=VALUE`` items -> {method: {key: value}}."""
    from nucstudy.study.table1 import METHODS

    changes: dict[str, dict[str, Any]] = {}
    for item in items:
        method, sep, pair = item.partition(":")
        if not sep or method not in METHODS:
            raise UsageError(
                f"{flag} {item!r}: expected METHOD:KEY=VALUE, METHOD one of {', '.join(METHODS)}"
            )
        changes.setdefault(method, {}).update(settings([pair], flag))
    return changes


def table1_command(args: argparse.Namespace) -> int:
    from nucstudy.data import parse_source
    from nucstudy.study.table1 import METHODS, run_table1, table1_base

    check_source(args.data)
    methods = tuple(args.methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UsageError(f"--methods {' '.join(unknown)}: known methods are {', '.join(METHODS)}")
    changes = method_settings(args.method_set, "--method-set")
    for method, options in method_settings(args.method_option, "--method-option").items():
        changes.setdefault(method, {})["model_options"] = options
    try:
        protocol = {**recipe_settings(args.recipe), **settings(args.set, "--set")}
        base = table1_base(args.data, args.preset, **protocol)
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


def ood_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from nucstudy.common.io import atomic_write_text
    from nucstudy.study.ood import ood_table

    check_run_dirs(args.run_dirs)
    if not args.run_dirs and args.no_classical:
        raise UsageError("nothing to score: give run folders or keep the classical row")
    if not args.classical_mpp > 0:
        raise UsageError(
            f"--classical-mpp must be a positive resolution, got {args.classical_mpp}"
        )
    normalise = {"both": (False, True), "no": (False,), "yes": (True,)}[args.stain_normalise]
    tiles = read_tiles(args.tiles)
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


def render_command(args: argparse.Namespace) -> int:
    from nucstudy.study.render import render_again, rendered_parameters

    for page in args.pages:  # every page checked before the first is executed
        rendered_parameters(page)
    for page in args.pages:
        print(f"rendering {page} again from its template", flush=True)
        render_again(page)
        print(f"wrote {page}")
    return 0
