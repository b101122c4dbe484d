"""Makes the repository root importable as the package ``lmm_edit`` without an install.

ComfyUI imports this folder under its own module name; tests and the command line use
``lmm_edit``. An editable install (``pip install -e .``) maps the same name.
"""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent


def _alias_repo_root_as_lmm_edit() -> None:
    if "lmm_edit" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "lmm_edit", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["lmm_edit"] = module
    spec.loader.exec_module(module)


_alias_repo_root_as_lmm_edit()

# Test-only helpers in tests/ (pack_process) are imported as top-level modules.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

# LMM_EDIT_REQUIRE_ALL=1 (set by .ci/run): a skip whose reason does not name CUDA fails.
pytest_plugins = ["skip_rule"]

# pytest must not collect the pack's own package files (root __init__.py, nodes/...)
# as test modules.
collect_ignore_glob = ["nodes/*", "loaders/*", "kernels/*", "benchmarks/*", "cli/*", "__main__.py", "__init__.py"]
