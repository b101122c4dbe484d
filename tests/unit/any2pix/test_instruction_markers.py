"""Instruction markers as serve.py `run` reads them, plus the unused-input check the pack adds."""

from __future__ import annotations

import pytest

from lmm_edit.loaders.any2pix.markers import MarkerError, parse_markers


def test_markers_become_video_slots_in_order_of_appearance():
    marked = parse_markers("add [audio1] to [image1]", {("image", 1), ("audio", 1)})
    assert marked.text == "add <video> to <video>"
    assert marked.inputs == (("audio", 1), ("image", 1))


@pytest.mark.parametrize(("instruction", "connected", "message"), [
    ("add [audio1] to [image1] and [image1]", {("image", 1), ("audio", 1)}, "more than once"),
    ("add [sound] to [image1]", {("image", 1)}, "not an input marker"),
    ("add [audio2] to [image1]", {("image", 1), ("audio", 1)}, "no audio is connected to audio2"),
    ("make [image1] brighter", {("image", 1), ("audio", 1)}, "audio1 is connected but the instruction"),
    ("make it brighter", set(), "names no input"),
])
def test_marker_errors_name_the_problem(instruction, connected, message):
    with pytest.raises(MarkerError, match=message):
        parse_markers(instruction, connected)
