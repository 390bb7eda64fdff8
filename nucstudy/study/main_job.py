"""The main job: the whole study from a fresh clone, one progress line per step.

1. data: generate the synthetic set, read CoNSeP-256 when present, write a data summary and
   the figure of the sources;
2. train: ``notebooks/train.ipynb`` under papermill, the full model;
3. ablations: ``notebooks/ablations.ipynb`` (no SE, no CA, no class weights; the full
   model's run is reused);
4. Table I: ``notebooks/table1.ipynb`` trains the HoVer-Net and Mask R-CNN baselines
   under the full model's protocol where they fit the time budget (always on CUDA; on a CPU
   only if their measured cost fits :data:`CPU_BASELINES_BUDGET`, else their rows say why),
   then reads every run in the results registry;
5. the book: ``jupyter-book build`` into ``_build/html``.

Runs go to ``results/runs/<data>/`` (configs, histories, metrics; checkpoints are
git-ignored), executed notebooks to ``book/experiments/``. On a CPU the ``cpu-demo`` preset
is used, on CUDA the paper's. Run ``python -m nucstudy.study --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from nucstudy.common.io import atomic_write_text
from nucstudy.data import ConicData, import_consep256, parse_source, save_conic, synthetic_conic
from nucstudy.study.paths import REPO_ROOT, consep_dir_or_none
from nucstudy.study.plots import plot_sources, save_figure
from nucstudy.study.table1 import TABLE_FILE

NOTEBOOKS = REPO_ROOT / "notebooks"
EXPERIMENTS = REPO_ROOT / "book" / "experiments"
#: The results registry: one folder of run folders per data source (relative to REPO_ROOT).
RUNS_ROOT = Path("results") / "runs"
#: Where the data step writes its summary and figure, and the generated synthetic set.
STUDY_OUT = REPO_ROOT / "results" / "study"
DATA_DIR = REPO_ROOT / "data"
#: Minutes the Table I baselines may train for in the main job on a CPU: what is left of its
#: 25 minutes on two cores after the other steps (about 15).
CPU_BASELINES_BUDGET = 6.0


def summarise(name: str, data: ConicData) -> pd.DataFrame:
    """One row per class: nuclei counted on the central region, and their share.

    Returns:
        DataFrame with columns source, class, nuclei, share (fraction of the source's nuclei),
        patches, mpp.
    """
    table = data.class_summary().reset_index()
    table.insert(0, "source", name)
    return table.assign(patches=len(data), mpp=data.mpp)


class Progress:
    """Prints one line per step: ``[nucstudy 12:00:00] step 2/6 train: ...``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def step(self, name: str, message: str) -> float:
        self.done += 1
        print(
            f"[nucstudy {time.strftime('%H:%M:%S')}] step {self.done}/{self.total} {name}: "
            f"{message}",
            flush=True,
        )
        return time.perf_counter()

    @staticmethod
    def finished(start: float, what: str = "done") -> None:
        minutes = (time.perf_counter() - start) / 60
        print(f"[nucstudy {time.strftime('%H:%M:%S')}]   {what} in {minutes:.1f} min", flush=True)


def data_step(
    out: Path, data_dir: Path, n_synthetic: int, consep: Path | None, seed: int
) -> pd.DataFrame:
    """Write the data summary and figure under ``out``, the synthetic set under ``data_dir``."""
    synthetic = synthetic_conic(n_synthetic, seed=seed)
    save_conic(synthetic, data_dir / "synthetic")
    panels = [("synthetic\n(CoNIC classes)", synthetic)]
    summaries = [summarise("synthetic", synthetic)]
    if consep is not None:
        for split in ("train", "test"):
            data = import_consep256(consep, split)
            summaries.append(summarise(f"consep256-{split}", data))
        panels.append(("CoNSeP-256 test, 40x\n(CoNSeP classes)", data))
        halved = import_consep256(consep, "test", resample=True)
        panels.append(("CoNSeP-256 test,\nhalved to 20x", halved))
    summary = pd.concat(summaries, ignore_index=True)
    atomic_write_text(out / "data_summary.csv", summary.to_csv(index=False))
    save_figure(plot_sources(panels, seed=seed), out / "figures" / "data_sources.png")
    return summary


def run_notebook(template: str, output: Path, parameters: dict[str, Any]) -> Path:
    """Execute ``notebooks/<template>.ipynb`` with ``parameters`` into ``output``, atomically.

    The notebook runs with the repository root as working directory; on failure the partly
    executed copy is left beside ``output`` as ``<name>.failed.ipynb`` and the error raised.

    The kernel talks to papermill over CurveZMQ-encrypted sockets when pyzmq supports it (the
    kernel manager provisions the keys, ipykernel's kernelspec declares support): without
    them ipykernel (7.4, the locked one) warns "Kernel is running over TCP without encryption"
    on stderr at every start: lines of noise between the main job's one-line steps.
    """
    import papermill
    import zmq
    from traitlets.config import Config

    encryption = "auto" if zmq.has("curve") else "disabled"
    kernel_config = Config({"KernelManager": {"transport_encryption": encryption}})
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=".ipynb")
    os.close(handle)
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{template}.ipynb"),
            tmp,
            parameters=parameters,
            cwd=str(REPO_ROOT),
            kernel_name="python3",
            progress_bar=False,
            config=kernel_config,
        )
    except Exception:
        os.replace(tmp, output.with_name(f"{output.stem}.failed.ipynb"))
        raise
    _freeze(Path(tmp), toc_title(output))
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the page from other readers of the book
    os.replace(tmp, output)
    return output


def toc_title(page: Path, toc: Path = REPO_ROOT / "_toc.yml") -> str | None:
    """The title the book's table of contents gives ``page`` (None: none given, or the page
    is not in the book)."""
    import yaml

    try:
        relative = page.resolve().relative_to(REPO_ROOT).with_suffix("").as_posix()
    except ValueError:  # outside the repository: not a page of the book
        return None
    titles: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node and "title" in node:
                titles[str(node["file"])] = str(node["title"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(toc.read_text()))
    return titles.get(relative)


def _freeze(path: Path, title: str | None = None) -> None:
    """Mark an executed notebook so that the book shows it as is and never runs it again,
    its parameters (papermill's injected cell) folded away, headed by ``title`` (the page's
    title in the table of contents) where one is given: the templates are rendered into
    several pages, and each page's heading names its own."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["mystnb"] = {"execution_mode": "off"}
    for cell in notebook.cells:  # papermill's copy of the parameters: shown on request
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    if title is not None:
        retitle(notebook, title)
    nbformat.write(notebook, path)


def retitle(notebook: Any, title: str) -> None:
    """Replace the first level-1 heading of ``notebook``'s first markdown cell by ``title``."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.split("\n")
            for i, line in enumerate(lines):
                if line.startswith("# "):
                    lines[i] = f"# {title}"
                    cell.source = "\n".join(lines)
                    return
            return


def build_book(strict: bool = True) -> Path:
    """Build the Jupyter Book into ``_build/html`` (warnings are errors when ``strict``)."""
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(REPO_ROOT)]
    if strict:
        command.append("--warningiserror")
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"the book did not build:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return REPO_ROOT / "_build" / "html" / "index.html"


def registry_roots(current: Path) -> list[str]:
    """The registry folders Table I reads: this study's first, then every other one there
    that ``run_table1`` wrote its table into (not the folders of other experiments, such as
    the recipe's arms or the ablations at the recipe, whose rows would be pending baselines)."""
    base = REPO_ROOT / RUNS_ROOT
    others = (
        sorted(p for p in base.iterdir() if (p / TABLE_FILE).is_file()) if base.is_dir() else []
    )
    return [str(current)] + [
        str(RUNS_ROOT / p.name) for p in others if p.name != Path(current).name
    ]


def data_tag(spec: str) -> str:
    """The registry folder name of a data source: ``synthetic``, ``consep`` or ``conic``."""
    return parse_source(spec)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nucstudy.study", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data",
        default="synthetic",
        help="synthetic (default), consep:<folder> or conic:<folder>",
    )
    parser.add_argument(
        "--preset",
        default="auto",
        help="auto (paper on CUDA, cpu-demo on CPU), paper, cpu-demo, smoke",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the ablations")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument(
        "--baselines-budget",
        type=float,
        default=None,
        help="minutes the Table I baselines may take (default: no limit on CUDA, "
        f"{CPU_BASELINES_BUDGET:g} on a CPU); a baseline that does not fit is not trained",
    )
    parser.add_argument("--no-book", action="store_true", help="skip building the book")
    parser.add_argument(
        "--consep",
        type=Path,
        default=None,
        help="CoNSeP-256 folder for the data figure (default: ../shared/data/consep256 if there)",
    )
    parser.add_argument(
        "--synthetic", type=int, default=64, help="synthetic patches for the data step"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        tag = data_tag(args.data)
    except ValueError as error:
        parser.error(f"--data: {error}")
    consep = consep_dir_or_none(args.consep)
    if args.consep is not None and consep is None:
        parser.error(f"--consep: {args.consep} is not a CoNSeP-256 folder (no train/labels.npz)")
    data_spec = args.data
    if tag != "synthetic":
        folder = parse_source(args.data)[1].resolve()
        if not folder.exists():
            parser.error(f"--data: folder {folder} not found")
        data_spec = f"{tag}:{os.path.relpath(folder, REPO_ROOT)}"  # notebooks run in REPO_ROOT

    import torch

    cuda = torch.cuda.is_available()
    preset = ("paper" if cuda else "cpu-demo") if args.preset == "auto" else args.preset
    budget = args.baselines_budget
    if budget is None and not cuda:
        budget = CPU_BASELINES_BUDGET
    runs = RUNS_ROOT / tag
    pages = EXPERIMENTS / tag
    common = {
        "preset": preset,
        "data": args.data,
        "resample": tag == "consep",
        "out_root": str(runs),
    }
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    common.update(epochs)
    progress = Progress(4 + (not args.no_book))

    start = progress.step("data", "synthetic set, CoNSeP summary, figure of the sources")
    data_step(STUDY_OUT, DATA_DIR, args.synthetic, consep, args.seed)
    progress.finished(start)

    start = progress.step("train", f"the full model on {data_spec}, preset {preset} (train.ipynb)")
    run_notebook(
        "train",
        pages / "train.ipynb",
        {**common, "seed": args.seeds[0], "run_name": f"full-seed{args.seeds[0]}"},
    )
    progress.finished(start)

    start = progress.step(
        "ablations", f"no SE, no CA, no class weights; seeds {args.seeds} (ablations.ipynb)"
    )
    run_notebook(
        "ablations",
        pages / "ablations.ipynb",
        {**common, "seeds": args.seeds, "reuse_full": str(runs / f"full-seed{args.seeds[0]}")},
    )
    progress.finished(start)

    start = progress.step(
        "table1",
        "HoVer-Net and Mask R-CNN where they fit "
        f"({'no limit' if budget is None else f'{budget:g} min'}), Table I (table1.ipynb)",
    )
    run_notebook(
        "table1",
        EXPERIMENTS / "table1.ipynb",
        {
            "runs_roots": registry_roots(runs),
            "proposed_run": f"full-seed{args.seeds[0]}",
            "hovernet_run": f"hovernet-seed{args.seeds[0]}",
            "maskrcnn_run": f"maskrcnn-seed{args.seeds[0]}",
            "train_data": args.data,
            "train_preset": preset,
            "train_changes": {"seed": args.seeds[0], **epochs},
            "budget_minutes": budget,
        },
    )
    progress.finished(start)

    if not args.no_book:
        start = progress.step("book", "building the Jupyter Book")
        index = build_book()
        progress.finished(start, f"built {index.relative_to(REPO_ROOT)}")
    print(
        f"[nucstudy] study done: runs in {runs}, notebooks in {os.path.relpath(pages, REPO_ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
