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
    from lmm_edit.loaders.smartedit.encoder import PROMPT_POSITIONS
    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    _, lmm, _ = SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result
    config = lmm.patcher.model.llm.config
    kv = 2 * config.layers * config.hidden * (PROMPT_POSITIONS + MAX_NEW_TOKENS) * 4  # fp32 on CPU
    seen = {}

    def spy(models, memory_required=0, **kwargs):
        seen.update(memory_required=memory_required, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", spy)
    _encode(lmm, _image())
    assert seen["memory_required"] > kv and not seen.get("force_full_load")
