"""SmartEdit's three nodes in real ComfyUI, on tiny weights in the release layout.

The bundle, LLaVA-1.1 base and CLIP tower come from the release-layout factory, with the widths
ComfyUI's checkpoint detection needs for an SD1.5 InstructPix2Pix UNet (320 channels, 768-wide
cross-attention, so a 768-wide Q-Former). The VAE and the null-text CLIP come from the tiny
instruct-pix2pix checkpoint, as the reference takes them from timbrooks/instruct-pix2pix.
Reference: diffusers' UNet2DConditionModel with v' added after conv_in (as the reference's
UNet2DConditionModel_ZeroConv); the parity fixture made by the reference code is in
test_smartedit_fixture_parity.py.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import IMAGE_SIZE, IP2P_CHECKPOINT
from .smartedit_support import FP32_TOL, eps_of, rel_err, sample_first_step, seeded_noise

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUNDLE, LLAVA = "SmartEdit-7B", "LLaVA-7B-v1"  # the example workflow's defaults (release / reference names)
CLIP_FOLDER = "clip-vit-large-patch14"
CLIP_FILE = f"{CLIP_FOLDER}/model.safetensors"
INSTRUCTION = "Replace the red apple with a green pear."
FAST_STEPS = 2  # the example's 100 steps, shortened for CPU
SMARTEDIT_NODES = ("LMMEdit_SmartEditLoader", "LMMEdit_LMMEncode", "LMMEdit_BIMConditioning")


def _sizes():
    from lmm_edit.selfcheck.smartedit_release import TinySizes

    # 320 UNet channels and a 768-wide context: what ComfyUI detects as SD15_instructpix2pix
    return TinySizes(qformer_hidden=768, qformer_layers=2, qformer_heads=12, unet_channels=(320, 320))



@pytest.fixture(scope="module")
def smartedit_files(comfyui, tmp_path_factory):
    """The factory's release files moved where a user puts them: models/lmm_edit/..., models/clip_vision/."""
    from lmm_edit.selfcheck.smartedit_release import write_smartedit_release

    written = write_smartedit_release(tmp_path_factory.mktemp("smartedit"), seed=0, sizes=_sizes(), safetensors_copies=False)
    models = comfyui.models_path
    places = {
        written.bundle: models / "lmm_edit" / "smartedit" / BUNDLE,
        written.llava: models / "lmm_edit" / "llava" / LLAVA,
        written.clip: models / "clip_vision" / CLIP_FOLDER,
    }
    for source, target in places.items():
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
    comfyui.folder_paths.add_model_folder_path("clip_vision", str(models / "clip_vision"), is_default=True)
    return written


@pytest.fixture(scope="module")
def graph(comfyui, smartedit_files, ip2p_checkpoint, example_image):
    """Loader, encode and BIM nodes run one after the other, as the example workflow wires them."""
    import nodes
    from lmm_edit.nodes.conditioning import BIMConditioningNode
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode
    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    model, lmm, bridge = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result
    _, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(IP2P_CHECKPOINT)[:3]
    image = nodes.LoadImage().load_image(example_image.name)[0]
    null_text = nodes.CLIPTextEncode().encode(clip, "")[0]
    instruction, text = LMMEncodeNode.execute(lmm, image, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result
    positive, negative, latent, mask = BIMConditioningNode.execute(bridge, instruction, vae, image, null_text).result
    return dict(model=model, lmm=lmm, bridge=bridge, vae=vae, clip=clip, image=image, null_text=null_text,
                instruction=instruction, positive=positive, negative=negative, latent=latent, mask=mask)


# --- registration and the example workflow -----------------------------------------------------


def test_the_three_smartedit_nodes_register_and_list_the_release_folders(comfyui, smartedit_files):
    assert set(SMARTEDIT_NODES) <= set(comfyui.pack_node_ids)
    inputs = comfyui.node_info("LMMEdit_SmartEditLoader")["input"]["required"]
    assert BUNDLE in inputs["bundle"][1]["options"]
    assert LLAVA in inputs["llava"][1]["options"]
    assert CLIP_FILE in inputs["clip_vision"][1]["options"]


def _example_prompt(comfyui) -> dict:
    return comfyui.ui_to_api(json.loads((ROOT / "example_workflows" / "smartedit.json").read_text()))


def test_smartedit_example_converts_to_the_reference_settings(comfyui):
    by_type = {node["class_type"]: node["inputs"] for node in _example_prompt(comfyui).values()}
    assert by_type["LMMEdit_SmartEditLoader"]["bundle"] == BUNDLE
    assert by_type["LMMEdit_SmartEditLoader"]["llava"] == LLAVA
    assert by_type["LMMEdit_SmartEditLoader"]["clip_vision"] == CLIP_FILE
    assert by_type["LMMEdit_LMMEncode"]["temperature"] == 0.7  # test/DS_SmartEdit_test.py default
    assert (by_type["LMMEdit_DualCFGGuider"]["text_cfg"], by_type["LMMEdit_DualCFGGuider"]["image_cfg"]) == (7.5, 1.5)
    assert by_type["KSamplerSelect"]["sampler_name"] == "euler_ancestral"  # EulerAncestralDiscreteScheduler
    assert by_type["BasicScheduler"]["steps"] == 100
    assert by_type["CLIPTextEncode"]["text"] == ""  # the reference's null text
    assert by_type["CheckpointLoaderSimple"]["ckpt_name"] == IP2P_CHECKPOINT  # VAE + CLIP of timbrooks/instruct-pix2pix


def _images_by_node(comfyui, result) -> dict[str, np.ndarray]:
    out = {}
    for node_id, ui in result.outputs.items():
        for item in ui.get("images", []):
            folder = pathlib.Path(comfyui.folder_paths.get_directory_by_type(item["type"])) / item["subfolder"]
            out[node_id] = np.asarray(Image.open(folder / item["filename"]).convert("RGB"))
    return out


def test_smartedit_example_edits_a_non_square_image_end_to_end(comfyui, smartedit_files, ip2p_checkpoint, example_image):
    prompt = _example_prompt(comfyui)
    for node in prompt.values():
        if node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = FAST_STEPS
    comfyui.executor.reset()
    result = comfyui.run(prompt)
    assert result.success, result.error
    ids = {node["class_type"]: node_id for node_id, node in prompt.items()}
    images = _images_by_node(comfyui, result)
    width, height = IMAGE_SIZE
    edited, region = images[ids["SaveImage"]], images[ids["PreviewImage"]]
    assert edited.shape == region.shape == (height, width, 3)
    assert edited.std() > 1.0, "the edit came out flat"
    source = np.asarray(Image.open(example_image).convert("RGB"))
    assert np.abs(edited.astype(float) - source).mean() > 1.0, "the output is the untouched source"
    assert result.outputs[ids["LMMEdit_LMMEncode"]]["lmm_edit_text"], "the encode node shows no text"


@pytest.mark.parametrize("choice, dtype", [("auto", torch.float32), ("bf16", torch.bfloat16)])
def test_loader_dtype_applies_to_the_lmm_bridge_and_unet(comfyui, smartedit_files, choice, dtype):
    """auto on CPU is the reference's fp32 (ComfyUI's choice for the UNet); a named dtype applies to all three."""
    import comfy.model_management

    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    model, lmm, bridge = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, choice, 0).result
    assert lmm.patcher.model.llm.embed_tokens.weight.dtype == dtype
    assert lmm.patcher.model.vision.patch_embedding.weight.dtype == dtype
    assert bridge.model.dtype == dtype
    assert model.model.get_dtype() == dtype
    assert lmm.patcher.load_device == bridge.load_device == comfy.model_management.text_encoder_device()


# --- the BIM residual in the UNet ---------------------------------------------------------------


def test_bim_conditioning_outputs_have_the_source_size(graph):
    width, height = IMAGE_SIZE
    assert graph["latent"]["samples"].shape == (1, 4, height // 8, width // 8)
    # the edit region is the bridge's 16 x 16 token-to-image attention stretched over the image
    from lmm_edit.loaders.smartedit import bridge_condition

    attention = bridge_condition(graph["bridge"].model, graph["instruction"], (height // 8, width // 8)).attention
    expected = torch.nn.functional.interpolate(attention[:, None], size=(height, width), mode="bilinear")[:, 0]
    torch.testing.assert_close(graph["mask"], expected)
    for conditioning in (graph["positive"], graph["negative"]):
        (_, options), = conditioning
        assert options["concat_latent_image"].shape == graph["latent"]["samples"].shape
        assert options["model_conds"]["lmm_edit_bim_residual"].cond.shape == (1, 320, height // 8, width // 8)


def test_bim_residual_is_added_after_conv_in_in_all_three_branches_of_one_batched_call(graph):
    """The residual the three branches carry is the bridge's v', and conv_in's output grows by exactly it."""
    from lmm_edit.nodes.bim_residual import BIM_RESIDUAL_KEY

    seen = []

    def before(h, transformer_options):
        if transformer_options["block"] == ("input", 0):
            seen.append({"before": h.clone(), "order": list(transformer_options["cond_or_uncond"]),
                         "residual": transformer_options.get(BIM_RESIDUAL_KEY)})
        return h

    def after(h, transformer_options):
        if transformer_options["block"] == ("input", 0):
            seen[-1]["after"] = h.clone()
        return h

    model = graph["model"].clone()
    patches = model.model_options["transformer_options"]["patches"]
    patches["input_block_patch"] = [before, *patches["input_block_patch"], after]
    calls, _ = sample_first_step(model, graph["positive"], graph["negative"], seeded_noise(graph["latent"]), steps=2)
    assert [len(call["order"]) for call in calls] == [3, 3], "three branches, one UNet call per step"
    v_prime = graph["positive"][0][1]["model_conds"][BIM_RESIDUAL_KEY].cond
    for record in seen:
        assert sorted(record["order"]) == [0, 1, 2]
        assert torch.equal(record["residual"], v_prime.expand(3, -1, -1, -1))
        torch.testing.assert_close(record["after"] - record["before"], record["residual"].float(), rtol=0, atol=1e-5)


def test_plain_instructpix2pix_conditioning_leaves_the_smartedit_unet_untouched(graph, smartedit_files):
    """The same MODEL without the key (core InstructPixToPixConditioning) equals the UNet loaded without our patches."""
    import comfy.sd
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    import nodes
    from lmm_edit.loaders.smartedit import find_bundle, load_unet_ldm

    bundle = find_bundle(smartedit_files_dir(BUNDLE))
    plain = comfy.sd.load_diffusion_model_state_dict(load_unet_ldm(bundle))  # no router, no patch
    text = nodes.CLIPTextEncode().encode(graph["clip"], INSTRUCTION)[0]
    positive, negative, latent = InstructPixToPixConditioning.execute(text, graph["null_text"], graph["image"], graph["vae"]).result
    noise = seeded_noise(latent)
    _, ours = sample_first_step(graph["model"], positive, negative, noise, steps=2)
    _, reference = sample_first_step(plain, positive, negative, noise, steps=2)
    assert torch.equal(ours, reference)


def smartedit_files_dir(name: str) -> pathlib.Path:
    from lmm_edit.nodes.folders import resolve_model_subfolder

    return pathlib.Path(resolve_model_subfolder("lmm_edit_smartedit", name))


def _diffusers_unet(state: dict[str, torch.Tensor], channels: tuple[int, ...], context: int):
    """diffusers' UNet2DConditionModel in SD1.5's settings (8 heads, 32 norm groups) with 8 input channels."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    unet = UNet2DConditionModel(
        in_channels=8, out_channels=4, block_out_channels=channels, layers_per_block=1, cross_attention_dim=context,
        down_block_types=["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1), attention_head_dim=8, norm_num_groups=32,
    )
    unet.load_state_dict({k[len("unet."):]: v for k, v in state.items()}, strict=True)
    return unet.eval()


def test_loader_unet_matches_diffusers_with_the_residual_added_after_conv_in(graph, smartedit_files):
    sizes = smartedit_files.sizes
    calls, _ = sample_first_step(graph["model"], graph["positive"], graph["negative"], seeded_noise(graph["latent"]))
    (call,) = calls
    model_sampling = graph["model"].get_model_object("model_sampling")
    sigma = call["sigma"]
    residual = call["c"]["lmm_edit_bim_residual"].float()
    unet = _diffusers_unet(smartedit_files.tensors["unet"], sizes.unet_channels, sizes.qformer_hidden)
    unet.conv_in.register_forward_hook(lambda _module, _inputs, out: out + residual)
    scaled = call["x"] / (sigma.reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5
    with torch.no_grad():
        reference = unet(torch.cat([scaled, call["c"]["c_concat"]], dim=1), model_sampling.timestep(sigma),
                         encoder_hidden_states=call["c"]["c_crossattn"]).sample
    assert rel_err(eps_of(call), reference) < FP32_TOL


# --- the encode node ----------------------------------------------------------------------------


def test_encode_node_says_when_the_image_tokens_are_not_in_order(graph):
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    free = LMMEncodeNode.execute(graph["lmm"], graph["image"], INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, False)
    instruction, _ = free.result
    assert not instruction.image_tokens_in_order and not instruction.forced  # random weights write no such order
    (message,) = free.ui["lmm_edit_text"]
    assert "force_image_tokens" in message
    forced, _ = LMMEncodeNode.execute(graph["lmm"], graph["image"], INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result
    assert forced.forced and not forced.image_tokens_in_order
    assert forced.hidden_states.shape == (32, _sizes().hidden)


def test_encode_node_stops_between_tokens_when_interrupted(graph, monkeypatch):
    import comfy.model_management
    import comfy.utils

    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    ticks = []

    def tick_then_interrupt(self, value, total=None, preview=None):
        ticks.append(value)
        comfy.model_management.interrupt_current_processing()

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", tick_then_interrupt)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        LMMEncodeNode.execute(graph["lmm"], graph["image"], INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True)
    assert ticks == [1], "decoding went on after the interrupt"
    assert not comfy.model_management.processing_interrupted()


# --- errors ------------------------------------------------------------------------------------


def _loader_prompt(bundle: str, llava: str) -> dict:
    return {
        "1": {"class_type": "LMMEdit_SmartEditLoader",
              "inputs": {"bundle": bundle, "llava": llava, "clip_vision": CLIP_FILE, "dtype": "auto", "qformer_heads": 0}},
        "2": {"class_type": "LMMEdit_LMMEncode", "inputs": {"lmm": ["1", 1], "image": ["3", 0], "instruction": "x",
              "seed": 0, "temperature": 0.0, "template": "auto (from seed)", "force_image_tokens": True}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


@pytest.mark.parametrize("case, expected", [
    ("not_a_bundle", r"expected a SmartEdit bundle folder holding LLM-<step>/.*Fix: download the whole SmartEdit"),
    ("llava_1_5", r"expected LLaVA-1.1 .*found a LLaVA-1.5 or later model.*Fix:"),
])
def test_bad_inputs_surface_the_loader_error_on_the_node(comfyui, smartedit_files, example_image, case, expected):
    import re

    models = comfyui.models_path / "lmm_edit"
    bundle, llava = BUNDLE, LLAVA
    if case == "not_a_bundle":
        bundle = "not-a-bundle"
        (models / "smartedit" / bundle).mkdir(exist_ok=True)
        (models / "smartedit" / bundle / "model.safetensors").write_bytes(b"")
    else:
        llava = "LLaVA-1.5-7b"
        target = models / "llava" / llava
        if not target.exists():
            shutil.copytree(models / "llava" / LLAVA, target)
            config = json.loads((target / "config.json").read_text())
            config.update(mm_projector_type="mlp2x_gelu", mm_vision_tower="openai/clip-vit-large-patch14-336")
            (target / "config.json").write_text(json.dumps(config))
    comfyui.executor.reset()
    result = comfyui.run(_loader_prompt(bundle, llava))
    assert not result.success
    assert result.error["node_id"] == "1"
    assert re.search(expected, result.error["exception_message"], re.DOTALL), result.error["exception_message"]
