"""An experiment page rendered again from its template with the parameters it was rendered
with: the parameters read back, bad pages refused before anything runs."""

import nbformat
import pytest

from nucstudy.cli.main import main
from nucstudy.study import main_job
from nucstudy.study.render import render_again, rendered_parameters


def _page(
    folder, name="table1.ipynb", injected='runs_roots = ["results/runs/x"]\nseeds = [0, 1]\n'
):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Table I"),
        nbformat.v4.new_code_cell("runs_roots = []", metadata={"tags": ["parameters"]}),
    ]
    if injected is not None:
        cell = nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
        notebook.cells.append(cell)
    path = folder / name
    nbformat.write(notebook, path)
    return path


def test_a_page_gives_back_its_template_and_parameters(tmp_path):
    template, parameters = rendered_parameters(_page(tmp_path))
    assert template == "table1"
    assert parameters == {"runs_roots": ["results/runs/x"], "seeds": [0, 1]}


@pytest.mark.parametrize(
    ("name", "injected", "message"),
    [
        ("notes.ipynb", "a = 1\n", "not an experiment page"),
        ("train.ipynb", None, "0 injected-parameters cells"),
        ("train.ipynb", "a = len([1])\n", "parameter a is not a literal"),
        ("train.ipynb", "print(1)\n", "more than assignments"),
    ],
)
def test_a_page_that_cannot_be_rendered_again_is_named(tmp_path, name, injected, message):
    with pytest.raises(ValueError, match=message):
        rendered_parameters(_page(tmp_path, name, injected))


def test_render_again_executes_the_pages_template_into_the_page(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(main_job, "run_notebook", lambda *args: calls.append(args) or args[1])
    page = _page(tmp_path, "ablations.ipynb", "seeds = [0, 1, 2]\n")
    assert render_again(page) == page.resolve()
    assert calls == [("ablations", page.resolve(), {"seeds": [0, 1, 2]})]


def test_the_command_checks_every_page_before_it_renders_one(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(main_job, "run_notebook", lambda *args: calls.append(args) or args[1])
    good = _page(tmp_path)
    assert main(["render", str(good), str(tmp_path / "missing" / "train.ipynb")]) == 2
    assert calls == []
    assert "no such page" in capsys.readouterr().err
    assert main(["render", str(good)]) == 0
    assert [call[0] for call in calls] == ["table1"]
