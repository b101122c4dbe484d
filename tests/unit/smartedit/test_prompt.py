"""The conversation prompt against the reference's (fixture conversation string) and its template list."""

from __future__ import annotations

import pytest

from lmm_edit.loaders.smartedit.prompt import TEMPLATES, build_prompt, resolve_template, template_index_for_seed


def test_one_reference_template_rebuilds_the_fixture_conversation(fixture):
    instruction, human = fixture.instruction_and_template()
    assert build_prompt(instruction, human) == fixture.conversation["conversation"]
    assert sum(build_prompt(instruction, h) == fixture.conversation["conversation"] for h, _ in TEMPLATES) == 1


def test_the_reference_file_has_thirty_templates_with_cap_and_img():
    assert len(TEMPLATES) == 30
    assert all("[cap]" in h and g.endswith(" [img].") for h, g in TEMPLATES)


def test_template_choice_is_seeded():
    picks = [template_index_for_seed(s) for s in range(200)]
    assert picks == [template_index_for_seed(s) for s in range(200)]
    assert set(picks) == set(range(len(TEMPLATES)))
    assert resolve_template(None, 7) == TEMPLATES[template_index_for_seed(7)][0]


def test_custom_template_needs_cap():
    with pytest.raises(ValueError, match=r"\[cap\]"):
        resolve_template("Edit this please", 0)
    assert build_prompt("x", "Do [cap] now").count('"<im_start> <img_0> <im_end>x"') == 1


def test_newlines_are_deleted_like_the_reference():
    assert "\n" not in build_prompt("make\nit red", TEMPLATES[0][0])
