"""Out-of-domain results as the book reports them: runs grouped by recipe, means over seeds,
the floor, and what tuned thresholds cost in spurious nuclei.

:func:`nucstudy.study.ood.ood_table` writes one row per segmenter and test condition
(``results/ood/cpm15.csv``): a run folder ``<root>/<source>/<arm>-seed<k>`` scored on tiles
as they are or stain-normalised, with HoVer-Net's thresholds or its own tuned ones, and the
classical floor. One run is one draw, so this module reads that table by recipe:

- :func:`run_parts`, :func:`arm_words`, :func:`label_runs`: each row's source, arm, seed,
  network and the changes made to the paper's recipe, in words;
- :func:`add_consep_scores`: each run's score on CoNSeP's own test split beside it;
- :func:`group_runs`: one row per recipe and test condition, mean and standard deviation
  over seeds;
- :func:`recipe_table`: one row per recipe, its scores on CoNSeP and CPM-15 side by side;
- :func:`spurious_cost`, :func:`spurious_sentence`: nuclei predicted and invented by each
  tuned run with HoVer-Net's thresholds and with its own;

Its figure, one dot per seed per recipe, is :func:`nucstudy.study.ood_plots.plot_seeds`;
the sentences that sum the table up (the floor, the remedies, in and out of domain) are in
:mod:`nucstudy.study.ood_summary`.

Every score is unitless (binary PQ, DQ, SQ, AJI, Dice in [0, 1]); counts are nuclei summed
over the test tiles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from nucstudy.study.ood import CLASSICAL_ROW
from nucstudy.study.paths import REPO_ROOT, STUDY_MODEL_RUN
from nucstudy.study.report import mean_std

__all__ = [
    "FLOOR",
    "NETWORKS",
    "NOTHING",
    "REMEDIES",
    "SHIPPED",
    "TUNED",
    "add_consep_scores",
    "arm_words",
    "group_runs",
    "label_runs",
    "recipe_table",
    "run_parts",
    "spurious_cost",
    "spurious_sentence",
]

#: The network an arm starts from (the first word(s) of its name), in words.
NETWORKS = {
    "full": "proposed network",
    "no-SE": "proposed, no SE blocks",
    "no-CA": "proposed, no Coordinate Attention",
    "no-cw": "proposed, no class weights",
    "hovernet": "HoVer-Net",
    "maskrcnn": "Mask R-CNN",
}
#: What each later word of an arm's name adds to the paper's recipe, in words.
REMEDIES = {
    "stain": "stain aug.",
    "stainstrong": "strong stain",
    "scale": "wide rescale",
    "blur": "blur & noise",
    "gray": "grayscale",
    "synth": "synthetic",
    "b8": "batch 8",
}
#: Arms of the recipe runs (``results/runs/consep-recipe``), named by what they are as a whole.
RECIPE_ARMS = {"reference": ("proposed network", ["study recipe"])}
#: A long run of a preset's network with the study's recipe
#: (:func:`nucstudy.study.recipe.long_run_config`): ``recipe-<preset>-<steps>``.
_LONG_RUN = re.compile(r"^recipe-(?P<preset>.+)-(?P<steps>\d+)$")
#: Added to the changes of the run the shipped model (``results/models/consep-cpu-demo.pt``)
#: was exported from.
SHIPPED = "shipped model"
#: The change named for rows post-processed with a run's tuned thresholds.
TUNED = "tuned thresholds"
#: The changes of a run trained and post-processed as the paper says.
NOTHING = "nothing"
#: The network name of the classical floor's rows.
FLOOR = "classical floor"
#: The value of the ``thresholds`` column for tuned rows.
_TUNED_ROWS = "tuned"
#: A run folder's name: ``<arm>-seed<k>``.
_SEEDED = re.compile(r"^(?P<arm>.+)-seed(?P<seed>\d+)$")
#: The columns that make one recipe and test condition (a group of seeds).
GROUP_KEYS = ["preset", "network", "changes", "stain normalisation", "thresholds", "mpp"]


def run_parts(run: str) -> tuple[str, str, int]:
    """``"results/runs/consep-paper/full-stain-seed1"`` -> ``("consep-paper", "full-stain", 1)``:
    the run's source folder, its arm and its seed.

    Raises:
        ValueError: the folder name does not end in ``-seed<k>``.
    """
    path = PurePosixPath(str(run).replace("\\", "/"))
    match = _SEEDED.match(path.name)
    if match is None:
        raise ValueError(f"run folder {run!r} is not named <arm>-seed<k>")
    return path.parent.name, match["arm"], int(match["seed"])


def arm_words(arm: str) -> tuple[str, list[str]]:
    """An arm's network and changes in words: ``"full-stainstrong-scale"`` ->
    ``("proposed network", ["strong stain", "wide rescale"])``.

    A recipe arm (:data:`RECIPE_ARMS`) is named as a whole, and a long run of the study's
    recipe by its steps (``"recipe-cpu-demo-20000"`` -> ``("proposed network", ["study
    recipe, 20,000 steps"])``). Otherwise the network is the longest key of :data:`NETWORKS`
    the arm starts with (an unknown one is the arm's first word); each later word is looked
    up in :data:`REMEDIES` (an unknown word is kept as it is).
    """
    if arm in RECIPE_ARMS:
        network, words = RECIPE_ARMS[arm]
        return network, list(words)
    long_run = _LONG_RUN.match(arm)
    if long_run:
        return NETWORKS["full"], [f"study recipe, {int(long_run['steps']):,} steps"]
    bases = [b for b in NETWORKS if arm == b or arm.startswith(b + "-")]
    base = max(bases, key=len) if bases else arm.split("-")[0]
    rest = arm[len(base) + 1 :]
    words = [REMEDIES.get(word, word) for word in rest.split("-")] if rest else []
    return NETWORKS.get(base, base), words


def label_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an out-of-domain table (:func:`~nucstudy.study.ood.ood_table`'s summary or
    per-tile frame) with their recipe in words.

    Args:
        table: rows with ``method``, ``run``, ``preset``, ``stain normalisation`` (bool),
            ``thresholds`` (``HoVer-Net's``, ``tuned``, or empty for the floor) and ``mpp``.

    Returns:
        A copy with ``source``, ``arm``, ``seed`` (nullable int; missing for the floor),
        ``network`` (:data:`NETWORKS`, or :data:`FLOOR`), ``changes`` (the arm's changes and
        :data:`TUNED` joined by `` + ``, or :data:`NOTHING`; `` (shipped model)`` added for
        the run the shipped model was exported from,
        :data:`~nucstudy.study.paths.STUDY_MODEL_RUN`) and ``floor`` (bool). The floor's
        ``preset`` and ``thresholds`` are empty strings.
    """
    out = table.copy()
    out["floor"] = (out["method"] == CLASSICAL_ROW).to_numpy()

    def words(run: str, thresholds: str) -> tuple[str, str, int, str, str]:
        source, arm, seed = run_parts(run)
        network, changes = arm_words(arm)
        if _is_shipped(run):
            changes = [*changes[:-1], f"{changes[-1]} ({SHIPPED})"] if changes else [SHIPPED]
        changes += [TUNED] if thresholds == _TUNED_ROWS else []
        return source, arm, seed, network, " + ".join(changes) or NOTHING

    rows = [
        ("", "", pd.NA, FLOOR, "") if is_floor else words(run, thresholds)
        for is_floor, run, thresholds in zip(
            out["floor"], out["run"], out["thresholds"], strict=True
        )
    ]
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 5
    out["source"], out["arm"], seeds, out["network"], out["changes"] = columns
    out["seed"] = pd.array(seeds, dtype="Int64")
    for column in ("preset", "thresholds"):
        out[column] = out[column].fillna("").astype(str)
    return out


def _is_shipped(run: str) -> bool:
    """Whether ``run`` (relative to the repository or absolute) is the shipped model's run."""
    path = PurePosixPath(str(run).replace("\\", "/"))
    shipped = PurePosixPath(STUDY_MODEL_RUN.relative_to(REPO_ROOT).as_posix())
    return path == shipped or path == PurePosixPath(STUDY_MODEL_RUN.as_posix())


def add_consep_scores(labelled: pd.DataFrame, repo_root: Path, metric: str = "pq") -> pd.DataFrame:
    """Each run's score on CoNSeP's own test split beside its out-of-domain row.

    Args:
        labelled: from :func:`label_runs`.
        repo_root: the folder the ``run`` paths are relative to.
        metric: the key of ``metrics.json``'s ``overall`` block (``pq``: binary PQ, ``mpq+``).

    Returns:
        A copy with ``consep <metric>``: from the run folder's ``metrics.json``, or
        ``metrics-tuned.json`` for a tuned row; NaN for the floor and where the file is missing.
    """
    values = []
    for is_floor, run, thresholds in zip(
        labelled["floor"], labelled["run"], labelled["thresholds"], strict=True
    ):
        name = "metrics-tuned.json" if thresholds == _TUNED_ROWS else "metrics.json"
        path = Path(repo_root) / str(run) / name
        if is_floor or not path.is_file():
            values.append(float("nan"))
            continue
        values.append(float(json.loads(path.read_text())["overall"][metric]))
    return labelled.assign(**{f"consep {metric}": values})


def _order(groups: pd.DataFrame) -> pd.DataFrame:
    """Groups as a reader meets them: by preset and network in order of first appearance,
    then untuned before tuned, fewer changes before more, recipes with as many in order of
    appearance, tiles as they are before stain-normalised ones."""
    networks = list(zip(groups["preset"], groups["network"], strict=True))
    key = pd.DataFrame(
        {
            "network": pd.factorize(pd.Series(networks, index=groups.index))[0],
            "tuned": groups["thresholds"] == _TUNED_ROWS,
            "changes": [0 if c == NOTHING else c.count(" + ") + 1 for c in groups["changes"]],
            "recipe": pd.factorize(groups["changes"])[0],
            "normalised": groups["stain normalisation"].astype(bool),
        },
        index=groups.index,
    )
    order = key.sort_values(list(key.columns), kind="stable").index
    return groups.loc[order].reset_index(drop=True)


def group_runs(
    labelled: pd.DataFrame, metrics: Sequence[str] = ("pq",), by: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per recipe and test condition: the networks' rows averaged over seeds.

    Args:
        labelled: from :func:`label_runs` (the floor's rows are left out).
        metrics: numeric columns to summarise (``pq``, ``dq``, ``spurious``...).
        by: further keys, e.g. ``("tile",)`` for per-tile rows.

    Returns:
        One row per (:data:`GROUP_KEYS`, ``by``) in reading order (:func:`_order`):
        the keys, ``seeds`` (int, runs in the group) and, per metric, ``<metric> mean``,
        ``<metric> std`` (ddof 1: NaN for one seed), ``<metric> min`` and ``<metric> max``
        (NaN values are left out; all NaN gives NaN).
    """
    runs = labelled[~labelled["floor"]]
    keys = [*GROUP_KEYS, *by]
    grouped = runs.groupby(keys, sort=False, dropna=False)
    out = grouped.size().rename("seeds").to_frame()
    for metric in metrics:
        stats = grouped[metric].agg(["mean", "std", "min", "max"])
        stats.columns = [f"{metric} {name}" for name in stats.columns]
        out = out.join(stats)
    out = out.reset_index()
    out["seeds"] = out["seeds"].astype(int)
    return _order(out)


def recipe_table(labelled: pd.DataFrame, shown: Sequence[str] = ("changes",)) -> pd.DataFrame:
    """One row per recipe (both test conditions of a group side by side), for the book.

    Args:
        labelled: from :func:`label_runs`, with ``pq`` and ``nuclei predicted``, and
            ``consep pq`` if :func:`add_consep_scores` was applied.
        shown: the recipe's key columns to show (of ``preset``, ``network``, ``changes``,
            ``thresholds``).

    Returns:
        In :func:`group_runs`' order: ``shown``, ``seeds`` (int), ``CoNSeP test PQ`` (binary
        PQ on CoNSeP's test split), ``CPM-15 PQ`` (tiles as they are) and ``CPM-15 PQ,
        stain-normalised``, each the mean ± std over seeds as text (:func:`mean_std`), and
        ``nuclei predicted`` (the mean over seeds on tiles as they are, rounded).
    """
    runs = labelled[~labelled["floor"]]
    keys = ["preset", "network", "changes", "thresholds", "mpp"]
    consep = runs["consep pq"] if "consep pq" in runs else pd.Series(np.nan, index=runs.index)
    rows = []
    for _, recipe in group_runs(labelled)[keys].drop_duplicates().iterrows():
        same = (runs[keys] == recipe).all(axis=1)
        plain, normed = same & ~runs["stain normalisation"], same & runs["stain normalisation"]
        rows.append(
            {
                **{column: recipe[column] for column in shown},
                "seeds": int(runs.loc[same, "seed"].nunique()),
                "CoNSeP test PQ": mean_std(consep[plain]),
                "CPM-15 PQ": mean_std(runs.loc[plain, "pq"]),
                "CPM-15 PQ, stain-normalised": mean_std(runs.loc[normed, "pq"]),
                "nuclei predicted": float(np.round(runs.loc[plain, "nuclei predicted"].mean())),
            }
        )
    return pd.DataFrame(rows)


def spurious_cost(
    labelled: pd.DataFrame, normalised: bool = False, extra: Sequence[str] = ()
) -> pd.DataFrame:
    """The nuclei each tuned run predicts and invents with HoVer-Net's thresholds and with
    its own, on the same tiles.

    Args:
        labelled: from :func:`label_runs`, with ``pq``, ``nuclei predicted``, ``nuclei
            true`` and ``spurious`` (predicted nuclei matching no true one).
        normalised: compare the stain-normalised rows instead of the tiles as they are.
        extra: further columns to compare the same way (``split``, ``consep pq``).

    Returns:
        One row per run scored both ways: ``run``, ``preset``, ``network``, ``changes``
        (without :data:`TUNED`), ``seed``, ``nuclei true`` and, for each of ``pq``,
        ``nuclei predicted``, ``spurious`` and ``extra``, ``<column>, HoVer-Net's`` and
        ``<column>, tuned``. Runs without a tuned row are left out.
    """
    rows = labelled[~labelled["floor"] & (labelled["stain normalisation"] == normalised)]
    tuned = rows[rows["thresholds"] == _TUNED_ROWS].set_index("run")
    plain = rows[rows["thresholds"] == "HoVer-Net's"].set_index("run")
    runs = [run for run in tuned.index if run in plain.index]
    out = plain.loc[runs, ["preset", "network", "changes", "seed", "nuclei true"]].reset_index()
    for column in ("pq", "nuclei predicted", "spurious", *extra):
        out[f"{column}, HoVer-Net's"] = plain.loc[runs, column].to_numpy()
        out[f"{column}, tuned"] = tuned.loc[runs, column].to_numpy()
    return out


def spurious_sentence(cost: pd.DataFrame, floor: pd.Series | None = None, worst: int = 2) -> str:
    """What tuned thresholds cost in spurious nuclei, generated from :func:`spurious_cost`.

    Args:
        cost: from :func:`spurious_cost`.
        floor: the floor's row (``nuclei predicted``, ``spurious``) for comparison, or None.
        worst: how many of the largest rises (by ratio) to quote.
    """
    if cost.empty:
        return "No run was scored with tuned thresholds."
    before = cost["spurious, HoVer-Net's"].astype(float)
    after = cost["spurious, tuned"].astype(float)
    rises = int((after > before).sum())
    ratio = (after / before).replace(np.inf, np.nan)
    largest = ratio.sort_values(ascending=False, na_position="last").index[:worst]
    quoted = " and ".join(f"{before[i]:,.0f} → {after[i]:,.0f}" for i in largest)
    true = int(cost["nuclei true"].iloc[0])
    predicted = cost["nuclei predicted, tuned"]
    predicted_before = cost["nuclei predicted, HoVer-Net's"]
    runs = "every one" if rises == len(cost) else f"{rises}"
    text = (
        f"Tuned thresholds raise the spurious nuclei (predictions matching no outlined nucleus) "
        f"in {runs} of the {len(cost)} runs scored with them: from {before.mean():,.0f} to "
        f"{after.mean():,.0f} on average, the largest rises {quoted}. The nuclei predicted go "
        f"from {predicted_before.mean():,.0f} to {predicted.mean():,.0f} on average (up to "
        f"{predicted.max():,.0f}), against {true:,} outlined."
    )
    if floor is not None:
        text += (
            f" The classical floor predicts {floor['nuclei predicted']:,.0f}, "
            f"{floor['spurious']:,.0f} of them spurious."
        )
    return text
