"""``nucstudy data``: generate, import and summarise data sets, and compare nucleus sizes."""

from __future__ import annotations

import argparse
from pathlib import Path

from nucstudy.cli.arguments import UsageError, check_source, is_source, read_tiles
from nucstudy.data import import_consep256, open_source, save_conic, synthetic_conic


def data_command(args: argparse.Namespace) -> int:
    if args.tool == "synthetic":
        if args.n < 1:
            raise UsageError("--n must be at least 1")
        data = synthetic_conic(args.n, size=args.size, seed=args.seed, scheme=args.scheme)
        print(f"wrote {len(data)} synthetic patches to {save_conic(data, args.out)}")
    elif args.tool == "import-consep":
        data = import_consep256(args.src, args.split, resample=args.resample)
        print(f"wrote {len(data)} CoNSeP-256 {args.split} patches to {save_conic(data, args.out)}")
    elif args.tool == "sizes":
        sizes_command(args)
    else:
        source = args.source
        if Path(source).is_dir():
            source = f"conic:{source}"
        check_source(source)
        data = open_source(source, args.split)
        table = data.class_summary().round({"share": 4})
        print(
            f"{source}: {len(data)} patches of "
            f"{data.images.shape[1]} x {data.images.shape[2]} px, "
            f"{data.mpp:g} um/px, scheme {data.scheme.name}, nuclei counted on the central region"
        )
        print(table.to_string())
    return 0


def sizes_command(args: argparse.Namespace) -> None:
    import pandas as pd

    from nucstudy.common.io import atomic_write_text
    from nucstudy.data.tiles import nucleus_sizes

    rows = []
    for source in args.sources:
        tiles = read_tiles(source, args.split)
        name = f"{source} ({args.split})" if is_source(source) else source
        try:
            rows.append({"data": name, **nucleus_sizes(tiles)})
        except ValueError as error:
            raise UsageError(f"{source}: {error}") from None
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="{:.1f}".format))
    if args.out is not None:
        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"wrote {args.out}")
