"""Shared fixtures of the SmartEdit unit tests: the parity fixture produced by the reference code.

The fixture folder comes from LMM_EDIT_SMARTEDIT_FIXTURE, default `<repo>/../shared/fixtures/smartedit_parity`.
Everything (sizes, vocabulary, prompt, forced tokens, image size) is read from its files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lmm_edit.selfcheck.smartedit_release import write_smartedit_release

REPO = Path(__file__).resolve().parents[3]
FIXTURE = Path(os.environ.get("LMM_EDIT_SMARTEDIT_FIXTURE", REPO.parent / "shared" / "fixtures" / "smartedit_parity"))


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """README metric: max|ours - ref| / max|ref|."""
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _read_png(path: Path) -> torch.Tensor:
    """PNG -> ComfyUI IMAGE layout [H, W, 3] float in 0..1."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)


@pytest.fixture(scope="session")
def rel_err():
    return _rel_err


@pytest.fixture(scope="session")
def read_png():
    return _read_png


class Fixture:
    """Paths and tensors of the parity fixture."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ck = root / "checkpoints"
        self.bundle = ck / "SmartEdit-7B"
        self.llava = ck / "LLaVA-7B-v1"
        self.clip = ck / "clip-vit-large-patch14"
        self.tokenizer = ck / "vicuna-7b-v1-1" / "tokenizer.model"
        self.qformer_heads = int(json.loads((ck / "bert-base-uncased" / "config.json").read_text())["num_attention_heads"])
        self.conversation = json.loads((root / "inputs" / "conversation.json").read_text())
        self.inputs = load_file(root / "inputs" / "inputs.safetensors")
        self.stage = {
            n: load_file(root / "outputs" / f"{f}.safetensors")
            for n, f in (
                (1, "stage1_vision"), (2, "stage2_llm"), (3, "stage3_qformer"), (4, "stage4_bim"), (5, "stage5_unet_fp32")
            )
        }

    @property
    def forced_ids(self) -> list[int]:
        return self.inputs["forced_token_ids"].tolist()

    def instruction_and_template(self) -> tuple[str, str]:
        """The instruction and the Human template, recovered from the conversation string."""
        from lmm_edit.loaders.smartedit.prompt import IMAGE_SLOT, TEMPLATES, build_prompt

        conversation = self.conversation["conversation"]
        after_slot = conversation.split(IMAGE_SLOT, 1)[1]
        for human, _ in TEMPLATES:
            tail = human.split("[cap]", 1)[1]
            closing = f'"{tail} ASSISTANT:'
            if after_slot.endswith(closing):
                instruction = after_slot[: -len(closing)]
                if build_prompt(instruction, human) == conversation:
                    return instruction, human
        raise AssertionError("no reference template reproduces the fixture's conversation")


@pytest.fixture(scope="session")
def fixture() -> Fixture:
    if not (FIXTURE / "README.md").is_file():
        pytest.skip(f"SmartEdit parity fixture not found at {FIXTURE} (set LMM_EDIT_SMARTEDIT_FIXTURE)")
    return Fixture(FIXTURE)


@pytest.fixture(scope="session", params=["bin", "safetensors"])
def models(request, fixture):
    """The fixture's release files through the same loader as real release files, as .bin and as .safetensors."""
    from lmm_edit.loaders.smartedit import load_smartedit

    return load_smartedit(
        fixture.bundle, fixture.llava, fixture.clip, tokenizer_path=fixture.tokenizer,
        qformer_heads=fixture.qformer_heads, file_format=request.param,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny SmartEdit release (bundle with .bin and .safetensors files, LLaVA-1.1 base in two shards, CLIP, tokenizer)."""
    return write_smartedit_release(tmp_path_factory.mktemp("pristine"), seed=2)


@pytest.fixture
def release(pristine, tmp_path):
    """A copy of ``pristine`` a test may damage."""
    root = tmp_path / "copy"
    shutil.copytree(pristine.bundle.parent, root)
    return type(pristine)(
        bundle=root / pristine.bundle.name, llava=root / pristine.llava.name, clip=root / pristine.clip.name,
        tokenizer=root / pristine.llava.name / "tokenizer.model", sizes=pristine.sizes, qformer_heads=pristine.qformer_heads,
        tensors=pristine.tensors,
    )
