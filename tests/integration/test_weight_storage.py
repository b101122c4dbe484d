"""Weight storage dtypes (the loaders' weight_dtype) against the fp16 path, on CPU.

The reference is what a GPU user runs without the option: weights and compute in fp16. Each storage dtype keeps
the Linear/Embedding weights in bf16 / fp8 and computes in fp16 through ComfyUI's manual_cast layers. Over a
fixed prompt set (8 instructions, 8 templates, one image), teacher-forced with the reference's answer:
- token agreement: the share of decode steps whose greedy choice equals the reference's;
- the 32 image-token hidden states: max|x - ref| / max|ref| (the fixture README's metric), worst prompt;
- the BIM conditioning (the bridge in fp32 on those states): the same metric on its cond.
Models: the parity fixture's weights (LMM_EDIT_SMARTEDIT_FIXTURE) and a wide random model (LLaMA 1024 wide).
Run with ``-s`` to see the table; the bounds asserted are loose (fp8 keeps 3 or 2 mantissa bits). CI runs the
first LMM_EDIT_STORAGE_PROMPTS prompts (default 3: fp16 matrix products are slow on a CPU); README's figures are
of all 8.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch

from .smartedit_support import rel_err

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(os.environ.get("LMM_EDIT_SMARTEDIT_FIXTURE", ROOT.parent / "shared" / "fixtures" / "smartedit_parity"))
PROMPTS = [
    "Replace the red apple with a green pear.", "Make it snow.", "Remove the person on the left.",
    "Turn the sky into a sunset.", "Add a hat to the dog.", "Change the car's colour to blue.",
    "Make the photo look like a watercolour.", "Put a boat on the lake.",
]
COUNT = int(os.environ.get("LMM_EDIT_STORAGE_PROMPTS", "3"))
# (storage, bound on token disagreement, bound on the hidden-state error, bound on the conditioning error)
BOUNDS = {"bf16": (0.25, 0.1, 0.1), "fp8_e4m3fn": (0.5, 0.35, 0.35), "fp8_e5m2": (0.5, 0.6, 0.6)}


def _image():
    return torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(5))


def _runs(lmm, teacher=None):
    from lmm_edit.loaders.smartedit.encoder import encode_instruction

    return [encode_instruction(lmm, _image(), prompt, template=i, force_image_tokens=teacher is None,
                               teacher_ids=None if teacher is None else teacher[i].token_ids.tolist())
            for i, prompt in enumerate(PROMPTS[:COUNT])]


def measure(bundle, llava, clip, tokenizer, qformer_heads) -> dict[str, tuple[float, float, float]]:
    """storage -> (token agreement, worst hidden-state error, worst conditioning error) against fp16."""
    import comfy.ops

    from lmm_edit.loaders.smartedit import find_bundle, load_bridge, load_lmm
    from lmm_edit.loaders.smartedit.conditioning import bridge_condition
    from lmm_edit.loaders.storage import STORAGE_DTYPES

    found = find_bundle(bundle)
    bridge = load_bridge(found, torch.float32, qformer_heads)
    fp16 = load_lmm(found, llava, clip, tokenizer, torch.float16, operations=comfy.ops.disable_weight_init)
    reference = _runs(fp16)
    ref_conds = [bridge_condition(bridge, run, (8, 8)).cond for run in reference]
    figures = {}
    for name in BOUNDS:
        lmm = load_lmm(found, llava, clip, tokenizer, torch.float16, operations=comfy.ops.manual_cast,
                       storage=STORAGE_DTYPES[name])
        assert lmm.llm.layers[0].mlp.up_proj.weight.dtype == STORAGE_DTYPES[name]
        assert lmm.llm.norm.weight.dtype == torch.float16
        runs = _runs(lmm, reference)
        same = sum(a == b for run, ref in zip(runs, reference)
                   for a, b in zip(run.extras["model_choices"], ref.extras["model_choices"]))
        steps = sum(len(ref.extras["model_choices"]) for ref in reference)
        hidden = max(rel_err(run.hidden_states, ref.hidden_states) for run, ref in zip(runs, reference))
        cond = max(rel_err(bridge_condition(bridge, run, (8, 8)).cond, ref_cond)
                   for run, ref_cond in zip(runs, ref_conds))
        figures[name] = (same / steps, hidden, cond)
    return figures


def _check(label: str, figures: dict[str, tuple[float, float, float]]) -> None:
    print(f"\n{label}: weight storage vs the fp16 path ({min(COUNT, len(PROMPTS))} prompts, teacher-forced)")
    for name, (agreement, hidden, cond) in figures.items():
        print(f"  {name:11s} token agreement {agreement:6.1%}  image-token states {hidden:.4f}  BIM cond {cond:.4f}")
    for name, (agreement, hidden, cond) in figures.items():
        disagreement, hidden_bound, cond_bound = BOUNDS[name]
        assert 1 - agreement <= disagreement and hidden <= hidden_bound and cond <= cond_bound, (name, figures[name])
    # the narrower the mantissa, the larger the error: bf16 (7 bits) < e4m3 (3) < e5m2 (2)
    assert figures["bf16"][1] < figures["fp8_e4m3fn"][1] < figures["fp8_e5m2"][1]


def test_storage_dtypes_on_the_parity_fixture_weights(comfyui):
    if not (FIXTURE / "README.md").is_file():
        pytest.skip(f"SmartEdit parity fixture not found at {FIXTURE} (set LMM_EDIT_SMARTEDIT_FIXTURE)")
    ck = FIXTURE / "checkpoints"
    heads = json.loads((ck / "bert-base-uncased" / "config.json").read_text())["num_attention_heads"]
    _check("parity fixture", measure(ck / "SmartEdit-7B", ck / "LLaVA-7B-v1", ck / "clip-vit-large-patch14",
                                     ck / "vicuna-7b-v1-1" / "tokenizer.model", heads))


def test_storage_dtypes_on_a_wide_random_model(comfyui, tmp_path):
    from lmm_edit.selfcheck.smartedit_release import TinySizes, write_smartedit_release

    sizes = TinySizes(hidden=1024, heads=16, intermediate=2816, clip_hidden=256, clip_heads=4, clip_intermediate=1024)
    paths = write_smartedit_release(tmp_path, seed=0, sizes=sizes, safetensors_copies=False)
    _check("wide random model (LLaMA 1024 x 2 layers)", measure(paths.bundle, paths.llava, paths.clip, paths.tokenizer,
                                                                 sizes.qformer_heads))
