"""Render an experiment page of the book again from its template, with the parameters it was
rendered with.

Each page under ``book/experiments`` is a template of ``notebooks/`` (``train``,
``ablations``, ``table1``: the page's file name) executed by papermill, which records the
page's parameters in its injected-parameters cell. :func:`render_again` reads them back and
executes the template once more into the page (:func:`~nucstudy.study.main_job.run_notebook`),
so a changed template or a grown registry reaches the page without retyping its parameters.
A page's finished runs are reused; what its registry lacks is trained where the page's
parameters let it train (``train_missing``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

#: The templates an experiment page can be rendered from (``notebooks/<name>.ipynb``).
TEMPLATES = ("train", "ablations", "table1")
#: papermill's tag on the cell that holds a rendered page's parameters.
INJECTED_TAG = "injected-parameters"


def rendered_parameters(page: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The template and parameters an experiment page was rendered with.

    Returns:
        The template's name (the page's file name: ``train``, ``ablations`` or ``table1``)
        and the parameters, as papermill injected them (Python literals).

    Raises:
        ValueError: the page is missing, has no template of that name, or has no single
            injected-parameters cell of literal assignments.
    """
    import nbformat

    page = Path(page)
    if not page.is_file():
        raise ValueError(f"{page}: no such page")
    if page.stem not in TEMPLATES:
        raise ValueError(
            f"{page}: not an experiment page (its name must be one of "
            f"{', '.join(f'{name}.ipynb' for name in TEMPLATES)})"
        )
    cells = [
        cell
        for cell in nbformat.read(page, as_version=4).cells
        if INJECTED_TAG in cell.metadata.get("tags", [])
    ]
    if len(cells) != 1:
        raise ValueError(f"{page}: {len(cells)} injected-parameters cells, expected one")
    parameters: dict[str, Any] = {}
    for statement in ast.parse(cells[0].source).body:
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            raise ValueError(f"{page}: its parameters cell holds more than assignments")
        try:
            parameters[statement.targets[0].id] = ast.literal_eval(statement.value)
        except ValueError:
            raise ValueError(
                f"{page}: parameter {statement.targets[0].id} is not a literal"
            ) from None
    return page.stem, parameters


def render_again(page: str | os.PathLike) -> Path:
    """Execute ``page``'s template again into ``page`` with its own parameters (atomic: on
    failure the page is left as it was and the partly executed copy beside it).

    Returns:
        The page's path.
    """
    from nucstudy.study.main_job import run_notebook

    template, parameters = rendered_parameters(page)
    return run_notebook(template, Path(page).resolve(), parameters)
