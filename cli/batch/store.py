"""DIR/results.jsonl and DIR/images/<id>.png, written so that a kill never leaves half of either.

Images: written to a temporary name in the same folder, fsynced, then renamed (atomic on POSIX).
Results: one JSON object per line, each written whole with one ``write`` on an O_APPEND descriptor,
then fsynced. A line torn by a kill during that write can only be the last one: reading skips it,
and opening for more lines first cuts it off, so the next line starts on a fresh line.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

RESULTS = "results.jsonl"
IMAGES = "images"
DONE, FAILED = "done", "failed"


def _encode(value):
    """JSON has no infinity: PSNR of identical images is written as the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def read_results(path: pathlib.Path) -> list[dict]:
    """Every whole line of results.jsonl, in order; a torn last line (a kill mid-write) is skipped."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if number == len(lines):  # no newline after it: the write was cut short
                continue
            raise ValueError(f"{path} line {number} is not JSON ({error}); the file was edited by hand? "
                             "Remove that line and run again") from error
    return records


class ResultsStore:
    """Only the driver writes here (workers return their results to it)."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = pathlib.Path(out_dir)
        self.images = self.out_dir / IMAGES
        self.images.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / RESULTS
        self._cut_torn_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                os.fsync(f.fileno())

    def latest(self) -> dict[str, dict]:
        """The last line written for each item id."""
        return {record["id"]: record for record in read_results(self.path) if "id" in record}

    def done_ids(self, hashes: dict[str, str]) -> set[str]:
        """Ids whose last line is done with the same hash, and whose image is there."""
        return {item_id for item_id, record in self.latest().items()
                if record.get("status") == DONE and record.get("hash") == hashes.get(item_id)
                and (self.out_dir / record.get("output", "")).is_file()}

    def image_path(self, item_id: str) -> pathlib.Path:
        return self.images / f"{item_id}.png"

    def write_image(self, item_id: str, png: bytes) -> str:
        """Atomic: the image is either the old one or the whole new one. Returns the path relative to DIR."""
        final = self.image_path(item_id)
        temporary = final.with_name(f".{final.name}.tmp")
        with open(temporary, "wb") as f:
            f.write(png)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, final)
        return str(final.relative_to(self.out_dir))

    def append(self, record: dict) -> None:
        line = (json.dumps(_encode(record), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: do not leave a partial line behind
            raise OSError(f"could only write {written} of {len(line)} bytes to {self.path}")
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
