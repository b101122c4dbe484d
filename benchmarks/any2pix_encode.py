"""InstructAny2Pix encode (ImageBind on one image + one sound -> LLM prompt + forced answer -> refinement prior):
our path vs a reference-style path, each in its own subprocess (peak memory per path), ratios at the end.

- reference: what jacklishufan/InstructAny2Pix @ d11e49b `pipeline.py` runs, in fp32: ImageBind on CPU one input at a
  time (`forward_llm`; the pack's ImageBind modules in fp32, there is no other ImageBind here), the LLM as
  transformers LlamaForCausalLM (eager attention, as transformers 4.34.1) generating with `use_cache=False,
  output_hidden_states=True` (each new token re-runs the whole sequence, with the `<video>` projections injected
  again), then the prior (the pack's, fp32, CPU: the reference calls `generate_diffusion(..., device='cpu')`).
  The reference loads the LLM in 4-bit (bitsandbytes, CUDA only); that is not reproduced (README, InstructAny2Pix).
- ours: loaders/any2pix (ImageBind batched, LLM with a KV cache) on --device, in fp32 and in a half dtype (bf16 on
  CPU, fp16 on CUDA); the prior stays fp32 on the device (CFG x10 amplifies rounding).
Sizes: the release's widths (LLaMA-2-7B 4096 / 11008 / 32 heads / vocabulary 32009, ImageBind-huge vision 1280 x 32
blocks and audio 768 x 12, GPT-2-medium prior 1024 x 24 with a CLIP ViT-H text tower 1024 x 24); on CPU the stacks
are truncated to --layers (default 2) unless --full-size. Weights are random (seeded); the answer is forced.

    python benchmarks/any2pix_encode.py [--layers N | --full-size] [--device cpu|cuda] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch
from pack_import import import_pack

PROMPT_TOKENS = 64  # vicuna_v1 system prompt + "add <video> to <video>" + roles, LLaMA tokenizer
ANSWER_TOKENS = 24  # "Sure, here is the result<base><video><im_gen>[a red clock in an antique shop]<video></s>"
VOCAB, VIDEO, BASE, IM_GEN = 32009, 32006, 32007, 32001  # 32000 pieces + the nine added tokens
FULL = {"llm": 32, "vision": 32, "audio": 12, "gpt2": 24, "clip": 24}


def _modules(depth: dict[str, int], device: str, dtype: torch.dtype):
    import_pack()
    from lmm_edit.loaders.any2pix.clip_text import ClipTextConfig
    from lmm_edit.loaders.any2pix.gpt2 import GPT2Config
    from lmm_edit.loaders.any2pix.imagebind import ImageBind
    from lmm_edit.loaders.any2pix.imagebind_encoders import AudioEncoderConfig, VisionEncoderConfig
    from lmm_edit.loaders.any2pix.imagebind_file import ImageBindConfig
    from lmm_edit.loaders.any2pix.imagebind_trunk import TrunkConfig
    from lmm_edit.loaders.any2pix.llm import Any2PixLLM, Any2PixLLMConfig
    from lmm_edit.loaders.any2pix.prior import Any2PixPrior, PriorConfig
    from lmm_edit.loaders.llama import LlamaConfig, rope_inv_freq
    from lmm_edit.selfcheck.sdxl_models import random_like_shapes

    vision = VisionEncoderConfig(TrunkConfig(1280, depth["vision"], 16, 5120, True, False), 1024, (2, 14, 14), (1, 16, 16))
    audio = AudioEncoderConfig(TrunkConfig(768, depth["audio"], 12, 3072, False, True), 1024, 16, 10, (12, 19))
    llm_config = Any2PixLLMConfig(LlamaConfig(4096, depth["llm"], 32, 11008, VOCAB, 1e-5, 10000.0, "input"), 2, 1024, 1024)
    prior_config = PriorConfig(1024, {1: 1024, 2: 1024, 3: 512}, 32, 10, GPT2Config(1024, depth["gpt2"], 16, 4096, 1024),
                               ClipTextConfig(1024, depth["clip"], 16, 4096, 49408, 77))
    built = []
    for seed, (module_type, config) in enumerate(((ImageBind, ImageBindConfig(vision, audio)),
                                                   (Any2PixLLM, llm_config), (Any2PixPrior, prior_config))):
        with torch.device("meta"):
            module = module_type(config)
        shapes = {k: v.shape for k, v in module.state_dict().items()}
        state = random_like_shapes(shapes, seed, torch.float32)
        for key in state:
            if key.endswith("log_logit_scale"):
                state[key] = torch.tensor(math.log(20.0))
            if key.endswith("inv_freq"):
                state[key] = rope_inv_freq(llm_config.llama.head_dim, 10000.0)
        module.load_state_dict(state, strict=True, assign=True)
        module = module.eval().requires_grad_(False).to(device)
        if module_type is not Any2PixPrior:
            module = module.to(dtype)
            if module_type is Any2PixLLM:
                module.llm.inv_freq = module.llm.inv_freq.float()
        built.append(module)
    return built


def _inputs():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    image = Image.fromarray((torch.rand(384, 512, 3, generator=g) * 255).to(torch.uint8).numpy())
    t = torch.arange(3 * 16000) / 16000.0
    sound = (0.2 * torch.sin(2 * math.pi * 110 * t) + 0.1 * torch.randn(t.shape, generator=g))[None]  # [1, S]
    ids = torch.randint(3, 32000, (1, PROMPT_TOKENS), generator=g)
    ids[0, 0], ids[0, 40], ids[0, 44] = 1, VIDEO, VIDEO
    answer = torch.randint(3, 32000, (ANSWER_TOKENS,), generator=g).tolist()
    answer[3:6] = [BASE, VIDEO, IM_GEN]
    answer[-2:] = [VIDEO, 2]
    return image, (sound, 16000), ids, answer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _memory_gib(device: str, field: str = "VmHWM") -> float:
    """CUDA: allocated (VmRSS) or peak allocated (VmHWM); CPU: the resident set now or its peak since the reset."""
    if device == "cuda":
        return (torch.cuda.max_memory_allocated() if field == "VmHWM" else torch.cuda.memory_allocated()) / 2**30
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak(device: str) -> None:
    """Peak memory from here on (the weights are in place; building them in fp32 first does not count)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set (Linux)


def _prior_step(prior, image_embeds: torch.Tensor, device: str) -> torch.Tensor:
    from lmm_edit.loaders.any2pix import prior_input, refine

    text = prior.text_states(torch.tensor([[49406, 49407]], device=device))  # CLIP ids of "" (BOS, EOS)
    src = prior_input(image_embeds.float().to(device))
    return refine(prior, src, text, generator=torch.Generator().manual_seed(0)).y


def run(path: str, depth: dict[str, int], device: str, dtype_name: str, repeats: int) -> dict:
    import_pack()
    from lmm_edit.loaders.any2pix import renormalize_inputs
    from lmm_edit.loaders.any2pix.sampling import SamplingSettings, decode_answer
    from lmm_edit.loaders.dtypes import NAMED_DTYPES

    reference = path == "reference"
    dtype = torch.float32 if reference else NAMED_DTYPES[dtype_name]
    imagebind, llm, prior = _modules(depth, device, dtype)
    image, sound, ids, answer = _inputs()
    if reference:
        from transformers import LlamaConfig, LlamaForCausalLM

        c = llm.config.llama
        hf = LlamaForCausalLM(LlamaConfig(hidden_size=c.hidden, num_hidden_layers=c.layers, num_attention_heads=c.heads,
                                          intermediate_size=c.intermediate, vocab_size=c.vocab, rms_norm_eps=c.rms_eps,
                                          attn_implementation="eager")).eval().to(device)
        state = {("lm_head.weight" if k == "llm.lm_head.weight" else "model." + k[4:]): v
                 for k, v in llm.state_dict().items() if k.startswith("llm.") and not k.endswith("inv_freq")}
        missing, unexpected = hf.load_state_dict(state, strict=False)
        assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
        del state, missing, unexpected
        llm.llm = None  # only the projector and predictor of our module stay in use (its LLaMA weights are freed)
        imagebind = imagebind.to("cpu")
        prior = prior.to("cpu")
    stages = {}

    def encode():
        with torch.inference_mode():
            start = time.perf_counter()  # one image, one sound: one call each in both paths
            embeds = torch.cat([imagebind.embed_images([image]), imagebind.embed_audios([sound])])
            aux = renormalize_inputs(embeds).to(device)
            _sync(device)
            stages["imagebind"] = time.perf_counter() - start
            start = time.perf_counter()
            if reference:
                sequence, hidden = ids.to(device), []
                for token in answer:  # generate(use_cache=False, output_hidden_states=True): the whole sequence again
                    emb = hf.model.embed_tokens(sequence)
                    rows, cols = torch.where(sequence == VIDEO)
                    emb[rows[:2], cols[:2]] += llm.vae_projector_image(aux)
                    out = hf(inputs_embeds=emb, output_hidden_states=True)
                    hidden.append(out.hidden_states[-1][:, -1:])
                    int(out.logits[0, -1].argmax())
                    sequence = torch.cat([sequence, torch.tensor([[token]], device=device)], dim=1)
                image_embeds = llm.predict_embedding(hidden[-2])  # the state predicting the last <video>
            else:
                emb = llm.prompt_embeddings(ids.to(device), aux.to(dtype), VIDEO)
                decoded = decode_answer(llm, emb, SamplingSettings(temperature=0.0), forced=answer)
                image_embeds = llm.predict_embedding(decoded.last_hidden[-2][None, None])
            _sync(device)
            stages["llm"] = time.perf_counter() - start
            start = time.perf_counter()
            _prior_step(prior, image_embeds, "cpu" if reference else device)
            _sync(device)
            stages["prior"] = time.perf_counter() - start

    _reset_peak(device)
    resident = _memory_gib(device, "VmRSS")
    encode()  # warm-up
    best = None
    for _ in range(repeats):
        encode()
        total = sum(stages.values())
        if best is None or total < best["total"]:
            best = dict(stages, total=total)
    return dict(best, peak_gib=_memory_gib(device), resident_gib=resident)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=2, help="depth of every stack on CPU (default 2)")
    parser.add_argument("--full-size", action="store_true", help="the release's depths (meant for CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; the fastest is reported")
    parser.add_argument("--path", choices=("ours", "reference"))
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    depth = dict(FULL) if args.full_size else {k: min(args.layers, v) for k, v in FULL.items()}
    if args.path:
        torch.set_grad_enabled(False)
        print("RESULT " + json.dumps(run(args.path, depth, args.device, args.dtype, args.repeats)))
        return
    half = "fp16" if args.device == "cuda" else "bf16"
    runs = [("reference fp32", "reference", "fp32"), ("ours fp32", "ours", "fp32"), (f"ours {half}", "ours", half)]
    results = {}
    for label, path, dtype in runs:
        cmd = [sys.executable, __file__, "--device", args.device, "--layers", str(args.layers), "--path", path,
               "--dtype", dtype, "--repeats", str(args.repeats)] + (["--full-size"] if args.full_size else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[label] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    print(f"InstructAny2Pix encode, device {args.device}, depths {depth}, prompt {PROMPT_TOKENS} tokens, "
          f"answer {ANSWER_TOKENS} tokens (forced), one image + one 3 s sound")
    base = results["reference fp32"]
    for label, r in results.items():
        print(f"  {label:16s} ImageBind {r['imagebind']:6.2f} s  LLM {r['llm']:6.2f} s  prior {r['prior']:5.2f} s  "
              f"total {r['total']:6.2f} s  peak {r['peak_gib']:6.2f} GiB (weights+rest before {r['resident_gib']:.2f})  "
              f"time x{r['total'] / base['total']:.2f}  peak x{r['peak_gib'] / base['peak_gib']:.2f}")


if __name__ == "__main__":
    main()
