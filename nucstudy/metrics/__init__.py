"""Instance segmentation and classification metrics, scored as the CoNIC 2022 challenge does.

The challenge ranks by two numbers:

- **mPQ+** (:func:`conic_metrics` key ``"mpq+"``): for every class c, each map is first
  restricted to the pixels of class c (a nucleus painted with two classes becomes two
  objects); true and predicted objects are matched when their IoU is strictly above 0.5;
  TP, FP, FN and the sum of matched IoUs are *added up over the whole data set*, then
  DQ_c = TP / (TP + FP/2 + FN/2 + 1e-6), SQ_c = sum IoU / (TP + 1e-6), PQ_c = DQ_c x SQ_c, and
  mPQ+ is the mean of PQ_c over the classes. A class absent on both sides scores 0.
- **R²** (key ``"r2"``): nuclei per class counted on the central region
  (:func:`nucstudy.data.count_nuclei`), one coefficient of determination per class with
  scikit-learn's conventions (:func:`r2_per_class`), averaged over classes.

Beside them: ``"pq"``, class-agnostic PQ computed per image and averaged over images (the
challenge's auxiliary number; an image empty on both sides scores 0); ``"mpq_per_image"``,
the PanNuke-style multi-class PQ (per image, the mean PQ over the classes present in the
truth, then the mean over images); ``"aji"`` (aggregated Jaccard index) and ``"dice"``
(binary Dice), each per image and averaged over the images with a nucleus on either side.
mPQ+ pools before dividing and ``mpq_per_image`` averages ratios: they are different numbers.

Failure analysis, for looking at what a model gets wrong: :func:`confusion_of_matched` (the
classes of the nuclei matched class-agnostically, as binary PQ matches them),
:func:`detection_errors` (per class: found, missed, spurious, right and wrong class) and
:func:`patch_errors` (per patch: PQ, merged neighbours, split, missed faint or dark, spurious
and wrong-class nuclei, and the dominant failure). A nucleus's class there is the class most
of its pixels carry.

Modules: :mod:`~nucstudy.metrics.matching` (the overlap table, matching, PQ),
:mod:`~nucstudy.metrics.conic` (mPQ+, R², AJI, Dice), :mod:`~nucstudy.metrics.errors`
(failure analysis) and :mod:`~nucstudy.metrics.bootstrap` (intervals over source images).
May import :mod:`nucstudy.data` and :mod:`nucstudy.common` only.

The results equal the official scoring code (``TissueImageAnalytics/CoNIC``,
``metrics/stats_utils.py``) to rounding: the IoUs are the same quotients of the same
integers and only the order of floating-point sums differs. Where the official code fails
(it raises on a map without a single background pixel) these functions follow the
definitions.
"""

from nucstudy.metrics.conic import (
    aji_per_image,
    conic_metrics,
    dice_per_image,
    r2_from_sums,
    r2_per_class,
)
from nucstudy.metrics.errors import (
    FAILURES,
    MERGE_COVER,
    SPLIT_COVER,
    confusion_of_matched,
    detection_errors,
    patch_errors,
)
from nucstudy.metrics.matching import (
    CHUNK,
    EPS,
    MATCH_IOU,
    MatchCounts,
    OverlapTable,
    match_counts,
    overlap_table,
    panoptic_quality,
)

__all__ = [
    "CHUNK",
    "EPS",
    "FAILURES",
    "MATCH_IOU",
    "MERGE_COVER",
    "SPLIT_COVER",
    "MatchCounts",
    "OverlapTable",
    "aji_per_image",
    "conic_metrics",
    "confusion_of_matched",
    "detection_errors",
    "dice_per_image",
    "match_counts",
    "overlap_table",
    "panoptic_quality",
    "patch_errors",
    "r2_from_sums",
    "r2_per_class",
]
