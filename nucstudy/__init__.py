"""nucstudy: nuclear instance segmentation and classification in H&E, re-run and explained.

The package is grouped by layer; imports run one way, from the top:
``cli`` -> ``study`` -> ``segment`` -> ``engine`` -> ``postprocess``, ``metrics``, ``models``
-> ``data`` -> ``common``. Each subpackage's docstring says what it holds. The flat layout's
old import paths still work, with a deprecation warning (:mod:`nucstudy._compat`).
"""

from nucstudy import _compat

__version__ = "0.1.0"

_compat.install()
