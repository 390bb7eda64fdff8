"""Post-processing: network outputs -> nuclei (CoNIC-layout labels).

- :mod:`~nucstudy.postprocess.watershed`: HoVer-Net's marker-controlled watershed in small
  steps, its constants at any resolution and its tunable thresholds;
- :mod:`~nucstudy.postprocess.nuclei`: the nuclei of a patch (instances, classes by vote,
  geometry) and the CoNIC layout;
- :mod:`~nucstudy.postprocess.hover`: the whole route for the NP/HV/TP networks, one patch
  or many;
- :mod:`~nucstudy.postprocess.detections`: Mask R-CNN's detections pasted into labels;
- :mod:`~nucstudy.postprocess.classical`: the classical segmenter (no network), the floor
  every network must clear.

May import :mod:`nucstudy.data` and :mod:`nucstudy.common` only.
"""

from nucstudy.postprocess.hover import ROUTES, hover_postprocess, postprocess_batch
from nucstudy.postprocess.nuclei import (
    Nuclei,
    nuclear_type_map,
    nucleus_geometry,
    to_conic_labels,
    type_map_of,
    vote_classes,
)
from nucstudy.postprocess.watershed import (
    HOVER_MPP,
    Thresholds,
    WatershedParams,
    fill_holes,
    foreground_mask,
    hv_energy,
    label_components,
    markers_from_energy,
    remove_small,
    segment_instances,
    watershed_instances,
)

__all__ = [
    "HOVER_MPP",
    "ROUTES",
    "Nuclei",
    "Thresholds",
    "WatershedParams",
    "fill_holes",
    "foreground_mask",
    "hover_postprocess",
    "hv_energy",
    "label_components",
    "markers_from_energy",
    "nuclear_type_map",
    "nucleus_geometry",
    "postprocess_batch",
    "remove_small",
    "segment_instances",
    "to_conic_labels",
    "type_map_of",
    "vote_classes",
    "watershed_instances",
]
