"""SmartEdit encode (CLIP -> mm_projector -> LLaMA prefill -> 35 decode steps): the pack's path per weight storage
dtype and loading mode, and a reference-style path.

Every run is its own subprocess (so peak memory is measured per run), side by side in one invocation; ratios are
printed at the end.
- reference: what TencentARC/SmartEdit's test script runs: transformers CLIPVisionModel with all hidden states,
  transformers LlamaModel in fp32 with the peft LoRA unmerged, logits for every position, HF KV cache (CPU only
  unless --reference: 27 GB of fp32 weights at full size).
- ours: loaders/smartedit built from ComfyUI's layers (COMFYUI_PATH) under a ModelPatcher, as the loader node does:
  compute in fp32 / bf16 (CPU) or fp16 (CUDA); weights stored in the compute dtype or in fp8 (manual_cast layers,
  loaders/storage.py); on CUDA loaded whole ("normal") or partially ("lowvram": --vram-budget GiB of weights on the
  GPU, the rest streamed per layer, as ComfyUI does on a small card).
Sizes: 7B widths (LLaMA 4096 / 11008 / 32 heads, vocabulary 32035, CLIP ViT-L/14); on CPU the LLaMA is
truncated to --layers (default 2), on CUDA it defaults to all 32 layers. Weights are random (seeded).
Peak memory: CUDA allocator peak, or on CPU the resident-set peak after the weights are in place.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/smartedit_encode.py [--layers N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from encode_support import (
    IMAGE_TOKENS,
    PROMPT_TEXT_TOKENS,
    SIZES,
    TEXT_ANSWER,
    encode_inputs,
    random_weights,
    run_reference,
    timed,
)
from pack_import import import_pack


def _boot_comfyui(device: str) -> None:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout (the pack's path runs on ComfyUI's layers)")
    sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = device == "cpu"


def _build_lmm(layers: int, dtype: torch.dtype, storage: torch.dtype, device: str):
    """The SmartEdit LMM from random weights (made on `device`, kept in RAM), as loaders/smartedit/load.py builds it."""
    import comfy.ops

    from lmm_edit.loaders.llama import LlamaConfig, LlamaLM, rope_inv_freq
    from lmm_edit.loaders.smartedit.files import LoraSettings, merge_lora
    from lmm_edit.loaders.smartedit.lmm import SmartEditLMM
    from lmm_edit.loaders.smartedit.vision import ClipVisionConfig, ClipVisionTower, clip_state_to_tower
    from lmm_edit.loaders.storage import store_weights

    s = SIZES
    ops = comfy.ops.disable_weight_init if storage == dtype else comfy.ops.manual_cast
    w = {k: v.cpu() for k, v in random_weights(layers, dtype, device).items()}
    lora = LoraSettings(s["lora_r"], s["lora_alpha"], ("q_proj", "v_proj"), "benchmark")
    llm_state = merge_lora({k: v for k, v in w.items() if not k.startswith(("vision_model.", "mm_projector."))}, lora, Path("-"))
    llm_state["inv_freq"] = rope_inv_freq(s["hidden"] // s["heads"])
    with torch.device("meta"):
        llm = LlamaLM(LlamaConfig(s["hidden"], layers, s["heads"], s["intermediate"], s["vocab"]), operations=ops)
    llm.load_state_dict(llm_state, assign=True)
    shapes = {k: tuple(v.shape) for k, v in w.items() if k.startswith("vision_model.")}
    config = ClipVisionConfig.from_shapes(shapes, "vision_model.", {"num_attention_heads": s["clip_heads"]})
    with torch.device("meta"):
        tower = ClipVisionTower(config, -2, operations=ops)
        projector = ops.Linear(s["clip_hidden"], s["hidden"])
    tower.load_state_dict(clip_state_to_tower(w, "vision_model.", tower), assign=True)
    projector.load_state_dict({"weight": w["mm_projector.weight"], "bias": w["mm_projector.bias"]}, assign=True)
    del w, llm_state
    lmm = SmartEditLMM(llm, tower, projector, None, None).eval()
    store_weights(lmm, storage, dtype, ops)
    gc.collect()
    return lmm


def run_ours(layers: int, dtype: torch.dtype, storage: torch.dtype, device: str, lowvram_gib: float | None,
             repeats: int) -> dict:
    """lowvram_gib: None = loaded whole; else ComfyUI's partial load with that many GiB of weights on the GPU."""
    _boot_comfyui(device)
    import_pack()
    import comfy.model_patcher

    from lmm_edit.loaders.smartedit import decode
    from lmm_edit.nodes.module_patchers import place_rest

    lmm = _build_lmm(layers, dtype, storage, device)
    patcher = comfy.model_patcher.ModelPatcher(lmm, load_device=torch.device(device), offload_device=torch.device("cpu"))
    if lowvram_gib is None:
        patcher.load(torch.device(device), full_load=True)
    else:
        patcher.load(torch.device(device), lowvram_model_memory=lowvram_gib * 2**30)
    place_rest(patcher)
    pixels, ids, teacher = encode_inputs()
    image_ids = list(range(SIZES["vocab"] - IMAGE_TOKENS, SIZES["vocab"]))

    def encode():
        with torch.inference_mode():
            feats = lmm.vision(pixels.to(device))
            projected = lmm.mm_projector(feats)
            emb = lmm.llm.embed(ids.to(device).unsqueeze(0))
            at = PROMPT_TEXT_TOKENS // 2
            emb = torch.cat([emb[:, :at], projected.to(emb.dtype), emb[:, at:]], dim=1)
            return decode.decode_image_states(lmm.llm, emb, image_ids, 2, teacher_ids=teacher)

    result = timed(encode, device, repeats)
    result["weights_on_device_gib"] = lmm.model_loaded_weight_memory / 2**30
    result["llm_weight_gib"] = sum(p.numel() * p.element_size() for p in lmm.llm.parameters()) / 2**30
    return result


STORAGE = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def _child(args) -> None:
    torch.set_grad_enabled(False)
    if args.path == "reference":
        print("RESULT " + json.dumps(run_reference(args.layers, args.device)))
        return
    import_pack()
    from lmm_edit.loaders.dtypes import NAMED_DTYPES

    dtype = NAMED_DTYPES[args.dtype]
    storage = STORAGE.get(args.storage, dtype)
    print("RESULT " + json.dumps(run_ours(args.layers, dtype, storage, args.device, args.lowvram, args.repeats)))


def _runs(args) -> list[tuple[str, list[str]]]:
    """(label, child arguments) of every run of this invocation."""
    if args.device == "cpu":
        runs = [("reference fp32", ["--path", "reference"])] if not args.no_reference else []
        return runs + [("ours fp32", ["--dtype", "fp32"]), ("ours bf16", ["--dtype", "bf16"]),
                       ("ours fp8_e4m3fn", ["--dtype", "bf16", "--storage", "fp8_e4m3fn"]),
                       ("ours fp8_e5m2", ["--dtype", "bf16", "--storage", "fp8_e5m2"])]
    low = ["--lowvram", str(args.vram_budget)]
    runs = [("reference fp32", ["--path", "reference"])] if args.reference else []
    return runs + [("ours fp16", ["--dtype", "fp16"]), ("ours fp16 lowvram", ["--dtype", "fp16", *low]),
                   ("ours fp8_e4m3fn", ["--dtype", "fp16", "--storage", "fp8_e4m3fn"]),
                   ("ours fp8 lowvram", ["--dtype", "fp16", "--storage", "fp8_e4m3fn", *low])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--path", choices=("ours", "reference"), default=None)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--storage", default="default", choices=("default", *STORAGE))
    parser.add_argument("--lowvram", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vram-budget", type=float, default=4.0, help="GiB of weights on the GPU in lowvram runs")
    parser.add_argument("--reference", action="store_true", help="on CUDA, also run the fp32 reference path")
    parser.add_argument("--no-reference", action="store_true", help="on CPU, skip the reference path")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="HBM TB/s for the weight-read floor (H100)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of ours (default 3 after a warm-up on CUDA; 1 on CPU, where fp8 weights are "
                        "cast at ~14 ns per element, minutes per fp8 encode)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.layers is None:
        args.layers = 32 if args.device == "cuda" else 2
    if args.repeats is None:
        args.repeats = 3 if args.device == "cuda" else 1
    if args.path:
        _child(args)
        return
    results = {}
    for label, extra in _runs(args):
        cmd = [sys.executable, __file__, "--device", args.device, "--layers", str(args.layers), "--path", "ours",
               "--repeats", str(args.repeats), *extra]
        if "reference" in extra:
            cmd = cmd[: cmd.index("--path")] + extra
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{label} failed:\n{out.stderr[-3000:]}")
        results[label] = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    prompt = PROMPT_TEXT_TOKENS + 256
    print(f"SmartEdit encode, device {args.device}, LLaMA 4096 wide x {args.layers} layers, CLIP ViT-L/14, "
          f"prompt {prompt} positions, {len(TEXT_ANSWER) + IMAGE_TOKENS + 1} decode steps")
    base = next(iter(results.values()))
    for label, r in results.items():
        print(f"  {label:18s} {r['seconds']:8.2f} s  peak {r['peak_gib']:6.2f} GiB (weights+rest before: "
              f"{r['resident_before_gib']:.2f})  time x{r['seconds'] / base['seconds']:.2f}  "
              f"peak x{r['peak_gib'] / base['peak_gib']:.2f}")
    steps = len(TEXT_ANSWER) + IMAGE_TOKENS + 1
    for label, r in results.items():  # the floor: every decode step reads every LLaMA weight once
        if args.device == "cuda" and "llm_weight_gib" in r and "lowvram" not in label:
            floor = steps * r["llm_weight_gib"] * 2**30 / (args.bandwidth_tbs * 1e12)
            print(f"  {label}: weight-read floor {floor:.3f} s ({steps} steps x {r['llm_weight_gib']:.1f} GiB at "
                  f"{args.bandwidth_tbs} TB/s), encode x{r['seconds'] / floor:.2f} of it (target <= 1.5 for fp16)")
    pairs = [("ours fp8_e4m3fn", "ours bf16"), ("ours fp8_e4m3fn", "ours fp16"), ("ours fp16 lowvram", "ours fp16"),
             ("ours fp8 lowvram", "ours fp8_e4m3fn")]
    for a, b in pairs:
        if a in results and b in results:
            print(f"  {a} / {b}: peak x{results[a]['peak_gib'] / results[b]['peak_gib']:.2f}, "
                  f"time x{results[a]['seconds'] / results[b]['seconds']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"layers": args.layers, "device": args.device, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
