"""The main job's pieces: arguments, the data step, notebooks run atomically."""

import json

import nbformat
import pandas as pd
import pytest

from nucstudy.data import save_conic, synthetic_conic
from nucstudy.study import main_job as study


def test_bad_arguments_exit_2(capsys):
    for argv in (
        ["--data", "imagenet"],
        ["--data", "consep:/no/such/folder"],
        ["--consep", "/no/such/folder"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            study.main(argv)
        assert exit_info.value.code == 2
    assert "error: --" in capsys.readouterr().err


def test_data_tags():
    assert study.data_tag("synthetic") == "synthetic"
    assert study.data_tag("consep:../x") == "consep"


def test_data_step_writes_summary_and_figure(tmp_path):
    summary = study.data_step(tmp_path / "out", tmp_path / "data", 4, None, seed=1)
    assert list(summary["source"].unique()) == ["synthetic"]
    assert summary["share"].sum() == pytest.approx(1.0)
    assert (tmp_path / "out" / "figures" / "data_sources.png").stat().st_size > 10_000
    assert pd.read_csv(tmp_path / "out" / "data_summary.csv").shape == summary.shape
    assert (tmp_path / "data" / "synthetic" / "images.npy").is_file()


def _template(tmp_path, monkeypatch, name: str, *code: str) -> None:
    """A notebook template ``name`` with a parameters cell ``x = 1`` and then ``code``, in a
    notebooks folder the main job reads from."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir(exist_ok=True)
    book = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            *(nbformat.v4.new_code_cell(source) for source in code),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(book, notebooks / f"{name}.ipynb")
    monkeypatch.setattr(study, "NOTEBOOKS", notebooks)


def test_a_failing_notebook_leaves_its_partial_copy_and_no_output(tmp_path, monkeypatch):
    _template(tmp_path, monkeypatch, "broken", "raise RuntimeError('boom')")
    output = tmp_path / "out" / "broken.ipynb"
    with pytest.raises(Exception, match="boom"):
        study.run_notebook("broken", output, {"x": 2})
    assert not output.exists()
    assert (tmp_path / "out" / "broken.failed.ipynb").is_file()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["broken.failed.ipynb"]


def test_executed_notebooks_are_frozen_for_the_book(tmp_path, monkeypatch):
    _template(tmp_path, monkeypatch, "ok")
    out = study.run_notebook("ok", tmp_path / "out" / "ok.ipynb", {"x": 2})
    assert nbformat.read(out, as_version=4).metadata["mystnb"] == {"execution_mode": "off"}


def test_executed_notebooks_can_be_read_by_everyone(tmp_path, monkeypatch):
    _template(tmp_path, monkeypatch, "ok")
    out = study.run_notebook("ok", tmp_path / "out" / "ok.ipynb", {"x": 2})
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_page_is_headed_by_its_title_in_the_table_of_contents(tmp_path):
    """One template renders several pages (train.ipynb: synthetic, CoNSeP, ...): each page's
    heading is its own title from _toc.yml, so the navigation never shows two alike."""
    assert study.toc_title(study.EXPERIMENTS / "consep" / "train.ipynb") == "Training (CoNSeP)"
    assert study.toc_title(study.EXPERIMENTS / "synthetic" / "ablations.ipynb") == (
        "Ablations (synthetic)"
    )
    assert study.toc_title(study.EXPERIMENTS / "table1.ipynb") is None  # titled by itself
    assert study.toc_title(tmp_path / "elsewhere.ipynb") is None
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("# a comment, not a heading"),
            nbformat.v4.new_markdown_cell("# Training one model\n\nWhat it does.\n\n# Later"),
        ]
    )
    study.retitle(notebook, "Training (CoNSeP)")
    assert notebook.cells[0].source == "# a comment, not a heading"
    assert notebook.cells[1].source == "# Training (CoNSeP)\n\nWhat it does.\n\n# Later"


@pytest.mark.slow
def test_run_notebook_starts_its_kernel_without_the_tcp_encryption_warning(
    tmp_path, monkeypatch, capfd
):
    """ipykernel warns "Kernel is running over TCP without encryption" on the stderr it
    inherits from this process unless its sockets are encrypted; ``run_notebook`` asks for
    CurveZMQ keys, so the warning (and every other kernel warning) stays away."""
    _template(tmp_path, monkeypatch, "tiny", "print(x + 1)")
    out = study.run_notebook("tiny", tmp_path / "out" / "tiny.ipynb", {"x": 2})
    captured = capfd.readouterr()
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "3\n"  # it did run, with the parameter
    noise = captured.err + captured.out
    assert "without encryption" not in noise
    assert "WARNING" not in noise, noise


def test_a_conic_study_reaches_its_pages_and_table1(tmp_path, monkeypatch):
    folder = save_conic(synthetic_conic(16, size=64, seed=2), tmp_path / "conic")
    monkeypatch.setattr(study, "EXPERIMENTS", tmp_path / "pages")
    monkeypatch.setattr(study, "RUNS_ROOT", tmp_path / "runs")
    monkeypatch.setattr(study, "STUDY_OUT", tmp_path / "study")
    monkeypatch.setattr(study, "DATA_DIR", tmp_path / "data")
    (tmp_path / "runs" / "synthetic").mkdir(parents=True)  # another data set's Table I
    (tmp_path / "runs" / "synthetic" / "table1.csv").write_text("method,status\n")
    args = ["--data", f"conic:{folder}", "--preset", "smoke", "--no-book"]
    assert study.main([*args, "--baselines-budget", "0"]) == 0
    runs = tmp_path / "runs" / "conic"
    metrics = json.loads((runs / "full-seed0" / "metrics.json").read_text())
    assert metrics["data"] == f"conic:{folder} (test)"
    assert metrics["patches"] < 16  # scored on the held-out source images only
    assert (runs / "no-SE-seed0" / "metrics.json").is_file()
    for page in ("conic/train", "conic/ablations", "table1"):
        assert (tmp_path / "pages" / f"{page}.ipynb").is_file(), page
    table1 = nbformat.read(tmp_path / "pages" / "table1.ipynb", as_version=4)
    injected = next(c for c in table1.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert str(runs) in injected.source and "synthetic" in injected.source
    assert "hide-input" in injected.metadata["tags"]  # shown on request, not as noise
    shown = json.dumps([c.get("outputs", []) for c in table1.cells])
    assert "SE-Res U-Net + CA (proposed)" in shown and "conic" in shown
    assert (
        "not trained here: measured on this machine, its training would take about" in shown
    )  # measured, over budget
    toc = (study.REPO_ROOT / "_toc.yml").read_text()
    assert "book/experiments/conic/train" in toc and "book/experiments/conic/ablations" in toc


def test_table1_reads_this_study_and_the_other_folders_table1_wrote_into(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "REPO_ROOT", tmp_path)
    runs = tmp_path / study.RUNS_ROOT
    for name in ("synthetic", "consep-paper", "consep-ablations-recipe", "consep-table1-equal"):
        (runs / name).mkdir(parents=True)
    for name in ("consep-paper", "consep-table1-equal"):
        (runs / name / "table1.csv").write_text("method,status\n")
    roots = study.registry_roots(study.RUNS_ROOT / "synthetic")
    assert roots == [
        str(study.RUNS_ROOT / "synthetic"),  # this study's, with or without a table yet
        str(study.RUNS_ROOT / "consep-paper"),
        str(study.RUNS_ROOT / "consep-table1-equal"),
    ]
