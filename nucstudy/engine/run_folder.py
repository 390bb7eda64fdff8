"""A run folder's files, and the record of the environment a run trained in.

A run folder is self-describing::

    runs/<name>/
      config.json      the experiment's config
      (:class:`nucstudy.study.experiment.ExperimentConfig`)
      env.json         package versions, device, git commit, and every segment of the training
                       (start, last checkpoint, end, steps, threads, what ran beside)
      history.csv      one row per epoch: loss terms, lr, steps, patches seen, metrics, seconds
      metrics.json     evaluation: overall and per class (:mod:`nucstudy.study.evaluate`)
      per_image.csv    per-image, per-class statistics behind metrics.json (for bootstraps)
      trained_on.json  fingerprints of the patches it trained and validated on, so that
                       evaluation refuses to score it on them
      checkpoints/     best.pt and last.pt (git-ignored)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

from nucstudy.common.io import atomic_write_text

CONFIG_FILE, ENV_FILE, HISTORY_FILE, METRICS_FILE, PER_IMAGE_FILE, TRAINED_ON_FILE = (
    "config.json",
    "env.json",
    "history.csv",
    "metrics.json",
    "per_image.csv",
    "trained_on.json",
)

#: The environment variable that says what ran beside a run (recorded in env.json).
BESIDE_VARIABLE = "NUCSTUDY_BESIDE"
#: The key a training segment's record carries once loader workers draw every epoch's
#: augmentation (see :func:`augmentation_frozen`).
WORKERS_REDRAW = "workers_redraw_each_epoch"


def environment_info() -> dict[str, Any]:
    """Package versions, Python, platform, device name and git commit of this process."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_model": cpu_model(),
        "cpu_vector_extensions": list(cpu_vector_extensions()),
        "git_commit": git_commit(),
    }
    for package in ("torchvision", "albumentations", "scipy", "skimage", "pandas", "cv2"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


#: The vector instruction sets (``/proc/cpuinfo`` flags) whose kernels decide how a run's
#: arithmetic rounds: two CPUs with one model name can differ in them, and so in their results.
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo_field(key: str) -> str | None:
    """The first non-empty value of ``key`` in Linux's ``/proc/cpuinfo`` (None without it)."""
    try:
        with open("/proc/cpuinfo") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == key and value.strip():
                    return value.strip()
    except OSError:
        pass
    return None


@cache
def cpu_model() -> str | None:
    """The CPU's model name (``"AMD EPYC"``; Linux's ``/proc/cpuinfo``, else the platform's
    processor; None if neither says). Kernels round differently on other CPUs, so a run
    reproduces to the digit only on the kind it was trained on: this model name with the same
    :func:`cpu_vector_extensions`."""
    return _cpuinfo_field("model name") or platform.processor() or None


@cache
def cpu_vector_extensions() -> tuple[str, ...]:
    """Which of :data:`VECTOR_EXTENSIONS` this CPU has, in that order (empty where
    ``/proc/cpuinfo`` is absent). A hypervisor may name an AVX2-only and an AVX512-BF16 CPU
    both "AMD EPYC"; these flags tell them apart."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return tuple(extension for extension in VECTOR_EXTENSIONS if extension in flags)


#: How :func:`cpu_label` names the CPU of a run that did not record it.
CPU_NOT_RECORDED = "not recorded"


def cpu_label(env: dict[str, Any]) -> str:
    """A run's CPU as it bears on its numbers, from its ``env.json`` (or a record with the
    same keys): the model name, then the precision (:func:`trained_in_bf16`: "bf16 and
    float32" for a run resumed in the other one) and the vector extensions where recorded
    (``"AMD EPYC (float32; avx2)"``); :data:`CPU_NOT_RECORDED` for a run from before
    :func:`cpu_model`."""
    model = env.get("cpu_model")
    if not model:
        return CPU_NOT_RECORDED
    bf16 = trained_in_bf16(env)
    precision = {True: "bf16", False: "float32", "mixed": "bf16 and float32", None: None}[bf16]
    details = [precision] if precision else []
    if env.get("cpu_vector_extensions"):
        details.append(" ".join(env["cpu_vector_extensions"]))
    return f"{model} ({'; '.join(details)})" if details else model


@cache
def git_commit() -> str | None:
    """HEAD when this process first asks: a long process keeps the commit it started on."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def write_env(run_dir: str | os.PathLike, **extra: Any) -> Path:
    """Write ``env.json`` (environment_info plus ``extra``) into ``run_dir``, atomically."""
    info = {**environment_info(), **extra}
    return atomic_write_text(Path(run_dir) / ENV_FILE, json.dumps(info, indent=2) + "\n")


def now() -> str:
    """The local time as an ISO 8601 string with seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_segment(step: int, bf16: bool) -> dict[str, Any]:
    """The env.json record of a segment of training (one ``Trainer.fit``) that starts now at
    optimiser step ``step``: when it started, its last checkpoint and end (None until then),
    the steps it runs from and to, torch's threads, the git commit, the CPU model and whether
    it trains in ``bf16`` (a run resumed on another machine may differ in both), and what
    else ran on the machine (the environment variable :data:`BESIDE_VARIABLE`)."""
    import torch

    return {
        "started": now(),
        "last_checkpoint": None,
        "finished": None,
        "from_step": step,
        "to_step": step,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "cpu_model": cpu_model(),
        "bf16": bf16,
        # what else ran on the machine, as the person starting the run says
        "beside": os.environ.get(BESIDE_VARIABLE),
        WORKERS_REDRAW: True,
    }


def augmentation_frozen(env: dict[str, Any], workers: int, augment: bool) -> bool:
    """Whether a run trained, in some segment, on its first epoch's augmentation all segment
    long: loader workers (``workers`` > 0) kept the copy of the dataset they started with
    until the loader started them anew each epoch; a segment trained since records
    :data:`WORKERS_REDRAW` (``env`` is the run's env.json)."""
    if not (augment and workers > 0):
        return False
    segments = env.get("segments") or [env]
    return not all(segment.get(WORKERS_REDRAW) for segment in segments)


def earlier_segments(env_path: Path) -> list[dict[str, Any]]:
    """The segments a run folder's env.json records, for a run about to resume: its
    ``segments``, or for an env.json older than them one segment from its top level. The top
    level describes the machine of the segment that wrote it last, so that segment, if it
    predates their record, gets its CPU model and precision from there."""
    if not env_path.is_file():
        return []
    env = json.loads(env_path.read_text())
    keys = ("started", "finished", "git_commit", "threads")
    segments = list(env.get("segments") or [{key: env.get(key) for key in keys}])
    last = segments[-1] = dict(segments[-1])
    last.setdefault("cpu_model", env.get("cpu_model"))
    last.setdefault("bf16", env.get("fast_path", {}).get("bf16"))
    return segments


def trained_in_bf16(env: dict[str, Any]) -> bool | str | None:
    """Whether a run (its env.json) trained with bf16 autocast: True or False, ``"mixed"``
    where its segments differ (resumed on a CPU with or without native bf16), None where
    nothing says."""
    recorded = {s["bf16"] for s in env.get("segments") or [] if s.get("bf16") is not None}
    if len(recorded) > 1:
        return "mixed"
    return recorded.pop() if recorded else env.get("fast_path", {}).get("bf16")
