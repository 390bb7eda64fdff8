"""The main job's notebooks run quietly: no kernel warnings on stderr between its step lines."""

from __future__ import annotations

import nbformat
import pytest

from nucstudy.study import main_job as study


@pytest.mark.slow
def test_run_notebook_starts_its_kernel_without_the_tcp_encryption_warning(
    tmp_path, monkeypatch, capfd
):
    """ipykernel warns "Kernel is running over TCP without encryption" on the stderr it
    inherits from this process unless its sockets are encrypted; ``run_notebook`` asks for
    CurveZMQ keys, so the warning (and every other kernel warning) stays away."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    book = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print(x + 1)"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(book, notebooks / "tiny.ipynb")
    monkeypatch.setattr(study, "NOTEBOOKS", notebooks)
    out = study.run_notebook("tiny", tmp_path / "out" / "tiny.ipynb", {"x": 2})
    captured = capfd.readouterr()
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "3\n"  # it did run, with the parameter
    noise = captured.err + captured.out
    assert "without encryption" not in noise
    assert "WARNING" not in noise, noise
