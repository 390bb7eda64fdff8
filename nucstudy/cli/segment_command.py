"""``nucstudy segment``: a user's images and whole slides, with a trained model."""

from __future__ import annotations

import argparse
import sys

from nucstudy.cli.arguments import EXIT_FAILED, UsageError, model_file
from nucstudy.segment.images import SegmentOptions


def segment_command(args: argparse.Namespace) -> int:
    from nucstudy.engine.model_file import load_model
    from nucstudy.segment.images import segment_paths
    from nucstudy.segment.slide_segment import SlideOptions, segment_slide
    from nucstudy.segment.slides import SlideError, slide_stem, split_inputs

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
    path = model_file(args.model)
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
