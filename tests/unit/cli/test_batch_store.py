"""results.jsonl and the images survive a kill: whole lines, torn tails skipped and cut, atomic images."""

from __future__ import annotations

import json
import math

from lmm_edit.cli.batch.store import ResultsStore, read_results


def test_lines_are_read_back_in_order_with_infinity(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"id": "a", "status": "done", "metrics": {"psnr": math.inf}})
    store.append({"id": "b", "status": "failed", "error": "bad"})
    store.close()
    records = read_results(tmp_path / "results.jsonl")
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["metrics"]["psnr"] == "inf"  # JSON has no infinity
    assert all(line.endswith("}") for line in (tmp_path / "results.jsonl").read_text().splitlines())


def test_a_torn_last_line_is_skipped_by_the_reader(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a", "status": "done"}) + "\n" + '{"id": "b", "sta')
    assert [r["id"] for r in read_results(path)] == ["a"]


def test_the_next_line_after_a_torn_one_starts_on_its_own_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "sta')
    store = ResultsStore(tmp_path)
    store.append({"id": "c"})
    store.close()
    assert path.read_text().splitlines() == ['{"id": "a"}', '{"id": "c"}']


def test_the_image_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    store = ResultsStore(tmp_path)
    assert store.write_image("x1", b"first") == "images/x1.png"
    store.write_image("x1", b"second")
    store.close()
    assert (tmp_path / "images" / "x1.png").read_bytes() == b"second"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["x1.png"]


def test_done_needs_the_same_hash_and_the_image(tmp_path):
    store = ResultsStore(tmp_path)
    for item_id in ("same", "other_hash", "no_image", "failed"):
        if item_id != "no_image":
            store.write_image(item_id, b"png")
        store.append({"id": item_id, "status": "failed" if item_id == "failed" else "done", "hash": "h",
                      "output": f"images/{item_id}.png"})
    hashes = {"same": "h", "other_hash": "h2", "no_image": "h", "failed": "h"}
    assert store.done_ids(hashes) == {"same"}
    store.close()


def test_the_last_line_of_an_item_wins(tmp_path):
    store = ResultsStore(tmp_path)
    store.append({"id": "a", "status": "failed"})
    store.append({"id": "a", "status": "done"})
    assert store.latest()["a"]["status"] == "done"
    store.close()
