"""The pack's load-time error: it names the file, what was expected, what was found and the fix."""

from __future__ import annotations

from pathlib import Path


class ModelFileError(ValueError):
    """A model file or folder that cannot be used as it is.

    Raised at load time (never mid-sampling), so a node shows it before any work starts.
    """

    def __init__(self, file: str | Path, expected: str, found: str, fix: str) -> None:
        self.file = str(file)
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(f"{self.file}: expected {expected}; found {found}. Fix: {fix}")
