"""SmartEdit encode (CLIP -> mm_projector -> LLaMA prefill -> 35 decode steps): our path vs a reference-style path.

Both paths run on the same random weights, each in its own subprocess (so peak memory is measured per path),
side by side in one invocation; ratios are printed at the end.
- reference: what TencentARC/SmartEdit's test script runs: transformers CLIPVisionModel with all hidden states,
  transformers LlamaModel in fp32 with the peft LoRA unmerged, logits for every position, HF KV cache.
- ours: loaders/smartedit (CLIP run only up to the selected layer, LoRA merged, preallocated KV cache,
  lm_head on the last position only), in fp32 and in a half dtype (bf16 on CPU, fp16 on CUDA).
Sizes: 7B widths (LLaMA 4096 / 11008 / 32 heads, vocabulary 32035, CLIP ViT-L/14); on CPU the LLaMA is
truncated to --layers (default 2), on CUDA it defaults to all 32 layers. Weights are random (seeded).

    python benchmarks/smartedit_encode.py [--layers N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from pack_import import import_pack

ROOT = Path(__file__).resolve().parents[1]
PROMPT_TEXT_TOKENS = 105  # length of SmartEdit's prompt around the image slot with a short instruction
IMAGE_TOKENS = 32
REPEATS = 3  # timed runs per path after one warm-up; the minimum is reported
TEXT_ANSWER = [3, 4, 5]  # a short text answer before the image tokens, as the trained model writes
SIZES = {"hidden": 4096, "heads": 32, "intermediate": 11008, "vocab": 32035, "clip_hidden": 1024, "clip_layers": 24,
         "clip_heads": 16, "clip_intermediate": 4096, "lora_r": 8, "lora_alpha": 16}


def _weights(layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = SIZES

    def rnd(*shape, scale=0.02):
        return torch.empty(*shape).normal_(0, scale, generator=g)

    d, m = s["hidden"], s["intermediate"]
    w = {"embed_tokens.weight": rnd(s["vocab"], d), "norm.weight": torch.ones(d), "lm_head.weight": rnd(s["vocab"], d)}
    for i in range(layers):
        p = f"layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w[p + f"self_attn.{n}.weight"] = rnd(d, d)
        for n in ("q_proj", "v_proj"):
            w[p + f"self_attn.{n}.lora_A.weight"] = rnd(s["lora_r"], d)
            w[p + f"self_attn.{n}.lora_B.weight"] = rnd(d, s["lora_r"])
        w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"], w[p + "mlp.down_proj.weight"] = rnd(m, d), rnd(m, d), rnd(d, m)
        w[p + "input_layernorm.weight"], w[p + "post_attention_layernorm.weight"] = torch.ones(d), torch.ones(d)
    c, cm = s["clip_hidden"], s["clip_intermediate"]
    v = "vision_model."
    w[v + "embeddings.class_embedding"] = rnd(c)
    w[v + "embeddings.patch_embedding.weight"] = rnd(c, 3, 14, 14)
    w[v + "embeddings.position_embedding.weight"] = rnd(257, c)
    w[v + "pre_layrnorm.weight"], w[v + "pre_layrnorm.bias"] = torch.ones(c), torch.zeros(c)
    w[v + "post_layernorm.weight"], w[v + "post_layernorm.bias"] = torch.ones(c), torch.zeros(c)
    for i in range(s["clip_layers"]):
        p = f"{v}encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[p + f"self_attn.{n}.weight"], w[p + f"self_attn.{n}.bias"] = rnd(c, c), torch.zeros(c)
        for n in (1, 2):
            w[p + f"layer_norm{n}.weight"], w[p + f"layer_norm{n}.bias"] = torch.ones(c), torch.zeros(c)
        w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"] = rnd(cm, c), torch.zeros(cm)
        w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"] = rnd(c, cm), torch.zeros(c)
    w["mm_projector.weight"], w["mm_projector.bias"] = rnd(d, c), torch.zeros(d)
    return w


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 3, 224, 224, generator=g)
    ids = torch.randint(3, 32000, (PROMPT_TEXT_TOKENS,), generator=g)
    first_image = SIZES["vocab"] - IMAGE_TOKENS
    teacher = TEXT_ANSWER + list(range(first_image, first_image + IMAGE_TOKENS)) + [2]
    return pixels, ids, teacher


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_ours(layers: int, dtype: torch.dtype, device: str) -> dict:
    import_pack()
    w = _weights(layers)
    bundle, decode, load_lmm, vision = (
        importlib.import_module(f"lmm_edit.loaders.smartedit.{name}") for name in ("bundle", "decode", "load_lmm", "vision")
    )
    llama = importlib.import_module("lmm_edit.loaders.llama")
    s = SIZES
    lora = bundle.LoraSettings(s["lora_r"], s["lora_alpha"], ("q_proj", "v_proj"), "benchmark")
    llm_state = load_lmm.merge_lora({k: v for k, v in w.items() if not k.startswith(("vision_model.", "mm_projector."))}, lora, Path("-"))
    llm_state["inv_freq"] = llama.rope_inv_freq(s["hidden"] // s["heads"])
    config = llama.LlamaConfig(s["hidden"], layers, s["heads"], s["intermediate"], s["vocab"])
    with torch.device("meta"):
        llm = llama.LlamaLM(config)
    llm.load_state_dict({k: v.to(dtype) if k != "inv_freq" else v for k, v in llm_state.items()}, assign=True)
    shapes = {k: tuple(v.shape) for k, v in w.items() if k.startswith("vision_model.")}
    cfg = vision.clip_config_from_shapes(shapes, "vision_model.", {"num_attention_heads": s["clip_heads"]})
    with torch.device("meta"):
        tower = vision.ClipVisionTower(cfg, -2)
    tower.load_state_dict({k: v.to(dtype) for k, v in vision.clip_state_to_tower(w, "vision_model.", tower).items()}, assign=True)
    projector = torch.nn.Linear(s["clip_hidden"], s["hidden"]).to(dtype)
    projector.load_state_dict({"weight": w["mm_projector.weight"].to(dtype), "bias": w["mm_projector.bias"].to(dtype)})
    del w, llm_state
    llm, tower, projector = llm.to(device), tower.to(device), projector.to(device)
    pixels, ids, teacher = _inputs()
    image_ids = list(range(s["vocab"] - IMAGE_TOKENS, s["vocab"]))

    def encode():
        with torch.inference_mode():
            feats = tower(pixels.to(device, dtype))
            projected = projector(feats)
            emb = llm.embed_tokens(ids.to(device).unsqueeze(0))
            at = PROMPT_TEXT_TOKENS // 2
            emb = torch.cat([emb[:, :at], projected, emb[:, at:]], dim=1)
            return decode.decode_image_states(llm, emb, image_ids, 2, teacher_ids=teacher)

    return _timed(encode, device)


def run_reference(layers: int, device: str) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaModel

    s = SIZES
    w = _weights(layers)
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
    pixels, ids, teacher = _inputs()
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

    return _timed(encode, device)


def _rss_gib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process, in GiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def _timed(encode, device: str) -> dict:
    """Peak memory over warm-up + timed run: CUDA allocator peak, or on CPU the resident-set peak (VmHWM reset
    through /proc/self/clear_refs after the weights are in place), which includes the resident weights."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() / 2**30
    else:
        Path("/proc/self/clear_refs").write_text("5")
        resident = _rss_gib("VmRSS")
    encode()  # warm-up
    times = []
    for _ in range(REPEATS):
        _sync(device)
        start = time.perf_counter()
        encode()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = min(times)  # the least disturbed run (shared machines)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _rss_gib("VmHWM")
    return {"seconds": seconds, "peak_gib": peak, "resident_before_gib": resident}


def _child(args) -> None:
    torch.set_grad_enabled(False)
    if args.path == "reference":
        result = run_reference(args.layers, args.device)
    else:
        import_pack()
        from lmm_edit.loaders.dtypes import NAMED_DTYPES

        result = run_ours(args.layers, NAMED_DTYPES[args.dtype], args.device)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--path", choices=("ours", "reference"), default=None)
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    if args.layers is None:
        args.layers = 32 if args.device == "cuda" else 2
    if args.path:
        _child(args)
        return
    half = "fp16" if args.device == "cuda" else "bf16"
    runs = [("reference fp32", "reference", "fp32"), ("ours fp32", "ours", "fp32"), (f"ours {half}", "ours", half)]
    results = {}
    for label, path, dtype in runs:
        cmd = [sys.executable, __file__, "--device", args.device, "--layers", str(args.layers), "--path", path, "--dtype", dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[label] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    prompt = PROMPT_TEXT_TOKENS + 256
    print(f"SmartEdit encode, device {args.device}, LLaMA 4096 wide x {args.layers} layers, CLIP ViT-L/14, "
          f"prompt {prompt} positions, {len(TEXT_ANSWER) + IMAGE_TOKENS + 1} decode steps")
    base = results["reference fp32"]
    for label, r in results.items():
        print(f"  {label:16s} {r['seconds']:8.2f} s  peak {r['peak_gib']:6.2f} GiB (weights+rest before: "
              f"{r['resident_before_gib']:.2f})  "
              f"time x{r['seconds'] / base['seconds']:.2f}  peak x{r['peak_gib'] / base['peak_gib']:.2f}")


if __name__ == "__main__":
    main()
