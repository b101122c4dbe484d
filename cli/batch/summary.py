"""DIR/summary.csv and the printed table: mean, std and count of every metric, overall and per type.

Only numbers count; "undefined"/"unavailable" values are left out. An infinite PSNR (identical
pictures) is counted in ``infinite`` and left out of mean and std, which are over the finite values
(std: population, numpy's default).
"""

from __future__ import annotations

import csv
import math
import pathlib
from collections.abc import Iterable

import numpy as np

from .metrics import METRIC_NAMES

ALL = "all"
COLUMNS = ("type", "metric", "count", "mean", "std", "infinite")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf"):  # store.py writes infinities as strings
        return float(value)
    return None


def summarize(records: Iterable[dict]) -> list[dict]:
    """One row per (type, metric): overall first (type "all"), then each instruction type, sorted."""
    values: dict[tuple[str, str], list[float]] = {}
    for record in records:
        groups = [ALL] + ([str(record["type"])] if record.get("type") else [])
        for name, value in (record.get("metrics") or {}).items():
            number = _number(value)
            if number is None or math.isnan(number):
                continue
            for group in groups:
                values.setdefault((group, name), []).append(number)
    order = {name: i for i, name in enumerate(METRIC_NAMES)}
    rows = []
    for (group, name) in sorted(values, key=lambda key: (key[0] != ALL, key[0], order.get(key[1], 99), key[1])):
        numbers = np.asarray(values[(group, name)])
        finite = numbers[np.isfinite(numbers)]
        rows.append(dict(type=group, metric=name, count=len(numbers),
                         mean=float(finite.mean()) if len(finite) else math.nan,
                         std=float(finite.std()) if len(finite) else math.nan,
                         infinite=int((~np.isfinite(numbers)).sum())))
    return rows


def write_summary(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)
    return path


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no metrics (items need a target_image, a mask or a target_caption, and --metrics)"
    header = f"{'type':<20} {'metric':<14} {'count':>6} {'mean':>10} {'std':>10} {'infinite':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['type'][:20]:<20} {row['metric']:<14} {row['count']:>6} {row['mean']:>10.4f} "
                     f"{row['std']:>10.4f} {row['infinite']:>8}")
    return "\n".join(lines)
