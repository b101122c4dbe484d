"""LMMEdit_MLLMLoader -> LMMEdit_LMMEncode -> LMMEdit_IAAImageBranch in real ComfyUI, on tiny VLMs of two families.

Reference for the encode: the pure-torch encoder (loaders/vlm, unit-tested against transformers)
called directly on the same folder, with what the node documents: greedy at temperature 0, the family's
template, an answer of up to 512 tokens, forced [MM] tokens.
"""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import IP2P_CHECKPOINT
from .image_branch_support import CONTEXT_DIM, UNetForwardRecorder, sample, write_into

NUM_MM_TOKENS = 8
INSTRUCTION = "make the sky red"
FAMILIES = {"tiny-llava-1.5": ("llava-1.5", 48), "tiny-qwen2-vl": ("qwen2-vl", 64)}  # folder: (family, LLM width)


@pytest.fixture(scope="module")
def mllm_folders(comfyui):
    from lmm_edit.selfcheck.vlm_models import write_tiny_llava, write_tiny_qwen2_vl

    root = comfyui.models_path / "lmm_edit" / "mllm"
    comfyui.folder_paths.add_model_folder_path("lmm_edit_mllm", str(root))
    write_into(root, "tiny-llava-1.5", write_tiny_llava)
    write_into(root, "tiny-qwen2-vl", write_tiny_qwen2_vl)
    (root / "not-a-vlm").mkdir(exist_ok=True)
    (root / "not-a-vlm" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root


@pytest.fixture(scope="module")
def image(comfyui, example_image):
    import nodes

    return nodes.LoadImage().load_image(example_image.name)[0]


def _load(name: str):
    from lmm_edit.nodes.vlm_loader import MLLMLoaderNode

    return MLLMLoaderNode.execute(name, NUM_MM_TOKENS, "auto").result[0]


def _encode(lmm, image):
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    return LMMEncodeNode.execute(lmm, image, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result


@pytest.mark.parametrize("folder", sorted(FAMILIES))
def test_loader_and_encode_node_give_the_encoders_mm_states(mllm_folders, image, folder):
    from lmm_edit.loaders.encoder import MAX_NEW_TOKENS
    from lmm_edit.loaders.vlm import encode_instruction, load_mllm

    family, width = FAMILIES[folder]
    lmm = _load(folder)
    assert lmm.family == family
    instruction, text = _encode(lmm, image)

    reference = encode_instruction(load_mllm(mllm_folders / folder, NUM_MM_TOKENS), image[0], INSTRUCTION,
                                   max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, seed=0, force_image_tokens=True)
    assert instruction.hidden_states.shape == (NUM_MM_TOKENS, width)
    assert (instruction.family, instruction.template, text) == (family, reference.template, reference.text)
    torch.testing.assert_close(instruction.hidden_states, reference.hidden_states, atol=1e-5, rtol=1e-5)


def test_a_folder_of_another_model_family_is_refused_naming_the_supported_ones(mllm_folders):
    from lmm_edit.loaders.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"config\.json.*llava-1\.5.*qwen2-vl.*'bert'"):
        _load("not-a-vlm")


def test_the_vlms_mm_states_drive_an_iaa_image_branch_in_one_batched_call(comfyui, mllm_folders, image,
                                                                         ip2p_checkpoint):
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    import nodes
    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.nodes.adapters import AdapterLoaderNode, IAAImageBranchNode
    from lmm_edit.nodes.guidance import build_guider
    from lmm_edit.selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG
    from lmm_edit.selfcheck.ip_adapter_files import tiny_iaa_state, write_adapter_file

    instruction, _ = _encode(_load("tiny-qwen2-vl"), image)
    layers = cross_attention_layers(dict(TINY_UNET_LDM_CONFIG, model_channels=320))
    state = tiny_iaa_state(llm_dim=FAMILIES["tiny-qwen2-vl"][1], mapper_dims=(40,), clip_dim=32,
                           layer_channels=[layer.channels for layer in layers], context_dim=CONTEXT_DIM)
    folder = comfyui.models_path / "ipadapter"
    comfyui.folder_paths.add_model_folder_path("ipadapter", str(folder))
    write_into(folder, "iaa_for_qwen2_vl.safetensors", lambda path: write_adapter_file(state, path))
    adapter = AdapterLoaderNode.execute("iaa_for_qwen2_vl.safetensors").result[0]

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(IP2P_CHECKPOINT)[:3]
    text = nodes.CLIPTextEncode().encode(clip, INSTRUCTION)[0]
    null = nodes.CLIPTextEncode().encode(clip, "")[0]
    positive, negative, latent = InstructPixToPixConditioning.execute(text, null, image, vae).result
    patched, positive, negative = IAAImageBranchNode.execute(model, adapter, positive, negative, 1.0, 0.0, 1.0,
                                                             instruction=instruction).result
    recorder = UNetForwardRecorder()
    out = sample(build_guider(recorder.install(patched), positive, negative, 7.5, 1.5), latent, steps=1)
    assert [call["x"].shape[0] for call in recorder.calls] == [3]
    assert torch.isfinite(out).all()


def test_the_loader_node_refuses_a_folder_with_a_missing_weight_listing_it(mllm_folders):
    from lmm_edit.loaders.errors import ModelFileError

    name = write_into(mllm_folders, "tiny-llava-missing-weight", _llava_without_one_weight)
    with pytest.raises(ModelFileError) as caught:
        _load(name)
    message = str(caught.value)
    assert str(mllm_folders / name / "model.safetensors") in message and "1 missing weights" in message
    assert "Fix: the download is incomplete" in message


def _llava_without_one_weight(folder):
    from safetensors.torch import load_file, save_file

    from lmm_edit.selfcheck.vlm_models import write_tiny_llava

    write_tiny_llava(folder)
    state = load_file(folder / "model.safetensors")
    del state[next(k for k in state if k.endswith("layers.0.self_attn.q_proj.weight") and "vision" not in k)]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_the_encode_node_reports_the_instructions_problem_and_takes_a_1x1_rgba_image(mllm_folders):
    from lmm_edit.loaders.instruction import InstructionError
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    lmm = _load("tiny-qwen2-vl")
    rgba = torch.tensor([[[[0.2, 0.4, 0.6, 0.0]]]])
    for instruction, problem in [("put <|image_pad|> here", "'<|image_pad|>' at character 4"),
                                 ("make it red " * 60, "context is 512 tokens")]:
        with pytest.raises(InstructionError, match=problem):
            LMMEncodeNode.execute(lmm, rgba, instruction, 0, 0.0, AUTO_TEMPLATE, True)
    encoded, _ = LMMEncodeNode.execute(lmm, rgba, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result
    assert encoded.hidden_states.shape == (NUM_MM_TOKENS, FAMILIES["tiny-qwen2-vl"][1])
