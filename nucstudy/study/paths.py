"""Where things are: the repository, its results, and the real data beside it."""

from __future__ import annotations

from pathlib import Path

#: The repository root (the folder holding ``_config.yml``) of this checkout.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Committed results of reference runs.
RESULTS_DIR = REPO_ROOT / "results"
#: The study's small trained model, committed for ``nucstudy segment`` and the teaching
#: notebooks (trained on CoNSeP's training split; see ``results/models/README.md``).
STUDY_MODEL = RESULTS_DIR / "models" / "consep-cpu-demo.pt"
#: The same network trained with strong stain augmentation and a wider rescale: worse on
#: CoNSeP, far better on tissue unlike it (the book's out-of-domain page).
ROBUST_MODEL = RESULTS_DIR / "models" / "consep-cpu-demo-robust.pt"
#: The committed run folders the two files were exported from (config, history, metrics on
#: CoNSeP's whole test split; the checkpoints themselves are not committed).
STUDY_MODEL_RUN = RESULTS_DIR / "runs" / "consep-recipe-long" / "recipe-cpu-demo-20000-seed0"
ROBUST_MODEL_RUN = RESULTS_DIR / "runs" / "consep" / "full-stainstrong-scale-seed0"
#: Where the study's CoNSeP-256 patches are found when nothing else is said.
DEFAULT_CONSEP_DIR = REPO_ROOT.parent / "shared" / "data" / "consep256"


def consep_dir_or_none(folder: str | Path | None = None) -> Path | None:
    """``folder`` (default :data:`DEFAULT_CONSEP_DIR`) if it holds CoNSeP-256, else None."""
    path = Path(folder) if folder else DEFAULT_CONSEP_DIR
    return path if (path / "train" / "labels.npz").is_file() else None
