"""The batch manifest: JSONL (one object a line) or CSV (a header row), one edit per item.

Columns: ``id``, ``image``, ``instruction`` (required); ``mask``, ``seed``, ``target_image``,
``target_caption``, ``type`` (optional; ``instruction_type`` is read as ``type``). Relative paths are
relative to the manifest's folder. Every problem is reported with its line and column.
"""

from __future__ import annotations

import csv
import json
import pathlib
import re
from dataclasses import asdict, dataclass

REQUIRED = ("id", "image", "instruction")
OPTIONAL = ("mask", "seed", "target_image", "target_caption", "type")
ALIASES = {"instruction_type": "type"}
PATH_COLUMNS = ("image", "mask", "target_image")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")  # the id names DIR/images/<id>.png
MAX_SEED = 0xFFFFFFFFFFFFFFFF  # ComfyUI's noise_seed maximum


@dataclass(frozen=True)
class Item:
    id: str
    image: str  # absolute path
    instruction: str
    mask: str | None = None
    seed: int | None = None  # None: the workflow's own seed
    target_image: str | None = None
    target_caption: str | None = None
    type: str | None = None
    line: int = 0  # where it is in the manifest (not part of the item's identity)

    def fields(self) -> dict:
        """What the item is, for the results line and its hash (no line number)."""
        fields = asdict(self)
        fields.pop("line")
        return fields


class ManifestError(ValueError):
    def __init__(self, path: pathlib.Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"manifest {path} has {len(problems)} problem(s):\n  " + "\n  ".join(shown)
                         + f"\nExpected JSONL or CSV with columns {', '.join(REQUIRED)} and optionally "
                         f"{', '.join(OPTIONAL)}.")


def _rows(path: pathlib.Path, problems: list[str]) -> list[tuple[int, dict]]:
    """(line number, raw row) pairs; JSONL when the name ends in .jsonl/.json, else CSV."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(f"line {number}, column {error.colno}: not valid JSON ({error.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {number}: expected a JSON object {{\"id\": ..., \"image\": ...}}, "
                                f"found {type(row).__name__}")
                continue
            rows.append((number, row))
        return rows
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        problems.append("line 1: no header row (expected e.g. id,image,instruction)")
        return []
    # DictReader's line_num counts physical lines; a quoted field may span several.
    return [(reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}) for row in reader]


def _text(row: dict, column: str, where: str, problems: list[str]) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where}, column '{column}': expected text, found {json.dumps(value)}")
        return None
    return value


def _seed(row: dict, where: str, problems: list[str]) -> int | None:
    value = row.get("seed")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        problems.append(f"{where}, column 'seed': expected a whole number from 0 to {MAX_SEED}, found {value!r}")
        return None
    return value


def _line_of(problem: str) -> int:
    found = re.match(r"line (\d+)", problem)
    return int(found.group(1)) if found else 0


def read_manifest(path: str | pathlib.Path) -> list[Item]:
    """All items, in manifest order; raises ManifestError listing every problem found."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ManifestError(path, ["the file does not exist"])
    problems: list[str] = []
    items: list[Item] = []
    first_line_of: dict[str, int] = {}
    for number, raw in _rows(path, problems):
        where = f"line {number}"
        row = {ALIASES.get(key, key): value for key, value in raw.items()}
        unknown = sorted(set(row) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            problems.append(f"{where}: unknown column(s) {', '.join(map(repr, unknown))}")
        values = {column: _text(row, column, where, problems) for column in REQUIRED + OPTIONAL if column != "seed"}
        missing = [column for column in REQUIRED if not values[column]]
        if missing:
            problems.append(f"{where}: missing {', '.join(map(repr, missing))}")
            continue
        item_id = values["id"]
        if not ID_PATTERN.match(item_id):
            problems.append(f"{where}, column 'id': {item_id!r} cannot name a file; use letters, digits, _ . - "
                            "(not starting with . or -)")
        elif item_id in first_line_of:
            problems.append(f"{where}, column 'id': {item_id!r} is already used on line {first_line_of[item_id]}")
        else:
            first_line_of[item_id] = number
        for column in PATH_COLUMNS:
            if values[column]:
                values[column] = str((path.parent / values[column]).resolve())
        items.append(Item(seed=_seed(row, where, problems), line=number, **values))
    if not items and not problems:
        problems.append("no items")
    if problems:
        raise ManifestError(path, sorted(problems, key=_line_of))
    return items
