"""Every command example of README.md works on a fresh clone.

The rule, so that a README example can never again point at a file that is not committed:

- **What is read**: README.md's fenced ``bash`` and ``python`` blocks, in order. In a bash
  block a line ending in ``\\`` continues on the next; ``#`` starts a comment.
- **What runs**: a bash command whose program is ``nucstudy``, or ``python -m nucstudy...``
  (any ``python``: ``python``, ``python3``, ``.venv/bin/python``; it runs with this test's
  interpreter), and every python block, as one script each.
- **What is skipped**: every other program (``make``, ``pip``, ``uv``, ``conda``, ``python -m
  venv``, ``python -m pytest``, ``torchrun``: set-up, or the test suite itself), and any
  command whose comment starts with ``long:`` (the README says why there: the main job, the
  paper's protocol on a CPU). Their pieces are tested at smoke size elsewhere.
- **Where**: one fresh clone for all commands (the ``fresh_clone`` fixture: this checkout's
  committed files as a commit of its working tree would leave them, ignored files such as
  checkpoints and ``runs/`` left out), in ``<tmp>/repo`` beside ``<tmp>/shared``, a link to
  the real ``../shared`` (CoNSeP-256, CPM-15), so that ``../shared/data/...`` resolves as
  in the README. Commands run in README order: a later one may use what an earlier one made
  (``runs/x``).
- **Sizes**: a ``nucstudy train`` gets ``--preset smoke --steps 2`` appended (the last value
  of an option wins: the run is the one the README makes, with the smoke model, two
  optimiser steps long, or two past its ``warmup_steps`` when it sets them); a
  ``nucstudy table1`` whose preset is not ``smoke`` gets ``--budget-minutes 0`` (it scores
  the committed runs it can reuse, and measures and skips any other instead of training it
  for hours).
- **The user's own files** the examples name (:data:`PLACEHOLDERS`: ``image.png``,
  ``my_tiles/``, ``slide.svs``) are made before the commands run: synthetic H&E images and
  a small Aperio-style pyramidal slide.
- **Passing**: every command exits 0; a command whose comment starts with ``refuses:``
  must instead exit 2 with one line on stderr (a clear refusal, no traceback).

``test_every_readme_command_parses`` checks the options of every command against the
parser in a second; ``test_every_readme_command_works_on_a_fresh_clone`` (slow, several
minutes) runs them and reports every failing command in one message.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: Seconds one command may take (smoke sizes take well under a minute on two cores).
COMMAND_TIMEOUT = 900
#: The user's own inputs that README examples name; the test makes them in the clone.
PLACEHOLDERS = ("image.png", "my_tiles", "slide.svs")


@dataclass(frozen=True)
class Example:
    """One example of README.md: a shell command (``argv``) or a python block (``code``)."""

    line: int  # README line where it starts
    text: str  # as written (a command's continuation lines joined)
    argv: tuple[str, ...] = ()
    code: str = ""
    comment: str = ""

    @property
    def long(self) -> bool:
        """Marked long in the README: skipped."""
        return self.comment.startswith("long:")

    @property
    def refuses(self) -> bool:
        """Documented as refused: must exit 2 with one line."""
        return self.comment.startswith("refuses:")


def readme_examples(text: str) -> list[Example]:
    """The bash commands and python blocks of a README, in order (see the module docstring).

    Returns:
        One :class:`Example` per command (continuation lines joined) or python block.
    """
    examples: list[Example] = []
    lines = text.splitlines()
    fence: str | None = None
    start = 0
    block: list[str] = []
    for number, line in enumerate(lines, 1):
        if fence is None:
            opened = re.match(r"^```(\w+)\s*$", line)
            if opened:
                fence, start, block = opened.group(1), number + 1, []
            continue
        if line.startswith("```"):
            if fence == "python":
                examples.append(Example(start, "\n".join(block), code="\n".join(block) + "\n"))
            elif fence in ("bash", "sh", "shell"):
                examples.extend(_commands(block, start))
            fence = None
            continue
        block.append(line)
    return examples


def _commands(block: list[str], start: int) -> list[Example]:
    commands, pending, first = [], "", start
    for offset, line in enumerate(block):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if not whole or whole.startswith("#"):
            continue
        code, comment = split_comment(whole)
        argv = shlex.split(code)
        commands.append(Example(first, whole, argv=tuple(argv), comment=comment))
    return commands


def split_comment(line: str) -> tuple[str, str]:
    """``line`` cut at its shell comment: a ``#`` outside quotes that starts a word.

    Returns:
        (the command, the comment's text without ``#``; "" when there is none).
    """
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line, ""


def is_runnable(example: Example) -> bool:
    """Whether the rule runs ``example`` (a python block, or a nucstudy command not long)."""
    if example.code:
        return True
    if example.long or not example.argv:
        return False
    program = Path(example.argv[0]).name
    if program == "nucstudy":
        return True
    return (
        re.fullmatch(r"python(3(\.\d+)?)?", program) is not None
        and len(example.argv) > 2
        and example.argv[1] == "-m"
        and example.argv[2].split(".")[0] == "nucstudy"
    )


def smoke_sized(argv: tuple[str, ...]) -> list[str]:
    """``argv`` with the smoke-size settings the rule appends (see the module docstring)."""
    words = list(argv)
    if words[:2] == ["nucstudy", "train"]:
        warmup = [w.partition("=")[2] for w in words if w.startswith("warmup_steps=")]
        steps = int(warmup[-1]) + 2 if warmup else 2
        return [*words, "--preset", "smoke", "--steps", str(steps)]
    if words[:2] == ["nucstudy", "table1"]:
        presets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--preset"]
        if (presets[-1] if presets else "paper") != "smoke":
            return [*words, "--budget-minutes", "0"]
    return words


def runnable_examples() -> list[Example]:
    """The examples of this checkout's README.md that the rule runs."""
    return [e for e in readme_examples(README.read_text()) if is_runnable(e)]


# --- fast: the parser and the README's options ---------------------------------------------


def test_the_rule_reads_commands_comments_and_continuations() -> None:
    text = """
```bash
make study   # not ours
nucstudy train --preset cpu-demo --set 'a={"b": 1}' \\
    --steps 5000 --out runs/r   # a comment
.venv/bin/python -m nucstudy.study   # long: the main job
python -m pytest
```

```python
print(1)
```
"""
    examples = readme_examples(text)
    assert [e.line for e in examples] == [3, 4, 6, 7, 11]
    train = examples[1]
    assert train.argv == (
        "nucstudy",
        "train",
        "--preset",
        "cpu-demo",
        "--set",
        'a={"b": 1}',
        "--steps",
        "5000",
        "--out",
        "runs/r",
    )
    assert train.comment == "a comment"
    assert [is_runnable(e) for e in examples] == [False, True, False, False, True]
    assert smoke_sized(train.argv)[-4:] == ["--preset", "smoke", "--steps", "2"]
    warm = smoke_sized(("nucstudy", "train", "--set", "warmup_steps=100"))
    assert warm[-2:] == ["--steps", "102"]
    table1 = ("nucstudy", "table1", "--preset", "paper")
    assert smoke_sized(table1)[-2:] == ["--budget-minutes", "0"]
    assert smoke_sized(("nucstudy", "table1", "--preset", "smoke")) == list(
        ("nucstudy", "table1", "--preset", "smoke")
    )


def test_every_readme_command_parses() -> None:
    """Each runnable ``nucstudy`` command's options are ones its parser knows."""
    from nucstudy.cli import build_parser

    parser = build_parser()
    commands = [e for e in runnable_examples() if e.argv and e.argv[0] == "nucstudy"]
    assert len(commands) >= 15
    bad = []
    for example in commands:
        try:
            parser.parse_args(list(example.argv[1:]))
        except SystemExit:
            bad.append(f"README.md:{example.line}: {example.text}")
    assert not bad, "\n".join(bad)


# --- slow: every command on a fresh clone --------------------------------------------------


def _he_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    from nucstudy.data import synthetic_conic
    from nucstudy.data.classes import CONSEP

    return list(np.asarray(synthetic_conic(n, size=size, seed=seed, scheme=CONSEP).images))


def _write_svs(path: Path, image: np.ndarray, mpp: float) -> None:
    """A small Aperio-style pyramidal slide: tiled level 0, a thumbnail page, level 1."""
    import cv2
    import tifffile

    height, width = image.shape[:2]
    half = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    head = f"Aperio Image Library v12.0.0 \r\n{width}x{height}"
    options = dict(tile=(128, 128), compression="zlib", photometric="rgb", metadata=None)
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, description=f"{head} [0,0 {width}x{height}] |MPP = {mpp}", **options)
        thumb = cv2.resize(image, (width // 8, height // 8), interpolation=cv2.INTER_AREA)
        tiff.write(
            thumb,
            description=f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} |MPP = {mpp}",
            photometric="rgb",
            metadata=None,
        )
        tiff.write(
            half, description=f"{head} -> {width // 2}x{height // 2} |MPP = {mpp}", **options
        )


def make_placeholders(root: Path) -> None:
    """The user's own files that README examples name (:data:`PLACEHOLDERS`), in ``root``."""
    from PIL import Image

    tiles = _he_images(4, 256, seed=5)
    Image.fromarray(tiles[0]).save(root / "image.png")
    (root / "my_tiles").mkdir(exist_ok=True)
    for k, tile in enumerate(tiles[1:3]):
        Image.fromarray(tile).save(root / "my_tiles" / f"tile{k}.png")
    big = np.concatenate([np.concatenate(tiles[2 * r : 2 * r + 2], 1) for r in range(2)], 0)
    _write_svs(root / "slide.svs", np.repeat(np.repeat(big, 2, 0), 2, 1), mpp=0.25)


def _run(example: Example, clone: Path, env: dict[str, str]) -> str | None:
    """Run one example in ``clone``; None if it did what the rule asks, else why not."""
    if example.code:
        argv = [sys.executable, "-c", example.code]
    else:
        argv = smoke_sized(example.argv)
        if argv[0] != "nucstudy":  # python -m nucstudy...: this test's interpreter
            argv = [sys.executable, *argv[1:]]
    try:
        done = subprocess.run(
            argv, cwd=clone, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"did not finish in {COMMAND_TIMEOUT} s"
    err = [line for line in done.stderr.splitlines() if line.strip()]
    if example.refuses:
        if done.returncode == 2 and len(err) == 1:
            return None
        return f"expected one refusal line and exit 2, got exit {done.returncode}: {err[-3:]}"
    if done.returncode == 0:
        return None
    last = err[-1] if err else (done.stdout.strip().splitlines() or [""])[-1]
    return f"exit {done.returncode}: {last}"


@pytest.mark.slow
def test_every_readme_command_works_on_a_fresh_clone(fresh_clone: Path) -> None:
    """Run every runnable example in one fresh clone, in order; all failures in one message."""
    make_placeholders(fresh_clone)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(fresh_clone)  # the clone's package, not this checkout's
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env.pop("CI", None)
    which = subprocess.run(
        [sys.executable, "-c", "import nucstudy; print(nucstudy.__file__)"],
        cwd=fresh_clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert which.stdout.strip().startswith(str(fresh_clone)), which.stdout + which.stderr
    examples = runnable_examples()
    failures = []
    for example in examples:
        why = _run(example, fresh_clone, env)
        if why is not None:
            shown = example.text if example.argv else f"python block:\n{example.text}"
            failures.append(f"README.md:{example.line}: {shown}\n    -> {why}")
    assert not failures, f"{len(failures)} of {len(examples)} README examples fail:\n" + (
        "\n".join(failures)
    )
