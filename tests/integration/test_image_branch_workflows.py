"""The image-branch example workflows, as the frontend saves them, execute end to end in real ComfyUI.

ip_adapter_edit.json: InstructPix2Pix + an IP-Adapter image prompt through core CLIPVisionLoader /
CLIPVisionEncode. ComfyUI builds CLIP vision at a fixed full size chosen from the key names, so the
test writes the smallest layout it detects (ViT-L/14-224, selfcheck/clip_vision_files.py) as a small
strided ``.bin`` and points the workflow's CLIPVisionLoader at it (the example names the ViT-H
``.safetensors`` users have); the tiny IP-Adapter reads its 768-wide image embeds.

insightedit.json: one LMM (SmartEdit's, tiny release-layout files) feeds both streams: Q-Former + BIM
conditioning (text) and an InsightEdit IAA image branch (image).
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from .conftest import IMAGE_SIZE
from .image_branch_support import ADAPTER_FILE, tiny_ip2p_adapter_state, write_into

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST_STEPS = 2  # the examples' 100 steps, shortened for CPU
CLIP_VISION_FILE = "tiny-clip-vit-l-14-224.bin"
EXAMPLE_CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
REFERENCE_IMAGE = "reference.png"
IAA_FILE = "insightedit_iaa_sd15.safetensors"
BUNDLE, LLAVA, CLIP_FILE = "SmartEdit-7B", "LLaVA-7B-v1", "clip-vit-large-patch14/model.safetensors"


def _prompt(comfyui, name: str) -> dict:
    prompt = comfyui.ui_to_api(json.loads((ROOT / "example_workflows" / name).read_text()))
    for node in prompt.values():
        if node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = FAST_STEPS
    return prompt


def _by_type(prompt: dict) -> dict:
    return {node["class_type"]: node for node in prompt.values()}


def _run_image(comfyui, prompt: dict) -> np.ndarray:
    result = comfyui.run(prompt)
    assert result.success, result.error
    # SaveImage's file; node previews (BIMConditioning's mask) go to the temp folder
    (item,) = [item for ui in result.outputs.values() for item in ui.get("images", []) if item["type"] == "output"]
    folder = comfyui.folder_paths.get_directory_by_type(item["type"])
    return np.asarray(Image.open(pathlib.Path(folder) / item["subfolder"] / item["filename"])).astype(float)


def _assert_edited(image: np.ndarray, source_path: pathlib.Path) -> None:
    width, height = IMAGE_SIZE
    assert image.shape == (height, width, 3)
    assert image.std() > 1.0, "the edit came out flat"
    source = np.asarray(Image.open(source_path).convert("RGB")).astype(float)
    assert np.abs(image - source).mean() > 1.0, "the output is the untouched source"


@pytest.fixture(scope="module")
def models(comfyui):
    folders = {}
    for category, sub in (("ipadapter", "ipadapter"), ("clip_vision", "clip_vision")):
        folders[category] = comfyui.models_path / sub
        folders[category].mkdir(parents=True, exist_ok=True)
        comfyui.folder_paths.add_model_folder_path(category, str(folders[category]))
    return folders


@pytest.fixture(scope="module")
def ip_adapter_files(comfyui, models, ip2p_checkpoint, example_image):
    from lmm_edit.selfcheck.clip_vision_files import write_clip_vision_vit_l
    from lmm_edit.selfcheck.ip_adapter_files import write_adapter_file

    write_into(models["ipadapter"], ADAPTER_FILE, lambda path: write_adapter_file(tiny_ip2p_adapter_state(), path))
    write_into(models["clip_vision"], CLIP_VISION_FILE, write_clip_vision_vit_l)
    reference = pathlib.Path(comfyui.folder_paths.get_input_directory()) / REFERENCE_IMAGE
    Image.open(example_image).transpose(Image.Transpose.ROTATE_180).save(reference)


def _ip_adapter_prompt(comfyui, weight: float | None = None) -> dict:
    prompt = _prompt(comfyui, "ip_adapter_edit.json")
    nodes = _by_type(prompt)
    nodes["CLIPVisionLoader"]["inputs"]["clip_name"] = CLIP_VISION_FILE
    if weight is not None:
        nodes["LMMEdit_IAAImageBranch"]["inputs"]["weight"] = weight
    return prompt


def test_ip_adapter_example_converts_to_the_intended_graph(comfyui):
    prompt = _prompt(comfyui, "ip_adapter_edit.json")
    nodes = _by_type(prompt)
    branch = nodes["LMMEdit_IAAImageBranch"]["inputs"]
    assert (branch["weight"], branch["start_percent"], branch["end_percent"]) == (0.6, 0.0, 1.0)
    encode_id = next(i for i, n in prompt.items() if n["class_type"] == "CLIPVisionEncode")
    assert branch["clip_vision_output"] == [encode_id, 0]
    assert nodes["CLIPVisionLoader"]["inputs"]["clip_name"] == EXAMPLE_CLIP_VISION
    assert nodes["LMMEdit_AdapterLoader"]["inputs"]["adapter_name"] == ADAPTER_FILE
    guider = nodes["LMMEdit_DualCFGGuider"]["inputs"]
    branch_id = next(i for i, n in prompt.items() if n["class_type"] == "LMMEdit_IAAImageBranch")
    assert guider["model"] == [branch_id, 0] and guider["positive"] == [branch_id, 1]


def test_ip_adapter_example_edits_with_the_image_prompt(comfyui, ip_adapter_files, example_image):
    with_prompt = _run_image(comfyui, _ip_adapter_prompt(comfyui))
    _assert_edited(with_prompt, example_image)
    without = _run_image(comfyui, _ip_adapter_prompt(comfyui, weight=0.0))
    assert np.abs(with_prompt - without).mean() > 0.5, "the image prompt had no effect"


@pytest.fixture(scope="module")
def insightedit_files(comfyui, tmp_path_factory, models, ip2p_checkpoint, example_image):
    """SmartEdit's tiny release files where users put them, and an IAA fitting its UNet and LLM width."""
    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode
    from lmm_edit.selfcheck.ip_adapter_files import tiny_iaa_state, write_adapter_file
    from lmm_edit.selfcheck.smartedit_release import TinySizes, write_smartedit_release

    root = comfyui.models_path
    places = {"bundle": root / "lmm_edit" / "smartedit" / BUNDLE, "llava": root / "lmm_edit" / "llava" / LLAVA,
              "clip": root / "clip_vision" / CLIP_FILE.split("/")[0]}
    if not all(path.exists() for path in places.values()):
        # the widths ComfyUI detects as SD15_instructpix2pix (as test_smartedit_nodes.py writes them)
        sizes = TinySizes(qformer_hidden=768, qformer_layers=2, qformer_heads=12, unet_channels=(320, 320))
        written = write_smartedit_release(tmp_path_factory.mktemp("smartedit"), seed=0, sizes=sizes,
                                          safetensors_copies=False)
        for name, target in places.items():
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(getattr(written, name)), str(target))
    model = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result[0]
    layers = cross_attention_layers(model.model.model_config.unet_config)
    llm_width = json.loads((places["llava"] / "config.json").read_text())["hidden_size"]
    state = tiny_iaa_state(llm_dim=llm_width, mapper_dims=(96,), clip_dim=64, num_tokens=4,
                           layer_channels=[layer.channels for layer in layers], context_dim=768, seed=2)
    write_into(models["ipadapter"], IAA_FILE, lambda path: write_adapter_file(state, path))


def test_insightedit_example_converts_to_two_streams_from_one_lmm(comfyui):
    prompt = _prompt(comfyui, "insightedit.json")
    nodes = _by_type(prompt)
    encode_id = next(i for i, n in prompt.items() if n["class_type"] == "LMMEdit_LMMEncode")
    assert nodes["LMMEdit_BIMConditioning"]["inputs"]["instruction"] == [encode_id, 0]
    assert nodes["LMMEdit_IAAImageBranch"]["inputs"]["instruction"] == [encode_id, 0]
    assert nodes["LMMEdit_AdapterLoader"]["inputs"]["adapter_name"] == IAA_FILE


def test_insightedit_example_edits_with_both_streams(comfyui, insightedit_files, example_image):
    image = _run_image(comfyui, _prompt(comfyui, "insightedit.json"))
    _assert_edited(image, example_image)
    prompt = _prompt(comfyui, "insightedit.json")
    _by_type(prompt)["LMMEdit_IAAImageBranch"]["inputs"]["weight"] = 0.0
    assert np.abs(image - _run_image(comfyui, prompt)).mean() > 0.5, "the IAA image stream had no effect"


def test_plus_adapter_takes_its_unconditional_tokens_from_clip_of_a_blank_image(comfyui, ip_adapter_files, models,
                                                                                  tiny_ip2p, example_image):
    """Reference: diffusers' IPAdapterPlusImageProjection on the same Resampler weights, fed CLIP's penultimate
    states of the reference image (conditional) and of an all-zero pixel_values (diffusers/tencent unconditional)."""
    import torch

    import nodes
    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.nodes.adapters import AdapterLoaderNode, IAAImageBranchNode
    from lmm_edit.selfcheck.clip_vision_files import VIT_L_HIDDEN
    from lmm_edit.selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG
    from lmm_edit.selfcheck.ip_adapter_files import tiny_ip_adapter_state, write_adapter_file

    layers = cross_attention_layers(dict(TINY_UNET_LDM_CONFIG, model_channels=320))
    state = tiny_ip_adapter_state("plus", layer_channels=[layer.channels for layer in layers], context_dim=768,
                                  clip_dim=VIT_L_HIDDEN, seed=4)
    write_into(models["ipadapter"], "ip-adapter-plus_sd15.bin", lambda path: write_adapter_file(state, path))
    adapter = AdapterLoaderNode.execute("ip-adapter-plus_sd15.bin").result[0]
    clip_vision = nodes.CLIPVisionLoader().load_clip(CLIP_VISION_FILE)[0]
    image = nodes.LoadImage().load_image(REFERENCE_IMAGE)[0]
    encoded = nodes.CLIPVisionEncode().encode(clip_vision, image, "center")[0]
    model = nodes.CheckpointLoaderSimple().load_checkpoint("instruct-pix2pix-00-22000.safetensors")[0]
    conditioning = [[torch.zeros(1, 77, 768), {}]]

    with pytest.raises(ValueError, match="connect clip_vision"):
        IAAImageBranchNode.execute(model, adapter, conditioning, conditioning, 1.0, 0.0, 1.0,
                                   clip_vision_output=encoded)
    _, positive, negative = IAAImageBranchNode.execute(model, adapter, conditioning, conditioning, 1.0, 0.0, 1.0,
                                                       clip_vision_output=encoded, clip_vision=clip_vision).result

    projection = tiny_ip2p.unet._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"])
    with torch.no_grad():
        blank = clip_vision.model(pixel_values=torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1]
        expected_cond = projection(encoded["penultimate_hidden_states"])
        expected_uncond = projection(blank)
    tokens = "lmm_edit_image_tokens_0"
    torch.testing.assert_close(positive[0][1]["model_conds"][tokens].cond, expected_cond, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(negative[0][1]["model_conds"][tokens].cond, expected_uncond, atol=1e-4, rtol=1e-4)
