"""Checking values against type hints, so that a bad setting is named in one sentence.

Used by :class:`nucstudy.study.experiment.ExperimentConfig` for its fields and by
:func:`nucstudy.models.build_model` for model options: ``epochs="abc"`` is answered with
"epochs must be an integer, got 'abc' (str)" instead of an error deep inside training.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type hint ``hint``.

    Understands ``bool``, ``int`` (not bool), ``float`` (int or float, not bool), ``str``,
    ``None``, ``Any``, unions, ``list[X]`` / ``tuple[X, ...]`` (a list or tuple of X) and
    ``dict[K, V]``.
    """
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in typing.get_args(hint))
    if origin in (list, tuple):
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        return isinstance(value, (list, tuple)) and all(matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(
            matches(k, key) and matches(v, item) for k, v in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> "an integer or null"."""
    if hint is None or hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in typing.get_args(hint))
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping of names to values"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    words = describe(hint)
    return {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(
        words, words
    )


def parse_value(text: str) -> Any:
    """A setting's value from the command line: JSON where it parses (numbers, true, null,
    lists, objects), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` settings as a dict (dashes in keys become underscores).

    Raises:
        ValueError: an item without ``=`` or without a key, named with ``flag``.
    """
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        values[key.replace("-", "_")] = parse_value(value)
    return values


def type_problems(values: Mapping[str, Any], hints: Mapping[str, Any], what: str) -> list[str]:
    """One sentence per value in ``values`` that does not fit its hint in ``hints``.

    Args:
        values: name -> value.
        hints: name -> type hint (names without a hint are not checked).
        what: how to name a value's owner in the sentence, e.g. ``"config field"``.
    """
    problems = []
    for name, value in values.items():
        if name in hints and not matches(value, hints[name]):
            problems.append(
                f"{what} {name} must be {describe(hints[name])}, "
                f"got {value!r} ({type(value).__name__})"
            )
    return problems


def parameter_hints(function: Callable) -> dict[str, Any]:
    """The resolved type hints of a function's (or class constructor's) parameters."""
    target = function.__init__ if isinstance(function, type) else function
    hints = typing.get_type_hints(target)
    hints.pop("return", None)
    return hints
