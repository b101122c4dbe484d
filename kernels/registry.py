"""Backend registry: which implementation runs an op, decided from declared constraints.

Modelled on comfy-kitchen's ``BackendRegistry`` (``comfy_kitchen/registry.py``): backends in priority
order, each with per-op constraints, an unavailable backend keeps its reason, a thread-local override
for tests. Two differences: the registry is built once and never mutated afterwards (the pack keeps
no global mutable state beyond the thread-local override), and an override is strict: if the forced
backend cannot take the call, selection raises instead of quietly falling through to another backend.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

from .constraints import CallDescription, OpConstraints


class BackendNotFoundError(ValueError):
    """A backend name that no registry entry has."""


class NoCapableBackendError(RuntimeError):
    """No backend (or not the forced one) can take this call; the message lists every reason."""

    def __init__(self, op_name: str, reasons: Mapping[str, list[str]]) -> None:
        self.op_name = op_name
        self.reasons = dict(reasons)
        lines = [f"No attention backend can run {op_name} for this call:"]
        lines += [f"  {name}: {'; '.join(why)}" for name, why in self.reasons.items()]
        lines.append("Fix: use a backend listed as able to (lmm_edit.kernels.use_backend) or change the inputs.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Backend:
    """One backend: a module (imported on first use) with one function per op it implements.

    ``module`` is relative to this package. It also exposes ``KERNEL_ERRORS``, the exception types a
    failing kernel raises, so ``probe`` can name the backend without catching anything broader.
    """

    name: str
    module: str
    ops: Mapping[str, OpConstraints] = field(default_factory=dict)
    unavailable_reason: str | None = None

    def load(self) -> ModuleType:
        return importlib.import_module(f".{self.module}", package=__package__)


class BackendRegistry:
    def __init__(self, backends: list[Backend], priority: list[str]) -> None:
        self._backends = {backend.name: backend for backend in backends}
        unknown = [name for name in priority if name not in self._backends]
        if unknown:
            raise BackendNotFoundError(f"priority names unregistered backends {unknown}")
        self._priority = tuple(priority)
        self._override = threading.local()

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            raise BackendNotFoundError(f"unknown attention backend {name!r}; known: {sorted(self._backends)}")
        return self._backends[name]

    def list_backends(self) -> dict[str, dict[str, object]]:
        """``{name: {"available", "unavailable_reason", "ops"}}`` in priority order."""
        return {
            name: {
                "available": backend.unavailable_reason is None,
                "unavailable_reason": backend.unavailable_reason,
                "ops": sorted(backend.ops),
            }
            for name, backend in ((n, self._backends[n]) for n in self._priority)
        }

    def reasons_to_refuse(self, name: str, op_name: str, call: CallDescription) -> list[str]:
        backend = self.backend(name)
        if backend.unavailable_reason is not None:
            return [backend.unavailable_reason]
        if op_name not in backend.ops:
            return [f"does not implement {op_name}"]
        return backend.ops[op_name].reasons_to_refuse(call)

    def select(self, op_name: str, call: CallDescription) -> str:
        """First backend in priority order that accepts ``call``; the override, if set, or an error."""
        override = getattr(self._override, "name", None)
        if override is not None:
            reasons = self.reasons_to_refuse(override, op_name, call)
            if reasons:
                raise NoCapableBackendError(op_name, {f"{override} (forced by use_backend)": reasons})
            return override
        failures: dict[str, list[str]] = {}
        for name in self._priority:
            reasons = self.reasons_to_refuse(name, op_name, call)
            if not reasons:
                return name
            failures[name] = reasons
        raise NoCapableBackendError(op_name, failures)

    def implementation(self, name: str, op_name: str) -> Callable:
        backend = self.backend(name)
        if backend.unavailable_reason is not None:
            raise NoCapableBackendError(op_name, {name: [backend.unavailable_reason]})
        return getattr(backend.load(), op_name)

    def kernel_errors(self, name: str) -> tuple[type[BaseException], ...]:
        return tuple(self.backend(name).load().KERNEL_ERRORS)

    @contextmanager
    def use_backend(self, name: str) -> Iterator[None]:
        """Force ``name`` for every op called in this thread inside the ``with`` block."""
        self.backend(name)  # unknown names fail here, not at the first call
        previous = getattr(self._override, "name", None)
        self._override.name = name
        try:
            yield
        finally:
            self._override.name = previous
