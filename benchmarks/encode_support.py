"""Shared by benchmarks/smartedit_encode.py: 7B-shaped random weights, inputs, timing and peak memory, and the
reference-style path (what TencentARC/SmartEdit's test script runs: transformers CLIP with all hidden states,
transformers LlamaModel in fp32 with the peft LoRA unmerged, logits for every position, HF KV cache)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TEXT_TOKENS = 105  # length of SmartEdit's prompt around the image slot with a short instruction
IMAGE_TOKENS = 32
REPEATS = 3  # timed runs per path after one warm-up; the minimum is reported
TEXT_ANSWER = [3, 4, 5]  # a short text answer before the image tokens, as the trained model writes
SIZES = {"hidden": 4096, "heads": 32, "intermediate": 11008, "vocab": 32035, "clip_hidden": 1024, "clip_layers": 24,
         "clip_heads": 16, "clip_intermediate": 4096, "lora_r": 8, "lora_alpha": 16}


def random_weights(layers: int, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator(device).manual_seed(seed)
    s = SIZES

    def rnd(*shape, scale=0.02):
        return torch.empty(*shape, dtype=dtype, device=device).normal_(0, scale, generator=g)

    def ones(n):
        return torch.ones(n, dtype=dtype, device=device)

    d, m = s["hidden"], s["intermediate"]
    w = {"embed_tokens.weight": rnd(s["vocab"], d), "norm.weight": ones(d), "lm_head.weight": rnd(s["vocab"], d)}
    for i in range(layers):
        p = f"layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w[p + f"self_attn.{n}.weight"] = rnd(d, d)
        for n in ("q_proj", "v_proj"):
            w[p + f"self_attn.{n}.lora_A.weight"] = rnd(s["lora_r"], d)
            w[p + f"self_attn.{n}.lora_B.weight"] = rnd(d, s["lora_r"])
        w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"], w[p + "mlp.down_proj.weight"] = rnd(m, d), rnd(m, d), rnd(d, m)
        w[p + "input_layernorm.weight"], w[p + "post_attention_layernorm.weight"] = ones(d), ones(d)
    c, cm = s["clip_hidden"], s["clip_intermediate"]
    v = "vision_model."
    w[v + "embeddings.class_embedding"] = rnd(c)
    w[v + "embeddings.patch_embedding.weight"] = rnd(c, 3, 14, 14)
    w[v + "embeddings.position_embedding.weight"] = rnd(257, c)
    w[v + "pre_layrnorm.weight"], w[v + "pre_layrnorm.bias"] = ones(c), 0 * ones(c)
    w[v + "post_layernorm.weight"], w[v + "post_layernorm.bias"] = ones(c), 0 * ones(c)
    for i in range(s["clip_layers"]):
        p = f"{v}encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[p + f"self_attn.{n}.weight"], w[p + f"self_attn.{n}.bias"] = rnd(c, c), 0 * ones(c)
        for n in (1, 2):
            w[p + f"layer_norm{n}.weight"], w[p + f"layer_norm{n}.bias"] = ones(c), 0 * ones(c)
        w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"] = rnd(cm, c), 0 * ones(cm)
        w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"] = rnd(c, cm), 0 * ones(c)
    w["mm_projector.weight"], w["mm_projector.bias"] = rnd(d, c), 0 * ones(d)
    return w


def encode_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 3, 224, 224, generator=g)
    ids = torch.randint(3, 32000, (PROMPT_TEXT_TOKENS,), generator=g)
    first_image = SIZES["vocab"] - IMAGE_TOKENS
    teacher = TEXT_ANSWER + list(range(first_image, first_image + IMAGE_TOKENS)) + [2]
    return pixels, ids, teacher


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_reference(layers: int, device: str) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaModel

    s = SIZES
    w = random_weights(layers)
    clip = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=s["clip_hidden"], num_hidden_layers=s["clip_layers"], num_attention_heads=s["clip_heads"],
        intermediate_size=s["clip_intermediate"], image_size=224, patch_size=14, hidden_act="quick_gelu",
    ), ).eval()
    strip = 0 if any(k.startswith("vision_model.") for k in clip.state_dict()) else len("vision_model.")
    missing, unexpected = clip.load_state_dict({k[strip:]: v for k, v in w.items() if k.startswith("vision_model.")}, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    llama = LlamaModel(LlamaConfig(
        hidden_size=s["hidden"], num_hidden_layers=layers, num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
        vocab_size=s["vocab"], rms_norm_eps=1e-6, max_position_embeddings=2048,
    )).eval()
    llama.load_state_dict({k: v for k, v in w.items() if k.startswith(("layers.", "embed_tokens", "norm")) and "lora" not in k})
    llama = get_peft_model(llama, LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], target_modules=["q_proj", "v_proj"], lora_dropout=0.05))
    for name, module in llama.named_modules():
        if name.endswith(("q_proj", "v_proj")) and hasattr(module, "lora_A"):
            key = name.split("model.", 2)[-1]
            module.lora_A["default"].weight.data = w[key + ".lora_A.weight"]
            module.lora_B["default"].weight.data = w[key + ".lora_B.weight"]
    llama.eval()
    lm_head = torch.nn.Linear(s["hidden"], s["vocab"], bias=False)
    lm_head.weight.data = w["lm_head.weight"]
    projector = torch.nn.Linear(s["clip_hidden"], s["hidden"])
    projector.load_state_dict({"weight": w["mm_projector.weight"], "bias": w["mm_projector.bias"]})
    del w
    clip, llama, lm_head, projector = clip.to(device), llama.to(device), lm_head.to(device), projector.to(device)
    pixels, ids, teacher = encode_inputs()
    first_image = s["vocab"] - IMAGE_TOKENS

    def encode():  # test/DS_SmartEdit_test.py get_prompt_embedding_LLM, fp32
        with torch.inference_mode():
            feats = clip(pixels.to(device), output_hidden_states=True).hidden_states[-2][:, 1:]
            projected = projector(feats)
            emb = llama.get_input_embeddings()(ids.to(device).unsqueeze(0))
            at = PROMPT_TEXT_TOKENS // 2
            emb = torch.cat([emb[:, :at], projected, emb[:, at:]], dim=1)
            kept, token, past = [], None, None
            for step, forced in enumerate(teacher):
                if step == 0:
                    out = llama(inputs_embeds=emb, use_cache=True)
                else:
                    mask = torch.ones(1, past.get_seq_length() + 1, device=device)
                    out = llama(input_ids=torch.tensor([[token]], device=device), attention_mask=mask, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = lm_head(out.last_hidden_state)
                if token is not None and token >= first_image:
                    kept.append(out.last_hidden_state)
                int(torch.argmax(logits[0][-1]))
                token = forced
            return torch.cat(kept, dim=1)

    return timed(encode, device)


def _rss_gib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process, in GiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def timed(encode, device: str, repeats: int = REPEATS) -> dict:
    """Time of the fastest of `repeats` runs (after one warm-up when repeats > 1). Peak memory over them: CUDA allocator peak, or on CPU the resident-set peak (VmHWM reset
    through /proc/self/clear_refs after the weights are in place), which includes the resident weights."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() / 2**30
    else:
        Path("/proc/self/clear_refs").write_text("5")
        resident = _rss_gib("VmRSS")
    if repeats > 1:
        encode()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        encode()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = min(times)  # the least disturbed run (shared machines)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _rss_gib("VmHWM")
    return {"seconds": seconds, "peak_gib": peak, "resident_before_gib": resident}


