"""Per-step time of InstructPix2Pix dual-CFG sampling: our ComfyUI path vs diffusers' pipeline.

Both sample the same SD1.5-size 8-channel UNet (random weights) from the same latents,
side by side in one process, alternating runs; every step is timed on its own (from the
end of one step to the end of the next), so one-off costs such as prompt and image
handling stay out of the figures.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/ip2p_step.py [--size 256] [--steps 2 6] [--repeats 3]

CPU: fp32. CUDA: fp16 for both. Target: ours <= 1.05x diffusers per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from pack_import import import_pack

SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json, 8 input channels as InstructPix2Pix
    sample_size=64, in_channels=8, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
TEXT_CFG, IMAGE_CFG = 7.5, 1.5


def _boot_comfyui(path: str, cpu: bool, attention: str):
    sys.path.insert(0, path)
    from comfy.cli_args import args

    args.cpu = cpu
    if cpu:
        args.force_fp32 = True
    # ComfyUI picks PyTorch SDPA on NVIDIA GPUs but sub-quadratic attention on CPU;
    # "pytorch" gives both sides the same attention kernel (--use-pytorch-cross-attention).
    args.use_pytorch_cross_attention = attention == "pytorch"


def _diffusers_pipeline(unet, dtype, device):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lmm_edit.selfcheck.clip_tokenizer import write_clip_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(__import__("pathlib").Path(folder)))
    # The text encoder and VAE are never run: embeddings and image latents are passed in.
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                num_attention_heads=4, vocab_size=600))
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=8, latent_channels=4)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing")
    pipe = StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                                  scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _comfyui_model(unet, dtype):
    """The same weights through ComfyUI's own loading path (LDM keys, detected as SD15_instructpix2pix)."""
    import comfy.sd

    from lmm_edit.loaders.ip2p.unet_keys import LDM_PREFIX, diffusers_unet_to_ldm

    state_dict = {k[len(LDM_PREFIX):]: v.to(dtype) for k, v in diffusers_unet_to_ldm(unet.state_dict(), prefix="").items()}
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": dtype})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    parser.add_argument("--steps", type=int, default=4, help="steps per run (each one timed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--comfy-attention", choices=["pytorch", "default"], default="pytorch",
                        help="ComfyUI attention: PyTorch SDPA (its GPU default) or its own default for this device")
    opts = parser.parse_args()
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    _boot_comfyui(path, cpu=not cuda, attention=opts.comfy_attention)
    import comfy.ldm.modules.attention
    import comfy.samplers
    from diffusers import UNet2DConditionModel

    guider_cls = _guider_class(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    model = _comfyui_model(unet, dtype)
    pipe = _diffusers_pipeline(unet.to(device, dtype), dtype, device)

    latent_size = opts.size // 8
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 77, 768, generator=g)
    null = torch.randn(1, 77, 768, generator=g)
    image_latent = torch.randn(1, 4, latent_size, latent_size, generator=g)
    noise = torch.randn(1, 4, latent_size, latent_size, generator=g)

    positive = [[text, {"concat_latent_image": image_latent}]]
    negative = [[null, {"concat_latent_image": image_latent}]]

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    def run_ours(steps: int) -> list[float]:
        """Wall-clock time of each step, taken at the end of every step."""
        stamps = []

        def on_step(*_):
            synchronize()
            stamps.append(time.perf_counter())

        guider = guider_cls(model)
        guider.set_edit_conds(positive, negative)
        guider.set_scales(TEXT_CFG, IMAGE_CFG)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
        synchronize()
        stamps.append(time.perf_counter())
        guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas,
                      callback=on_step, disable_pbar=True, seed=0)
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def run_diffusers(steps: int) -> list[float]:
        stamps = []

        def on_step(pipeline, step, timestep, tensors):
            synchronize()
            stamps.append(time.perf_counter())
            return tensors

        # The first stamp is taken when the UNet is first called, after image and prompt handling.
        forward = pipe.unet.forward

        def first_call_stamp(*args, **kwargs):
            if not stamps:
                synchronize()
                stamps.append(time.perf_counter())
            return forward(*args, **kwargs)

        pipe.unet.forward = first_call_stamp
        try:
            with torch.no_grad():
                pipe(image=image_latent.to(device, dtype), prompt_embeds=text.to(device, dtype),
                     negative_prompt_embeds=null.to(device, dtype), num_inference_steps=steps,
                     guidance_scale=TEXT_CFG, image_guidance_scale=IMAGE_CFG, latents=noise.to(device, dtype),
                     output_type="latent", callback_on_step_end=on_step)
        finally:
            del pipe.unet.forward
        return [b - a for a, b in zip(stamps, stamps[1:])]

    run_ours(1)  # warm-up: loads, allocations, kernel selection
    run_diffusers(1)
    per_step = {"ours": [], "diffusers": []}
    for _ in range(opts.repeats):  # alternate, so drifting machine load hits both alike
        per_step["ours"] += run_ours(opts.steps)
        per_step["diffusers"] += run_diffusers(opts.steps)
    ours, theirs = statistics.median(per_step["ours"]), statistics.median(per_step["diffusers"])
    print(f"device {device}, dtype {dtype}, {opts.size}px, batch 3 (dual CFG), threads {torch.get_num_threads()}, "
          f"ComfyUI attention {comfy.ldm.modules.attention.optimized_attention.__name__}")
    print(f"per step  ours {ours * 1000:8.1f} ms   diffusers {theirs * 1000:8.1f} ms   "
          f"ratio ours/diffusers {ours / theirs:.3f}  (target <= 1.05)")
    best_ours, best_theirs = min(per_step["ours"]), min(per_step["diffusers"])
    print(f"fastest   ours {best_ours * 1000:8.1f} ms   diffusers {best_theirs * 1000:8.1f} ms   "
          f"ratio {best_ours / best_theirs:.3f}")
    print(f"steps     ours {[round(t * 1000) for t in per_step['ours']]}")
    print(f"          diffusers {[round(t * 1000) for t in per_step['diffusers']]}")


def _guider_class(comfyui_path: str):
    """Our guider class, importing the pack as `lmm_edit` (editable install or the repo beside it)."""
    import importlib

    import_pack()
    # nodes/guidance.py imports ComfyUI's node modules; `utils.extra_config` must come first (docs/comfyui.md).
    importlib.import_module("utils.extra_config")
    from lmm_edit.nodes.guidance import InstructPix2PixGuider

    return InstructPix2PixGuider


if __name__ == "__main__":
    main()
