"""Load-time errors of the InsightEdit loaders: each names the file, what was expected, what was found, the fix."""

from __future__ import annotations

from pathlib import Path


class InsightEditLoadError(ValueError):
    """A file or folder the InsightEdit loaders cannot use as it is (raised at load time, never mid-sampling)."""

    def __init__(self, file: str | Path, expected: str, found: str, fix: str) -> None:
        self.file = str(file)
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(f"{self.file}: expected {expected}; found {found}. Fix: {fix}")


class AdapterFileError(InsightEditLoadError):
    """An IP-Adapter / IAA file of the wrong layout, family or shape, or an unreadable one."""


class MLLMLoadError(InsightEditLoadError):
    """A vision-language model folder of an unknown family, or without the files the encoder needs."""
