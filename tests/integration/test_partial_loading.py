"""The LMMs under ComfyUI's memory management: partial loading and "Unload models", on CPU.

On a CPU the load and offload devices coincide, so these tests check the mechanics ComfyUI applies on a GPU:
with a budget smaller than the model, ``ModelPatcher.load`` loads the biggest layers that fit and makes every
other layer of ComfyUI's classes cast per call (``comfy_cast_weights``; comfyanonymous/ComfyUI
``comfy/model_patcher.py``), and the output is the full load's, bit for bit. The node path is run with ComfyUI's
``--novram`` state (every layer streamed), which a CPU-only ComfyUI otherwise never picks.
"""

from __future__ import annotations

import pytest
import torch

from .test_smartedit_nodes import BUNDLE, CLIP_FILE, INSTRUCTION, LLAVA, smartedit_files  # noqa: F401  (fixture)
from .test_vlm_loader import NUM_MM_TOKENS, mllm_folders  # noqa: F401  (fixture)

g = torch.Generator().manual_seed(0)


def _llama(ops):
    from lmm_edit.loaders.llama import LlamaConfig, LlamaLM

    return LlamaLM(LlamaConfig(hidden=64, layers=3, heads=4, intermediate=256, vocab=400), operations=ops).eval()


def _decode(module, embeds):
    """Prefill + 3 greedy steps through the KV cache: what an encode does."""
    cache = module.new_cache(batch=1, capacity=16, device=embeds.device)
    hidden = module(embeds, cache)[:, -1:]
    states = [hidden]
    for _ in range(3):
        token = module.logits(hidden)[0, -1].argmax()
        hidden = module(module.embed(token.view(1, 1)), cache)[:, -1:]
        states.append(hidden)
    return torch.cat(states, dim=1)


@pytest.mark.parametrize("ops_name", ["disable_weight_init", "manual_cast"])
def test_a_budget_smaller_than_the_model_loads_the_big_layers_and_casts_the_rest(comfyui, ops_name):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops

    from lmm_edit.nodes.module_patchers import place_rest

    ops = getattr(comfy.ops, ops_name)
    reference = _llama(torch.nn)
    for parameter in reference.parameters():
        parameter.data.normal_(0.0, 0.2, generator=g)
    ours = _llama(ops)
    ours.load_state_dict(reference.state_dict(), strict=True)
    patcher = comfy.model_patcher.ModelPatcher(ours, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    layers = [(n, m) for n, m in ours.named_modules() if hasattr(m, "comfy_cast_weights")]
    total = sum(comfy.model_management.module_size(m) for _, m in layers)
    budget = total * 0.4
    patcher.load(torch.device("cpu"), lowvram_model_memory=budget)

    streamed = {n for n, m in layers if m.comfy_cast_weights and not getattr(m, "comfy_patched_weights", False)}
    loaded = {n for n, m in layers if getattr(m, "comfy_patched_weights", False)}
    assert ours.model_lowvram and streamed and loaded and not streamed & loaded
    assert streamed | loaded == {n for n, _ in layers}
    assert ours.model_loaded_weight_memory <= budget
    sizes = {n: comfy.model_management.module_size(m) for n, m in layers}
    assert "lm_head" in loaded or "embed_tokens" in loaded  # biggest first (400 x 64 beats every 64 x 256)
    # greedy, biggest first: a streamed layer is one that did not fit in what the bigger ones left
    assert min(sizes[n] for n in loaded) >= min(sizes[n] for n in streamed)
    assert place_rest(patcher) == 0  # on CPU the norms and RoPE buffer already sit on the load device

    embeds = torch.randn(1, 6, 64, generator=g)
    with torch.inference_mode():
        expected = _decode(reference, embeds)
        got = _decode(ours, embeds)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    patcher.detach()
    assert not ours.model_lowvram
    assert all(m.comfy_cast_weights == (ops_name == "manual_cast") for _, m in layers)


@pytest.fixture
def novram(monkeypatch):
    """ComfyUI's NO_VRAM state on a device ComfyUI takes for a GPU: load_models_gpu streams every castable layer."""
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    yield
    mm.unload_all_models()


def _encode(lmm, image):
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    return LMMEncodeNode.execute(lmm, image, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result[0]


def _image():
    return torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.usefixtures("smartedit_files")
def test_smartedit_encode_streams_the_lmm_and_unload_models_frees_it(comfyui, novram):
    import comfy.model_management as mm

    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    _, full_lmm, _ = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result
    with pytest.MonkeyPatch.context() as undo:  # the reference run: whole, as on a CPU-only ComfyUI
        undo.setattr(mm, "vram_state", mm.VRAMState.DISABLED)
        undo.setattr(mm, "is_device_cpu", lambda device: True)
        expected = _encode(full_lmm, _image())
    assert not full_lmm.patcher.model.model_lowvram
    mm.unload_all_models()

    _, lmm, _ = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result
    got = _encode(lmm, _image())
    module = lmm.patcher.model
    assert module.model_lowvram, "the LMM was loaded whole"
    castable = [m for m in module.modules() if hasattr(m, "comfy_cast_weights")]
    assert castable and all(m.comfy_cast_weights for m in castable)  # NO_VRAM: every layer streamed
    assert mm.loaded_models() and lmm.patcher in mm.loaded_models()
    torch.testing.assert_close(got.hidden_states, expected.hidden_states, rtol=0, atol=0)
    assert got.token_ids.tolist() == expected.token_ids.tolist()

    mm.unload_all_models()  # what "Unload models" and POST /free call
    assert lmm.patcher not in mm.loaded_models()
    assert not module.model_lowvram and not any(m.comfy_cast_weights for m in castable)


@pytest.mark.usefixtures("smartedit_files")
def test_smartedit_memory_estimate_reserves_the_kv_cache_of_a_full_answer(comfyui, monkeypatch):
    import comfy.model_management as mm

    from lmm_edit.loaders.encoder import MAX_NEW_TOKENS
    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    _, lmm, _ = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result
    config = lmm.patcher.model.llm.config
    kv = 2 * config.layers * config.hidden * (lmm.patcher.model.info.context + MAX_NEW_TOKENS) * 4  # fp32 on CPU
    seen = {}

    def spy(models, memory_required=0, **kwargs):
        seen.update(memory_required=memory_required, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", spy)
    _encode(lmm, _image())
    assert seen["memory_required"] > kv and not seen.get("force_full_load")


@pytest.mark.parametrize("folder", ["tiny-llava-1.5", "tiny-qwen2-vl"])
@pytest.mark.usefixtures("mllm_folders")
def test_vlm_gets_comfy_layers_and_a_streamed_encode_matches_the_whole_model(comfyui, novram, folder):
    import comfy.model_management as mm
    import comfy.ops

    from lmm_edit.nodes.vlm_loader import MLLMLoaderNode

    full = MLLMLoaderNode.execute(folder, NUM_MM_TOKENS, "auto").result[0]
    with pytest.MonkeyPatch.context() as undo:
        undo.setattr(mm, "vram_state", mm.VRAMState.DISABLED)
        undo.setattr(mm, "is_device_cpu", lambda device: True)
        expected = _encode(full, _image())
    mm.unload_all_models()

    lmm = MLLMLoaderNode.execute(folder, NUM_MM_TOKENS, "auto").result[0]
    module = lmm.patcher.model
    stock = [type(m).__name__ for m in module.modules() if type(m) in (torch.nn.Linear, torch.nn.Embedding)]
    assert not stock, f"torch.nn layers left: {stock[:3]}"
    assert any(isinstance(m, comfy.ops.disable_weight_init.Linear) for m in module.modules())
    got = _encode(lmm, _image())
    assert module.model_lowvram and module.device == lmm.patcher.load_device
    castable = [m for m in module.modules() if hasattr(m, "comfy_cast_weights")]
    assert all(m.comfy_cast_weights for m in castable)
    torch.testing.assert_close(got.hidden_states, expected.hidden_states, rtol=0, atol=0)
    assert got.token_ids.tolist() == expected.token_ids.tolist()
    mm.unload_all_models()
    assert lmm.patcher not in mm.loaded_models() and not module.model_lowvram


@pytest.mark.parametrize("folder", ["tiny-llava-1.5", "tiny-qwen2-vl"])
@pytest.mark.usefixtures("mllm_folders")
def test_vlm_fp8_storage_keeps_the_decoder_layers_in_fp8_and_encodes_close_to_the_compute_dtype(comfyui, folder):
    from lmm_edit.nodes.vlm_loader import MLLMLoaderNode

    from .smartedit_support import rel_err

    expected = _encode(MLLMLoaderNode.execute(folder, NUM_MM_TOKENS, "auto").result[0], _image())
    lmm = MLLMLoaderNode.execute(folder, NUM_MM_TOKENS, "auto", "fp8_e4m3fn").result[0]
    weights = {n: p.dtype for n, p in lmm.patcher.model.named_parameters()}
    fp8 = [n for n, d in weights.items() if d == torch.float8_e4m3fn]
    assert fp8 and all(".layers." in n and "vision" not in n and "visual" not in n for n in fp8)
    assert all(weights[n] == torch.float32 for n in weights if "embed_tokens" in n or "norm" in n)
    got = _encode(lmm, _image())
    error = rel_err(got.hidden_states, expected.hidden_states)
    print(f"\n{folder}: fp8_e4m3fn decoder weights vs fp32, [MM] states rel. error {error:.4f}")
    # loose: fp8 keeps 3 mantissa bits and these tiny random models' weights (std 0.02) sit partly in its subnormals
    assert torch.isfinite(got.hidden_states).all() and 0 < error < 1.0
