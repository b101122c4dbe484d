"""Tiny random vision-language model folders for the MLLM encoder tests (builders in selfcheck/vlm_models.py)."""

from __future__ import annotations

import pathlib

import pytest

from lmm_edit.selfcheck.vlm_models import write_tiny_llava, write_tiny_llava_next, write_tiny_qwen2_vl


@pytest.fixture(scope="session")
def tiny_llava_folder(tmp_path_factory) -> pathlib.Path:
    return write_tiny_llava(tmp_path_factory.mktemp("llava-1.5"))


@pytest.fixture(scope="session")
def tiny_qwen2_vl_folder(tmp_path_factory) -> pathlib.Path:
    return write_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"))


@pytest.fixture(scope="session")
def tiny_llava_next_folder(tmp_path_factory) -> pathlib.Path:
    return write_tiny_llava_next(tmp_path_factory.mktemp("llava-next"))


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_folder(tmp_path_factory) -> pathlib.Path:
    return write_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2.5-vl"), version="2.5")
