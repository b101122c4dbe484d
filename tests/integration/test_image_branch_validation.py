"""LMMEdit_IAAImageBranch's cheap checks run at ComfyUI's prompt validation, before anything loads.

Drives core ``execution.validate_prompt`` on the ip_adapter_edit.json example (as the frontend
saves it) with bad widget values, and reads the node's error as the frontend would show it.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BRANCH = "LMMEdit_IAAImageBranch"


def _validate(comfyui, **values) -> list[dict]:
    """The branch node's validation errors once ``values`` replace its widgets."""
    prompt = comfyui.ui_to_api(json.loads((ROOT / "example_workflows" / "ip_adapter_edit.json").read_text()))
    (branch_id,) = [key for key, node in prompt.items() if node["class_type"] == BRANCH]
    prompt[branch_id]["inputs"].update(values)
    _, _, _, node_errors = asyncio.run(comfyui.execution.validate_prompt("check", prompt, None))
    return node_errors.get(branch_id, {}).get("errors", [])


def _custom_details(errors: list[dict]) -> str:
    return " ".join(error["details"] for error in errors if error["type"] == "custom_validation_failed")


def test_example_values_pass_the_branch_checks(comfyui):
    assert _custom_details(_validate(comfyui)) == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"start_percent": 0.8, "end_percent": 0.2}, "end_percent 0.2 is before start_percent 0.8"),
        ({"end_percent": 1.5}, "end_percent 1.5 is outside [0, 1]"),
        ({"start_percent": -0.1}, "start_percent -0.1 is outside [0, 1]"),
        ({"batch_weights": "1.0, lots"}, "batch_weights must be numbers separated by commas"),
    ],
)
def test_bad_values_are_refused_at_validation(comfyui, values, message):
    assert message in _custom_details(_validate(comfyui, **values))


def test_other_widgets_keep_comfyui_range_checks(comfyui):
    errors = _validate(comfyui, weight=9.0)
    assert any(error["type"] == "value_bigger_than_max" for error in errors), errors
