"""Makes the repository root importable as ``lmm_edit`` for the benchmark scripts (as the root conftest.py
does for the tests): the checkout the script sits in, even where an editable install maps the name elsewhere."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def import_pack() -> None:
    if "lmm_edit" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("lmm_edit", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lmm_edit"] = module
    spec.loader.exec_module(module)
