"""Shared fixtures: small synthetic data sets and the locations of the real data (CoNSeP
patches, CPM-15 test tiles)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nucstudy.data import synthetic_conic
from nucstudy.study.presets import preset

REPO = Path(__file__).resolve().parents[1]
CONSEP_DIR = REPO.parent / "shared" / "data" / "consep256"
CPM15_DIR = REPO.parent / "shared" / "data" / "cpm15"
#: A built book's ``html`` folder to check instead of ``_build/html`` or a fresh build.
BOOK_HTML_ENV = "NUCSTUDY_BOOK_HTML"


@pytest.fixture(scope="session")
def synthetic_small():
    """Eight 256 x 256 synthetic patches (two source images), CoNIC scheme."""
    return synthetic_conic(8, size=256, seed=3)


@pytest.fixture(scope="session")
def consep_dir() -> Path:
    """The CoNSeP-256 folder beside the repository; tests using it are skipped without it."""
    if not (CONSEP_DIR / "train" / "labels.npz").is_file():
        pytest.skip(f"CoNSeP-256 not found at {CONSEP_DIR}")
    return CONSEP_DIR


@pytest.fixture(scope="session")
def cpm15_dir() -> Path:
    """The CPM-15 test tiles beside the repository; tests using them are skipped without."""
    if not (CPM15_DIR / "labels.npz").is_file():
        pytest.skip(f"CPM-15 not found at {CPM15_DIR}")
    return CPM15_DIR


@pytest.fixture(scope="session")
def train_smoke(tmp_path_factory):
    """A function that trains a smoke run on the CPU in a folder of its own; returns its config."""
    from nucstudy.engine.trainer import Trainer

    def train(**changes):
        root = tmp_path_factory.mktemp("runs")
        config = preset("smoke", device="cpu", out_root=str(root), **changes)
        Trainer(config, progress=False).fit()
        return config

    return train


@pytest.fixture
def straight_and_resumed(tmp_path, monkeypatch):
    """A function that trains ``config`` twice on the CPU: straight through, and stopped
    after its first epoch then resumed from ``last.pt``; returns the two trainers."""
    from nucstudy.engine.trainer import Trainer

    def train(config):
        straight = Trainer(config, run_dir=tmp_path / "straight", progress=False)
        straight.fit()
        end_epoch = Trainer._end_epoch

        def stop_after_first(self, row):
            end_epoch(self, row)
            if self.epoch == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(Trainer, "_end_epoch", stop_after_first)
        with pytest.raises(KeyboardInterrupt):
            Trainer(config, run_dir=tmp_path / "resumed", progress=False).fit()
        monkeypatch.setattr(Trainer, "_end_epoch", end_epoch)
        resumed = Trainer(config, run_dir=tmp_path / "resumed", resume=True, progress=False)
        assert resumed.epoch == 1
        resumed.fit()
        return straight, resumed

    return train


def _book_is_up_to_date(html: Path) -> bool:
    """Whether ``html`` holds every page of ``_toc.yml``, each newer than its source, the
    book's configuration and every file under ``results/`` (what its pages read)."""
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            names.append(chapter["file"])
            names.extend(section["file"] for section in chapter.get("sections", []))
    inputs = [REPO / "_config.yml", REPO / "_toc.yml"]
    inputs += [path for path in (REPO / "results").rglob("*") if path.is_file()]
    newest_input = max(path.stat().st_mtime for path in inputs)
    for name in names:
        page = html / f"{name}.html"
        sources = [REPO / f"{name}{suffix}" for suffix in (".md", ".ipynb")]
        source = next((path for path in sources if path.is_file()), None)
        if not page.is_file() or source is None:
            return False
        if page.stat().st_mtime < max(newest_input, source.stat().st_mtime):
            return False
    return True


@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    """The built book's ``html`` folder: ``$NUCSTUDY_BOOK_HTML`` if set, ``_build/html`` when
    it is up to date (:func:`_book_is_up_to_date`), else the book built from this checkout
    into a temporary folder (several minutes; warnings are not errors here, test_book.py
    checks those)."""
    if os.environ.get(BOOK_HTML_ENV):
        html = Path(os.environ[BOOK_HTML_ENV]).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"${BOOK_HTML_ENV}={html}: no index.html there")
        return html
    built = REPO / "_build" / "html"
    if built.is_dir() and _book_is_up_to_date(built):
        return built
    out = tmp_path_factory.mktemp("book_html")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-book")), "build", str(REPO)]
        + ["--path-output", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory) -> Path:
    """A fresh clone of this checkout as committing its working tree would leave it.

    ``git clone --local`` of HEAD into ``<tmp>/repo``, then the working tree's changes laid
    over it (modified and new files that git does not ignore; deleted files removed), so that
    ignored files (checkpoints, ``runs/``, ``data/``, ``_build/``) are absent as on a new
    machine. ``<tmp>/shared`` links to the real ``../shared`` so that the README's
    ``../shared/data/...`` resolves, and ``<tmp>/repo/.venv`` to this interpreter's
    environment. Nothing in this checkout or its git state changes.
    """
    import shutil

    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: no clone to make")
    root = tmp_path_factory.mktemp("clone")
    clone = root / "repo"

    def git(*args: str) -> list[str]:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return done.stdout.splitlines()

    subprocess.run(
        ["git", "clone", "--quiet", "--local", str(REPO), str(clone)],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in git("ls-files", "--modified", "--others", "--exclude-standard"):
        source, target = REPO / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.is_file():  # deleted in the working tree
            target.unlink()
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared, target_is_directory=True)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return clone
