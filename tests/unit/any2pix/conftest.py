"""Shared fixtures of the InstructAny2Pix unit tests: the parity fixture produced by the reference code.

The folder comes from LMM_EDIT_ANY2PIX_FIXTURE (default `<repo>/../shared/fixtures/any2pix_parity`). Sizes,
token ids, the instruction, the input kinds and the settings are read from its files; measured errors are
printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[3]
FIXTURE = Path(os.environ.get("LMM_EDIT_ANY2PIX_FIXTURE", REPO.parent / "shared" / "fixtures" / "any2pix_parity"))

# fixture README "Recommended tolerances"
TOL_FORMULA = 1e-5  # stages 2-4, 6 formula checks (atol, rtol)
TOL_NETWORK = 1e-4  # LLaMA / GPT-2 outputs, prior y
TOL_FP16_ATOL, TOL_FP16_RTOL = 2e-2, 1e-2


def max_err(name: str, ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, (name, tuple(ours.shape), tuple(ref.shape))
    err = float((ours - ref).abs().max()) if ref.numel() else 0.0
    print(f"[any2pix] {name}: max abs err {err:.2e} (max |ref| {float(ref.abs().max()):.3g})")
    return err


def assert_close(name: str, ours: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    err = max_err(name, ours, ref)
    bound = atol + rtol * float(ref.detach().float().abs().max())
    assert err <= bound, f"{name}: {err:.3e} > {bound:.3e}"


class Fixture:
    """Paths, tensors and run facts of the parity fixture."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ck = root / "checkpoints"
        self.llm_dir = ck / "ckpts" / "llm-retrained"
        self.prior_files = [ck / "ckpts" / "prior" / n for n in ("model.bin", "model.safetensors")]
        self.adapter_files = [ck / "ckpts" / "sdxl" / f"ip_adapter_global_local_2_view.{s}" for s in ("bin", "safetensors")]
        self.gpt2_config = ck / "gpt2-medium" / "config.json"
        self.clip_dir = ck / "laion" / "CLIP-ViT-H-14-laion2B-s32B-b79K"
        sdxl = ck / "stabilityai" / "stable-diffusion-xl-base-1.0"
        self.scheduler_config = json.loads((sdxl / "scheduler" / "scheduler_config.json").read_text())
        self.unet_config = json.loads((sdxl / "unet" / "config.json").read_text())
        self.weights_index = json.loads((root / "weights_index.json").read_text())
        self.run_info = json.loads((root / "outputs" / "run_info.json").read_text())
        self.inputs = load_file(root / "inputs" / "inputs.safetensors")
        names = {1: "stage1_prior", 2: "stage2_llm", 3: "stage3_imagebind", 4: "stage4_fusion",
                 5: "stage5_ipadapter_unet", 6: "stage6_inversion_mix", 56: "stage56_fp16_cpu"}
        self.stage = {n: load_file(root / "outputs" / f"{f}.safetensors") for n, f in names.items()}

    @property
    def forced_ids(self) -> list[int]:
        return self.inputs["llm_forced_answer_ids"].tolist()

    @property
    def prompt_ids(self) -> list[int]:
        return self.inputs["llm_prompt_input_ids"][0].tolist()

    @property
    def aux(self) -> torch.Tensor:
        return self.stage[2]["extra_replacement_data"]

    def input_kinds(self) -> list[str]:
        """"image"/"audio" per LLM input, by matching each row to the renormalised ImageBind outputs."""
        from lmm_edit.loaders.any2pix.fusion import renormalize_inputs

        s3 = self.stage[3]
        candidates = {"image": renormalize_inputs(s3["imagebind_output_vision"])[0],
                      "audio": renormalize_inputs(s3["imagebind_output_audio"])[0]}
        kinds = []
        for row in self.aux:
            kind = min(candidates, key=lambda k: float((candidates[k] - row).abs().max()))
            kinds.append(kind)
        return kinds

    def instruction(self, tokenizer) -> str:
        """The `<video>` instruction, recovered from the decoded prompt and checked by re-encoding it.

        Decoding adds one space after each added token (README quirk 9); it is removed here.
        """
        from lmm_edit.loaders.any2pix.llm_encode import VICUNA_V1_ROLES, vicuna_v1_prompt
        from lmm_edit.loaders.any2pix.tokenizer import VIDEO

        user, assistant = VICUNA_V1_ROLES
        prompt_text = tokenizer.decode(self.prompt_ids)
        inner = prompt_text.split(f"{user}: ", 1)[1].rsplit(f" {assistant}:", 1)[0]
        instruction = inner.replace(VIDEO + " ", VIDEO).rstrip(" ")
        assert tokenizer.encode(vicuna_v1_prompt(instruction)) == self.prompt_ids, instruction
        return instruction


class Tolerances:
    formula = TOL_FORMULA
    network = TOL_NETWORK
    fp16_atol, fp16_rtol = TOL_FP16_ATOL, TOL_FP16_RTOL


@pytest.fixture(scope="session")
def tol() -> type[Tolerances]:
    return Tolerances


@pytest.fixture(scope="session")
def check():
    """assert_close(name, ours, ref, atol, rtol=0): prints the max abs error and asserts err <= atol + rtol max|ref|."""
    return assert_close


@pytest.fixture(scope="session")
def fx() -> Fixture:
    assert FIXTURE.is_dir(), f"the InstructAny2Pix fixture is missing: {FIXTURE} (set LMM_EDIT_ANY2PIX_FIXTURE)"
    return Fixture(FIXTURE)


@pytest.fixture(scope="session")
def llm(fx):
    from lmm_edit.loaders.any2pix import load_llm

    return load_llm(fx.llm_dir)


@pytest.fixture(scope="session")
def prior_bundle(fx):
    from lmm_edit.loaders.any2pix import load_prior

    return load_prior(fx.prior_files[0], fx.gpt2_config, fx.clip_dir / "config.json", fx.clip_dir)


@pytest.fixture(scope="session")
def settings(fx, llm):
    from lmm_edit.loaders.any2pix import SamplingSettings, read_generation_config

    return SamplingSettings.from_generation_config(read_generation_config(fx.llm_dir), llm[1].ids.eos)


@pytest.fixture(scope="session")
def forced_run(fx, llm, settings):
    """The LLM stage teacher-forced with the fixture's answer, fed the stored ImageBind embeddings."""
    from lmm_edit.loaders.any2pix import encode_instruction

    model, tokenizer = llm
    return encode_instruction(
        model, tokenizer, fx.instruction(tokenizer), fx.aux, fx.input_kinds(), settings, forced=fx.forced_ids
    )
