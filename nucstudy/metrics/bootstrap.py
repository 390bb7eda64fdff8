"""Per-image statistics of a scored data set, and bootstrap intervals over source images.

mPQ+ pools TP, FP, FN and the sum of IoUs over images before dividing, and R² compares
per-image counts, so both are functions of a per-image, per-class table. Resampling that
table gives bootstrap confidence intervals without re-matching any nucleus. The patches of
one source image (the 16 patches of a CoNSeP tile, the patches of one CoNIC image) are
correlated, so the default resamples source images, each with all its patches
(``by="source"``); ``by="patch"`` resamples patches one by one, which treats them as
independent and gives narrower intervals than the data support.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nucstudy.data.classes import ClassScheme, get_scheme
from nucstudy.data.labels import challenge_crop, count_nuclei
from nucstudy.metrics import match_counts, overlap_table, panoptic_quality, r2_from_sums

STATS = ("tp", "fp", "fn", "sum_iou", "true_count", "pred_count")


def per_image_stats(
    pred: np.ndarray,
    true: np.ndarray,
    scheme: ClassScheme | str,
    sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (image, class): the pooled statistics behind mPQ+ and R².

    Args:
        pred, true: N x H x W x 2 integer arrays in the CoNIC layout.
        scheme: their class scheme.
        sources: the source image of each of the N patches (``patch_info["source"]``), for
            bootstrapping by source; None: each patch is its own source.

    Returns:
        DataFrame with columns image, source, class, tp, fp, fn, sum_iou, true_count,
        pred_count (counts on the central ``challenge_crop(H)`` region), N x K rows.
    """
    scheme = get_scheme(scheme)
    counts = match_counts(overlap_table(pred, true, scheme), scheme.n_classes, by_class=True)
    crop = challenge_crop(min(true.shape[1:3]))
    true_counts = count_nuclei(true, scheme, crop)
    pred_counts = count_nuclei(pred, scheme, crop)
    n, k = true_counts.shape
    sources = np.arange(n).astype(str) if sources is None else np.asarray(sources, dtype=str)
    if len(sources) != n:
        raise ValueError(f"{len(sources)} sources for {n} patches")
    return pd.DataFrame(
        {
            "image": np.repeat(np.arange(n), k),
            "source": np.repeat(sources, k),
            "class": np.tile(list(scheme.foreground_names), n),
            "tp": counts.tp[:, 1:].ravel(),
            "fp": counts.fp[:, 1:].ravel(),
            "fn": counts.fn[:, 1:].ravel(),
            "sum_iou": counts.sum_iou[:, 1:].ravel(),
            "true_count": true_counts.ravel(),
            "pred_count": pred_counts.ravel(),
        }
    )


def _arrays(stats: pd.DataFrame) -> tuple[list[str], dict[str, np.ndarray]]:
    """Class names in order of appearance and each statistic as an N x K array."""
    missing = [c for c in ("image", "class", *STATS) if c not in stats.columns]
    if missing:
        raise ValueError(f"per-image table lacks column(s) {', '.join(missing)}")
    classes = list(dict.fromkeys(stats["class"]))
    table = stats.set_index(["image", "class"])
    images = np.unique(stats["image"])
    index = pd.MultiIndex.from_product([images, classes])
    table = table.reindex(index)
    if table[list(STATS)].isna().any().any():
        raise ValueError("per-image table does not hold every (image, class) pair once")
    shape = (len(images), len(classes))
    return classes, {name: table[name].to_numpy(np.float64).reshape(shape) for name in STATS}


def _scores(weights: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """mPQ+ and R² for each row of ``weights`` (B x N image multiplicities): (B,), (B,)."""
    pooled = {name: weights @ a[name] for name in ("tp", "fp", "fn", "sum_iou")}
    pq = panoptic_quality(pooled["tp"], pooled["fp"], pooled["fn"], pooled["sum_iou"])[2]
    n = weights.sum(axis=1, keepdims=True)
    t, p = a["true_count"], a["pred_count"]
    ss_res = weights @ (t - p) ** 2
    ss_tot = weights @ t**2 - (weights @ t) ** 2 / n
    # sum(t^2) - sum(t)^2 / n leaves rounding residue where the truth is constant
    ss_tot = np.where(ss_tot > 1e-9 * np.maximum(weights @ t**2, 1.0), ss_tot, 0.0)
    return pq.mean(axis=1), r2_from_sums(ss_res, ss_tot).mean(axis=1)


def scores_from_stats(stats: pd.DataFrame) -> dict[str, float]:
    """mPQ+ and R² of the whole table (equal to :func:`nucstudy.metrics.conic_metrics`)."""
    _, a = _arrays(stats)
    mpq, r2 = _scores(np.ones((1, len(a["tp"]))), a)
    return {"mpq+": float(mpq[0]), "r2": float(r2[0])}


def bootstrap_intervals(
    stats: pd.DataFrame,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    by: str = "source",
) -> pd.DataFrame:
    """Percentile bootstrap intervals of mPQ+ and R².

    Args:
        stats: a table from :func:`per_image_stats`.
        n_boot: bootstrap resamples.
        level: confidence level of the interval.
        seed: seed of the resampling.
        by: ``"source"``: draw source images with replacement, as many as there are, each
            with all its patches; ``"patch"``: draw patches one by one.

    Returns:
        DataFrame indexed by metric (``mpq+``, ``r2``) with columns estimate, low, high.
    """
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got {level} and {n_boot}")
    if by not in ("source", "patch"):
        raise ValueError(f"by must be 'source' or 'patch', got {by!r}")
    _, a = _arrays(stats)
    n = len(a["tp"])
    rng = np.random.default_rng(seed)
    if by == "patch":
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    else:
        if "source" not in stats.columns:
            raise ValueError("per-image table has no 'source' column; use by='patch'")
        per_image = stats.drop_duplicates("image").sort_values("image")["source"]
        groups, source_of = np.unique(per_image.to_numpy(), return_inverse=True)
        draws = rng.multinomial(len(groups), np.full(len(groups), 1.0 / len(groups)), n_boot)
        weights = draws[:, source_of].astype(np.float64)
    boot_mpq, boot_r2 = _scores(weights, a)
    point_mpq, point_r2 = _scores(np.ones((1, n)), a)
    tails = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    rows = {
        "mpq+": (point_mpq[0], *np.percentile(boot_mpq, tails)),
        "r2": (point_r2[0], *np.percentile(boot_r2, tails)),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "low", "high"])
