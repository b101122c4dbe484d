"""summary.csv: mean, std (population) and count per metric, overall and per instruction type."""

from __future__ import annotations

import csv
import math

import numpy as np

from lmm_edit.cli.batch.summary import format_table, summarize, write_summary

RECORDS = [
    {"type": "color", "metrics": {"psnr": 20.0, "ssim": 0.5, "clip_text": "unavailable: no CLIP"}},
    {"type": "color", "metrics": {"psnr": 30.0, "ssim": 0.7}},
    {"type": "size", "metrics": {"psnr": "inf", "ssim": 0.9, "psnr_outside": "undefined: whole mask"}},
    {"type": None, "metrics": {"psnr": 10.0}},
]


def _row(rows, group, metric):
    (row,) = [r for r in rows if r["type"] == group and r["metric"] == metric]
    return row


def test_overall_rows_match_numpy_over_the_finite_values():
    rows = summarize(RECORDS)
    psnr = _row(rows, "all", "psnr")
    assert (psnr["count"], psnr["infinite"]) == (4, 1)
    assert psnr["mean"] == np.mean([20, 30, 10]) and psnr["std"] == np.std([20, 30, 10])
    ssim = _row(rows, "all", "ssim")
    assert ssim["count"] == 3 and math.isclose(ssim["mean"], np.mean([0.5, 0.7, 0.9]))


def test_rows_per_instruction_type():
    rows = summarize(RECORDS)
    color = _row(rows, "color", "psnr")
    assert (color["count"], color["mean"], color["std"]) == (2, 25.0, 5.0)
    assert _row(rows, "size", "psnr")["infinite"] == 1 and math.isnan(_row(rows, "size", "psnr")["mean"])
    assert [r["type"] for r in rows][:2] == ["all", "all"]


def test_unavailable_and_undefined_values_are_not_counted():
    metrics = {(r["type"], r["metric"]) for r in summarize(RECORDS)}
    assert ("all", "clip_text") not in metrics and ("all", "psnr_outside") not in metrics


def test_csv_and_table_hold_every_row(tmp_path):
    rows = summarize(RECORDS)
    with open(write_summary(tmp_path / "summary.csv", rows)) as f:
        written = list(csv.DictReader(f))
    assert [(r["type"], r["metric"], int(r["count"])) for r in written] == \
        [(r["type"], r["metric"], r["count"]) for r in rows]
    assert len(format_table(rows).splitlines()) == len(rows) + 2
