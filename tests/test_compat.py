"""The flat layout's import paths keep working, each with a deprecation warning.

``old_public_names.json`` lists every public name of every module of the flat package as it
was before the package was grouped by layer; each must still be importable from its old
path, warn, and be the very object of its new home.
"""

import importlib
import json
import warnings
from pathlib import Path

import pytest

from nucstudy._compat import MOVED_MODULES, new_home

OLD_NAMES = json.loads((Path(__file__).parent / "old_public_names.json").read_text())


@pytest.mark.parametrize("old_module", sorted(OLD_NAMES))
def test_every_old_name_imports_from_its_old_path_with_a_warning(old_module):
    module = importlib.import_module(old_module)
    for name in OLD_NAMES[old_module]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(module, name)
        if old_module in MOVED_MODULES:
            home = new_home(old_module, name)
            assert any(issubclass(w.category, DeprecationWarning) for w in caught), name
            assert any(home in str(w.message) for w in caught), name
            assert value is getattr(importlib.import_module(home), name)


def test_new_paths_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for home in set(MOVED_MODULES.values()):
            importlib.import_module(home)
        from nucstudy.study import main_job  # noqa: F401  (a submodule, not an old name)


def test_an_unknown_name_of_an_old_path_is_an_attribute_error():
    import nucstudy.train

    with pytest.raises(AttributeError):
        nucstudy.train.no_such_name  # noqa: B018
