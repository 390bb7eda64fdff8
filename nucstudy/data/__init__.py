"""Data in the CoNIC layout: loaders, the synthetic generator, targets, augmentation, datasets."""

from nucstudy.data.augment import augment_pair, build_augmentation
from nucstudy.data.conic import CONIC_MPP, ConicData, concat_data, load_conic, save_conic
from nucstudy.data.consep import (
    CONSEP_MPP,
    import_consep256,
    region_mosaic,
    tile_of,
    tile_region,
)
from nucstudy.data.dataset import NucleiDataset, make_loader
from nucstudy.data.labels import (
    CHALLENGE_CROP,
    challenge_crop,
    check_label_layout,
    count_nuclei,
    validate_labels,
)
from nucstudy.data.sampling import SAMPLINGS, rare_class_weights
from nucstudy.data.sources import open_source, parse_source
from nucstudy.data.split import split_by_source
from nucstudy.data.synthetic import mix_synthetic, synthetic_conic
from nucstudy.data.targets import make_targets

__all__ = [
    "CHALLENGE_CROP",
    "CONIC_MPP",
    "CONSEP_MPP",
    "ConicData",
    "NucleiDataset",
    "SAMPLINGS",
    "augment_pair",
    "build_augmentation",
    "challenge_crop",
    "check_label_layout",
    "concat_data",
    "count_nuclei",
    "import_consep256",
    "load_conic",
    "make_loader",
    "make_targets",
    "mix_synthetic",
    "open_source",
    "parse_source",
    "rare_class_weights",
    "region_mosaic",
    "save_conic",
    "split_by_source",
    "synthetic_conic",
    "tile_of",
    "tile_region",
    "validate_labels",
]
