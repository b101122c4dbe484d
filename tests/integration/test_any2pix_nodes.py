"""InstructAny2Pix's loader, encode and fuse nodes in real ComfyUI, on the tiny release of selfcheck/any2pix_models.py.

References: the pure-torch stages of loaders/any2pix (each parity-tested against the reference's fixture in
tests/unit/any2pix) called directly on the same files; the marker rules of the reference's `serve.py`.
"""

from __future__ import annotations

import asyncio
import math
import shutil

import pytest
import torch

from lmm_edit.loaders.any2pix.sampling import DEFAULT_MAX_NEW_TOKENS
from lmm_edit.selfcheck.any2pix_models import EMBED

from .any2pix_support import IMAGEBIND, LLM, NO_IM_GEN_LLM, PRIOR, ensure_release
from .conftest import EXAMPLE_IMAGE

INSTRUCTION = "add [audio1] to [image1]"


@pytest.fixture(scope="module")
def any2pix_release(comfyui, tmp_path_factory):
    return ensure_release(comfyui, tmp_path_factory)


@pytest.fixture(scope="module")
def any2pix(any2pix_release):
    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    return Any2PixLoaderNode.execute(LLM, IMAGEBIND, PRIOR, "fp32").result[0]


def _sound(rate: int = 44100, channels: int = 2, seconds: float = 2.5, freq: float = 440.0) -> dict:
    t = torch.arange(int(rate * seconds)) / rate
    wave = 0.3 * torch.sin(2 * math.pi * freq * t)
    return {"waveform": wave.expand(1, channels, -1).clone(), "sample_rate": rate}


def _image(comfyui, example_image):
    import nodes

    return nodes.LoadImage().load_image(EXAMPLE_IMAGE)[0]


def _encode(any2pix, instruction=INSTRUCTION, seed=0, **inputs):
    from lmm_edit.nodes.any2pix_encode import CAPTION_SOURCES, Any2PixEncodeNode

    return Any2PixEncodeNode.execute(any2pix, instruction, seed, 0.3, CAPTION_SOURCES[0], **inputs).result


def test_loader_lists_the_release_parts(comfyui, any2pix_release):
    from lmm_edit.nodes.any2pix_loader import _options

    assert LLM in _options("llm") and NO_IM_GEN_LLM in _options("llm")
    assert IMAGEBIND in _options("imagebind") and PRIOR in _options("prior")


def test_loader_gives_offloadable_model_patchers(any2pix):
    import comfy.model_patcher

    for patcher in (any2pix.llm, any2pix.imagebind, any2pix.prior):
        assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
        assert patcher.offload_device is not None


def test_missing_file_names_the_folder_and_fix(any2pix_release):
    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    with pytest.raises(FileNotFoundError, match="not found in .*any2pix.*Get it with: python -m lmm_edit download any2pix"):
        Any2PixLoaderNode.execute("nowhere/llm", IMAGEBIND, PRIOR, "fp32")


def test_a_folder_of_another_model_is_refused_with_the_fix(comfyui, any2pix_release):
    import json

    from lmm_edit.loaders.errors import ModelFileError
    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    vicuna = any2pix_release / "plain-vicuna"
    if not vicuna.exists():
        shutil.copytree(any2pix_release / "llm-retrained", vicuna)
        config = json.loads((vicuna / "config.json").read_text())
        (vicuna / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ModelFileError, match="model_type 'instructany2pix'.*llm-retrained"):
        Any2PixLoaderNode.execute(f"{any2pix_release.name}/plain-vicuna", IMAGEBIND, PRIOR, "fp32")


def test_encode_matches_the_loader_stages(comfyui, example_image, any2pix, any2pix_release):
    from lmm_edit.loaders.any2pix import (
        SamplingSettings,
        comfy_audio_rows,
        embed_audios,
        embed_images,
        encode_instruction,
        load_imagebind,
        load_llm,
        read_generation_config,
        renormalize_inputs,
    )

    image, sound = _image(comfyui, example_image), _sound()
    encoding, caption, base = _encode(any2pix, image1=image, audio1=sound)
    assert caption == "red" and encoding.kinds == ("audio", "image") and encoding.base_input == 1
    assert torch.equal(base, image[:1])
    # the same stages called directly (loaders/any2pix, parity-tested against the reference)
    model, tokenizer = load_llm(any2pix_release / "llm-retrained")
    imagebind = load_imagebind(any2pix_release / "imagebind_huge.pth")
    aux = renormalize_inputs(torch.cat([embed_audios(imagebind, comfy_audio_rows(sound)), embed_images(imagebind, [image[0]])]))
    settings = SamplingSettings.from_generation_config(read_generation_config(any2pix_release / "llm-retrained"), tokenizer.ids.eos)
    direct = encode_instruction(model, tokenizer, "add <video> to <video>", aux, ["audio", "image"], settings,
                                torch.Generator().manual_seed(0))
    torch.testing.assert_close(encoding.inputs, aux, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(encoding.image_embeds, direct.image_embeds, rtol=1e-5, atol=1e-5)


def test_encode_follows_the_instruction_and_the_sound(comfyui, example_image, any2pix):
    image = _image(comfyui, example_image)
    a = _encode(any2pix, image1=image, audio1=_sound())[0].image_embeds
    b = _encode(any2pix, "put [audio1] into [image1]", image1=image, audio1=_sound())[0].image_embeds
    c = _encode(any2pix, image1=image, audio1=_sound(rate=8000, channels=1, freq=97.0))[0].image_embeds
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4


@pytest.mark.parametrize(("instruction", "inputs", "message"), [
    ("add [audio1] to [image1]", ("image1",), "names [audio1] but no audio is connected to audio1"),
    ("make [image1] louder", ("image1", "audio1"), "audio1 is connected but the instruction does not name it"),
    ("make it louder", ("image1",), "image1 is connected but the instruction does not name it"),
    ("add [audio2]", ("audio2",), "the instruction names no image"),
    ("add [sound] to [image1]", ("image1",), "[sound] is not an input marker"),
])
def test_marker_errors_at_validation(comfyui, any2pix_release, example_image, instruction, inputs, message):
    prompt = {
        "1": {"class_type": "LMMEdit_Any2PixLoader", "inputs": {"llm": LLM, "imagebind": IMAGEBIND, "prior": PRIOR,
                                                               "dtype": "fp32"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": "none.wav"}},
        "4": {"class_type": "LMMEdit_Any2PixEncode", "inputs": {
            "any2pix": ["1", 0], "instruction": instruction, "seed": 0, "temperature": 0.3,
            "caption_from": "whole sequence (reference)",
            **{name: ["2", 0] if name.startswith("image") else ["3", 0] for name in inputs}}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}},
    }
    _, _, _, node_errors = asyncio.run(comfyui.execution.validate_prompt("check", prompt, None))
    details = " ".join(e["details"] for e in node_errors.get("4", {}).get("errors", []))
    assert message in details and "LMMEdit_Any2PixEncode" in details, node_errors


def test_a_wrong_input_type_is_refused_at_validation(comfyui, any2pix_release, example_image):
    prompt = {
        "1": {"class_type": "LMMEdit_Any2PixLoader", "inputs": {"llm": LLM, "imagebind": IMAGEBIND, "prior": PRIOR,
                                                               "dtype": "fp32"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "4": {"class_type": "LMMEdit_Any2PixEncode", "inputs": {
            "any2pix": ["1", 0], "instruction": INSTRUCTION, "seed": 0, "temperature": 0.3,
            "caption_from": "whole sequence (reference)", "image1": ["2", 0], "audio1": ["2", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}},
    }
    _, _, _, node_errors = asyncio.run(comfyui.execution.validate_prompt("check", prompt, None))
    details = " ".join(e["details"] for e in node_errors.get("4", {}).get("errors", []))
    assert "audio1 needs a AUDIO output; IMAGE is connected" in details, node_errors


def test_marker_error_when_run_directly(comfyui, example_image, any2pix):
    from lmm_edit.loaders.any2pix import MarkerError

    with pytest.raises(MarkerError, match=r"names \[image2\] but no image is connected to image2"):
        _encode(any2pix, "blend [image1] and [image2]", image1=_image(comfyui, example_image))


def test_answer_without_im_gen_is_a_clear_error(comfyui, example_image, any2pix_release):
    from lmm_edit.loaders.any2pix import AnswerError
    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    models = Any2PixLoaderNode.execute(NO_IM_GEN_LLM, IMAGEBIND, PRIOR, "fp32").result[0]
    with pytest.raises(AnswerError, match="LMMEdit_Any2PixEncode: the LLM answered without <im_gen>.*'no</s>'"):
        _encode(models, image1=_image(comfyui, example_image), audio1=_sound())


def test_fuse_presets_and_the_loader_stages(comfyui, example_image, any2pix, any2pix_release):
    from lmm_edit.loaders.any2pix import DEMO, fuse, load_prior, prior_input, refine
    from lmm_edit.nodes.any2pix_fuse import CUSTOM, PRIOR_MODES, Any2PixFuseNode

    encoding = _encode(any2pix, image1=_image(comfyui, example_image), audio1=_sound())[0]
    reference_mode, direct_mode = list(PRIOR_MODES)

    def run(preset, h=(0.0, 0.4, 1.0), norm=20.0, mode=reference_mode):
        return Any2PixFuseNode.execute(any2pix, encoding, preset, *h, norm, 6.5, 2.0, 10.0, mode).result[0]

    reference = run("reference __call__")
    assert reference.shape == (1, EMBED) and torch.isfinite(reference).all()
    assert abs(float(reference.norm()) - 20.0) < 1e-4
    torch.testing.assert_close(run(CUSTOM), reference)
    torch.testing.assert_close(run(CUSTOM, DEMO.h, DEMO.norm), run("gradio demo"))
    assert (run("gradio demo") - reference).abs().max() > 1e-3
    torch.testing.assert_close(run("reference __call__", mode=direct_mode), reference, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="h0, h1 and h2 are all 0"):
        run(CUSTOM, (0.0, 0.0, 0.0))
    bundle = load_prior(any2pix_release / "prior" / "model.bin")
    src = prior_input(encoding.image_embeds)
    y = refine(bundle.prior, src, bundle.prior.text_states(torch.tensor([bundle.empty_text_ids])), mode="direct").y
    torch.testing.assert_close(reference, fuse(encoding.base_embed, encoding.image_embeds, y).reshape(1, -1),
                               rtol=0, atol=1e-4)


def test_the_llm_streams_under_no_vram_and_encodes_as_when_whole(comfyui, example_image, any2pix_release, monkeypatch):
    """ComfyUI's NO_VRAM state on a device it takes for a GPU: the LLM and ImageBind are loaded partially (every
    castable layer streamed), the LLM with its KV cache reserved, and the encode equals the whole model's; "Unload models" frees it."""
    import comfy.model_management as mm

    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    image, sound = _image(comfyui, example_image), _sound()
    expected = _encode(Any2PixLoaderNode.execute(LLM, IMAGEBIND, PRIOR, "fp32").result[0], image1=image, audio1=sound)
    mm.unload_all_models()
    reserved = {}
    load_models_gpu = mm.load_models_gpu

    def spy(models, memory_required=0, **kwargs):
        reserved[models[0]] = memory_required
        return load_models_gpu(models, memory_required=memory_required, **kwargs)

    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    monkeypatch.setattr(mm, "load_models_gpu", spy)
    streamed = Any2PixLoaderNode.execute(LLM, IMAGEBIND, PRIOR, "fp32").result[0]
    got = _encode(streamed, image1=image, audio1=sound)
    llm, imagebind = streamed.llm.model, streamed.imagebind.model
    for module in (llm, imagebind):
        castable = [m for m in module.modules() if hasattr(m, "comfy_cast_weights")]
        assert module.model_lowvram and castable and all(m.comfy_cast_weights for m in castable)
    assert imagebind.device == streamed.imagebind.load_device  # inputs go where ComfyUI loaded it
    assert reserved[streamed.llm] == llm.working_memory(DEFAULT_MAX_NEW_TOKENS) > 0
    torch.testing.assert_close(got[0].image_embeds, expected[0].image_embeds, rtol=0, atol=0)
    assert got[1] == expected[1]  # the caption
    mm.unload_all_models()
    assert streamed.llm not in mm.loaded_models() and not llm.model_lowvram and not imagebind.model_lowvram


def test_fp8_weight_storage_keeps_the_llm_decoder_in_fp8_and_encodes_close_to_the_compute_dtype(
        comfyui, example_image, any2pix_release):
    from lmm_edit.nodes.any2pix_loader import Any2PixLoaderNode

    image, sound = _image(comfyui, example_image), _sound()
    whole = Any2PixLoaderNode.execute(LLM, IMAGEBIND, PRIOR, "fp32").result[0]
    fp8 = Any2PixLoaderNode.execute(LLM, IMAGEBIND, PRIOR, "fp32", "fp8_e4m3fn").result[0]
    decoder = fp8.llm.model.llm
    assert decoder.embed_tokens.weight.dtype == torch.float8_e4m3fn
    assert all(layer.mlp.gate_proj.weight.dtype == torch.float8_e4m3fn for layer in decoder.layers)
    assert decoder.norm.weight.dtype == torch.float32  # norms keep the compute dtype
    expected = _encode(whole, image1=image, audio1=sound)[0].image_embeds
    got = _encode(fp8, image1=image, audio1=sound)[0].image_embeds
    error = float((got - expected).norm() / expected.norm())
    print(f"fp8_e4m3fn LLM decoder: relative error of the target embedding vs fp32 weights {error:.3g}")
    assert got.isfinite().all() and error < 0.5
