"""Model assembly with errors a user can act on: every tensor checked against the module before it is loaded.

``torch.nn.Module.load_state_dict`` reports a wrong shape or a missing key as a ``RuntimeError`` without the
file it came from, and assigns integer or bool tensors into float parameters without a word (the first
matmul then fails mid-sampling). ``load_checked`` raises ``ModelFileError`` naming the file, the key (as the
file spells it), the expected and the found shape or dtype. ``reading_shapes`` turns the ``KeyError`` /
``ValueError`` of a ``Config.from_shapes`` on an incomplete file into the same error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .errors import ModelFileError


def _same_key(key: str) -> str:
    return key


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_float_tensors(tensors: dict[str, torch.Tensor], file: str | Path, fix: str,
                        key_in_file: Callable[[str], str] = _same_key) -> None:
    """Refuse integer or bool tensors where weights (floating point) belong, naming the first such key."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ModelFileError(
                file, f"{key_in_file(key)} as floating-point weights", f"a {tensor.dtype} tensor",
                fix + " (integer or bool weights mean a damaged or foreign file)",
            )


def check_state(module: nn.Module, state: dict[str, torch.Tensor], file: str | Path, what: str, fix: str,
                key_in_file: Callable[[str], str] = _same_key) -> None:
    """Raise ``ModelFileError`` unless ``state`` has exactly the module's keys, shapes and floating dtypes."""
    expected = module.state_dict()
    missing = sorted(key_in_file(k) for k in set(expected) - set(state))
    unexpected = sorted(key_in_file(k) for k in set(state) - set(expected))
    if missing or unexpected:
        found = "; ".join(part for part in (
            f"missing {_listing(missing)}" if missing else "", f"unexpected {_listing(unexpected)}" if unexpected else "",
        ) if part)
        raise ModelFileError(file, f"every tensor of {what}, no others", found, fix)
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise ModelFileError(
                file, f"{key_in_file(key)} of shape {list(want.shape)} ({what})", f"shape {list(got.shape)}", fix,
            )
        if want.is_floating_point() and not got.is_floating_point():
            raise ModelFileError(
                file, f"{key_in_file(key)} as floating-point weights ({what})", f"a {got.dtype} tensor",
                fix + " (integer or bool weights mean a damaged or foreign file)",
            )


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], file: str | Path, what: str, fix: str,
                 key_in_file: Callable[[str], str] = _same_key) -> nn.Module:
    """``check_state``, then ``module.load_state_dict(state, strict=True, assign=True)`` (tensors keep their dtype)."""
    check_state(module, state, file, what, fix, key_in_file)
    module.load_state_dict(state, strict=True, assign=True)
    return module


@contextmanager
def reading_shapes(file: str | Path, what: str, fix: str, key_in_file: Callable[[str], str] = _same_key) -> Iterator[None]:
    """Turn a missing key (``KeyError``) or an unexpected shape (``ValueError``, ``IndexError``) met while sizing
    a model from its tensors into ``ModelFileError`` naming the file and the key."""
    try:
        yield
    except ModelFileError:
        raise
    except KeyError as err:
        key = err.args[0] if err.args else "?"
        raise ModelFileError(file, f"{what} with the tensor {key_in_file(str(key))}", "no such tensor", fix) from err
    except (ValueError, IndexError) as err:
        raise ModelFileError(file, what, f"tensors of unexpected shapes ({str(err)[:200]})", fix) from err
