"""The batch manifest: JSONL and CSV read alike; every problem named by line and column."""

from __future__ import annotations

import json

import pytest

from lmm_edit.cli.batch.manifest import ManifestError, read_manifest

ROWS = [
    {"id": "a1", "image": "pics/a.png", "instruction": "make it red", "seed": 3, "mask": "pics/a_mask.png",
     "target_image": "pics/a_t.png", "target_caption": "a red cup", "type": "color"},
    {"id": "b2", "image": "/abs/b.jpg", "instruction": "remove the dog"},
]


def _jsonl(tmp_path, rows, name="m.jsonl"):
    path = tmp_path / name
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _problems(path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    return caught.value.problems


def test_jsonl_items_resolve_paths_next_to_the_manifest(tmp_path):
    first, second = read_manifest(_jsonl(tmp_path, ROWS))
    assert first.image == str(tmp_path / "pics" / "a.png")
    assert first.mask == str(tmp_path / "pics" / "a_mask.png")
    assert first.target_image == str(tmp_path / "pics" / "a_t.png")
    assert (first.seed, first.type, first.target_caption, first.line) == (3, "color", "a red cup", 1)
    assert second.image == "/abs/b.jpg" and second.seed is None and second.mask is None


def test_csv_reads_the_same_items_as_jsonl(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,image,instruction,seed,mask,target_image,target_caption,instruction_type\n"
                        'a1,pics/a.png,make it red,3,pics/a_mask.png,pics/a_t.png,"a red cup",color\n'
                        "b2,/abs/b.jpg,remove the dog,,,,,\n")
    from_csv = [item.fields() for item in read_manifest(csv_path)]
    from_jsonl = [item.fields() for item in read_manifest(_jsonl(tmp_path, ROWS))]
    assert from_csv == from_jsonl


def test_bad_json_line_is_named_with_line_and_column(tmp_path):
    problems = _problems(_jsonl(tmp_path, [ROWS[0], '{"id": "x", "image": ']))
    assert len(problems) == 1 and problems[0].startswith("line 2, column ")


def test_missing_required_columns_are_named(tmp_path):
    problems = _problems(_jsonl(tmp_path, [{"id": "x", "image": "a.png"}]))
    assert problems == ["line 1: missing 'instruction'"]


def test_bad_seed_names_line_column_and_value(tmp_path):
    problems = _problems(_jsonl(tmp_path, [dict(ROWS[1], seed="abc")]))
    assert problems == ["line 1, column 'seed': expected a whole number from 0 to 18446744073709551615, found 'abc'"]


def test_duplicate_id_names_both_lines(tmp_path):
    problems = _problems(_jsonl(tmp_path, [ROWS[0], ROWS[1], dict(ROWS[1], image="c.png")]))
    assert problems == ["line 3, column 'id': 'b2' is already used on line 2"]


def test_unknown_column_is_reported(tmp_path):
    problems = _problems(_jsonl(tmp_path, [dict(ROWS[1], instuction="typo")]))
    assert problems == ["line 1: unknown column(s) 'instuction'"]


def test_id_that_cannot_name_a_file_is_refused(tmp_path):
    problems = _problems(_jsonl(tmp_path, [dict(ROWS[1], id="../escape")]))
    assert problems[0].startswith("line 1, column 'id': '../escape' cannot name a file")


def test_csv_line_numbers_count_the_header(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,image,instruction,seed\na,a.png,x,1\nb,b.png,y,-4\n")
    assert _problems(csv_path)[0].startswith("line 3, column 'seed'")


def test_every_problem_is_reported_at_once(tmp_path):
    problems = _problems(_jsonl(tmp_path, [{"id": "x"}, dict(ROWS[1], seed=-1), "[1, 2]"]))
    assert [p.split(":")[0].split(",")[0] for p in problems] == ["line 1", "line 2", "line 3"]
