"""The ``nucstudy`` command: the parser (:mod:`~nucstudy.cli.parser`), what every command
shares (:mod:`~nucstudy.cli.arguments`), one module per group of commands and
:func:`~nucstudy.cli.main.main`, the entry point. May import every layer."""

from nucstudy.cli.arguments import EXIT_FAILED, EXIT_USAGE, UsageError
from nucstudy.cli.main import main
from nucstudy.cli.parser import build_parser

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "UsageError", "build_parser", "main"]
