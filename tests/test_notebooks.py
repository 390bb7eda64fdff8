"""Every notebook runs under papermill with small ("smoke") parameters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TEACHING = sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb"))
SMOKE = {"n_patches": 8, "seed": 0}  # the knobs teaching notebooks share (8: two sources)


def _parameters_cell(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _run(name: str, out: Path, **parameters) -> nbformat.NotebookNode:
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters=parameters,
        cwd=str(out.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", [])
    )


def _glued(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """Values stored with myst_nb.glue: name -> text/plain."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            if record:
                values[record["name"]] = output["data"][record["mime_prefix"] + "text/plain"]
    return values


def test_the_eight_teaching_notebooks_exist():
    assert [n[:2] for n in TEACHING] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("name", TEACHING)
def test_teaching_notebooks_open_with_goals_and_time_and_close_with_what_to_remember(name):
    cells = nbformat.read(NOTEBOOKS / name, as_version=4).cells
    opening = " ".join(cells[0].source.split())
    assert "you will learn" in opening or "Learning goals" in opening
    assert re.search(r"\*\*Running time:\*\* .*?\b(s|min|minute)\b", opening)
    assert cells[-1].cell_type == "markdown" and cells[-1].source.startswith("## What to")


@pytest.mark.parametrize("name", TEACHING)
def test_teaching_notebooks_have_exercises_with_solutions_that_check_themselves(name):
    """Two to four exercises, each with a hidden solution (sphinx-exercise's gated
    directives) holding code and a cell that asserts what the solution claims."""
    cells = nbformat.read(NOTEBOOKS / name, as_version=4).cells
    labels = [
        re.search(r":label: (\S+)", c.source).group(1)
        for c in cells
        if c.cell_type == "markdown" and c.source.startswith("```{exercise}")
    ]
    assert 2 <= len(labels) <= 4, f"{name}: {len(labels)} exercises"
    for label in labels:
        start = next(
            i for i, c in enumerate(cells) if c.source.startswith(f"```{{solution-start}} {label}")
        )
        assert ":class: dropdown" in cells[start].source  # hidden until clicked
        end = next(
            i for i in range(start, len(cells)) if cells[i].source.startswith("```{solution-end}")
        )
        inside = [c for c in cells[start + 1 : end] if c.cell_type == "code"]
        assert len(inside) >= 2, f"{name} {label}: a solution cell and a check cell"
        assert "assert " in inside[-1].source, f"{name} {label}: the last cell must check"


@pytest.mark.slow
@pytest.mark.parametrize("name", TEACHING)
def test_teaching_notebook_runs(name, tmp_path):
    cell = _parameters_cell(NOTEBOOKS / name)
    parameters = {k: v for k, v in SMOKE.items() if f"{k} =" in cell.source}
    executed = _run(name, tmp_path / name, **parameters)
    assert _images(executed) >= 1, f"{name} drew no figure"


@pytest.mark.slow
def test_experiment_notebooks_run_in_sequence(tmp_path):
    for name in ("train.ipynb", "ablations.ipynb", "table1.ipynb"):
        _parameters_cell(NOTEBOOKS / name)
    runs = tmp_path / "runs"
    train = _run("train.ipynb", tmp_path / "train.ipynb", preset="smoke", out_root=str(runs))
    assert _images(train) >= 2  # curves and predictions
    metrics = json.loads((runs / "full-seed0" / "metrics.json").read_text())
    assert 0.0 <= metrics["overall"]["mpq+"] <= 1.0

    ablations = _run(
        "ablations.ipynb",
        tmp_path / "ablations.ipynb",
        preset="smoke",
        out_root=str(runs),
        reuse_full=str(runs / "full-seed0"),
    )
    verdict = _glued(ablations)["abl_spread_verdict"]
    assert "one seed" in verdict  # one seed and no other spread: no difference is claimed
    trained = {
        name: (runs / name / "env.json").read_text() for name in ("full-seed0", "no-SE-seed0")
    }
    _run(
        "train.ipynb",
        tmp_path / "again.ipynb",
        preset="smoke",
        out_root=str(runs),
        reuse_finished=True,
    )
    _run(
        "ablations.ipynb",
        tmp_path / "again2.ipynb",
        preset="smoke",
        out_root=str(runs),
        reuse_finished=True,
    )
    for name, env in trained.items():
        assert (runs / name / "env.json").read_text() == env, f"{name} was trained again"
    table = pd.read_csv(runs / "ablations.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["full", "no SE", "no CA", "no class weights"]
    assert (runs / "no-SE-seed0" / "metrics.json").is_file()
    reused = json.loads((runs / "full-seed0" / "metrics.json").read_text())
    assert reused == metrics  # the full run was reused, not trained again

    table1 = _run("table1.ipynb", tmp_path / "table1.ipynb", runs_roots=[str(runs)], n_boot=100)
    glued = _glued(table1)
    assert float(glued["t1_runs_mpq"]) == pytest.approx(metrics["overall"]["mpq+"])
    assert int(glued["t1_pending"]) == 2  # HoVer-Net and Mask R-CNN have no run here
