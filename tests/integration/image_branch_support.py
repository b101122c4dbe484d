"""Helpers shared by the image-branch integration tests: references written from the papers' formulas,
and recorders that read what really reaches the UNet and its attn2 patches in ComfyUI."""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as functional

ADAPTER_FILE = "ip-adapter_sd15.safetensors"  # the name ip_adapter_edit.json uses (h94/IP-Adapter models/)
CLIP_IMAGE_EMBEDS = 768  # the tiny CLIP vision file is ViT-L/14 (selfcheck/clip_vision_files.py)
CONTEXT_DIM = 768  # SD1.5 text context


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-head softmax(q k^T / sqrt(D)) v in float64 on ``[B, L, H*D]`` inputs -> ``[B, Lq, H*D]``."""
    q, k, v = q.double(), k.double(), v.double()
    batch, q_len, width = q.shape
    d = width // heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, d).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d**0.5, dim=-1)
    return (weights @ split(v)).transpose(1, 2).reshape(batch, q_len, width)


def reference_decoupled_attention(q, k, v, heads, image_branches) -> torch.Tensor:
    """IP-Adapter's Z = Attn(Q, K_txt, V_txt) + sum lambda * m * Attn(Q, c W_k^T, c W_v^T) (arXiv 2308.06721, eq. 5).

    image_branches: ``(tokens [B, N, D_ctx], W_k [C, D_ctx], W_v [C, D_ctx], lambda per row [B], mask [B|1, Lq]|None)``.
    """
    out = softmax_attention(q, k, v, heads)
    for tokens, w_k, w_v, weight, mask in image_branches:
        tokens = tokens.double()
        image = softmax_attention(q, tokens @ w_k.double().T, tokens @ w_v.double().T, heads)
        factor = torch.as_tensor(weight, dtype=torch.float64).reshape(-1, 1, 1)
        if mask is not None:
            factor = factor * mask.double().reshape(mask.shape[0], -1, 1)
        out = out + factor * image
    return out


def reference_image_tokens(state: dict, embeds: torch.Tensor) -> torch.Tensor:
    """tencent-ailab/IP-Adapter ``ImageProjModel`` from the file's tensors: Linear -> [N, D] -> LayerNorm."""
    proj = state["image_proj"]
    context = proj["norm.weight"].shape[0]
    tokens = (embeds.float() @ proj["proj.weight"].T + proj["proj.bias"]).reshape(embeds.shape[0], -1, context)
    return functional.layer_norm(tokens, (context,), proj["norm.weight"], proj["norm.bias"])


class RecordedAttn2:
    """Wraps an installed attn2 replace patch; records each call's inputs, image tokens and output."""

    def __init__(self, inner, block_key, calls: list) -> None:
        self.inner, self.block_key, self.calls = inner, block_key, calls

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options; keep recording into the same list
        return self

    def models(self):
        return self.inner.models()

    def __call__(self, q, k, v, extra_options):
        out = self.inner(q, k, v, extra_options)
        kept = {key: value for key, value in extra_options.items() if key.startswith("lmm_edit_")}
        kept.update(n_heads=extra_options["n_heads"], cond_or_uncond=list(extra_options["cond_or_uncond"]),
                    original_shape=list(extra_options["original_shape"]))
        self.calls.append(dict(block=self.block_key, q=q.clone(), k=k.clone(), v=v.clone(), extra=kept,
                               out=out.clone()))
        return out


def record_attn2(model) -> tuple[object, list]:
    """A clone of ``model`` whose attn2 patches record their calls (in UNet order, per step)."""
    calls: list = []
    recorded = model.clone()
    replace = recorded.model_options["transformer_options"]["patches_replace"]["attn2"]
    for key, patch in list(replace.items()):
        recorded.set_model_attn2_replace(RecordedAttn2(patch, key, calls), *key)
    return recorded, calls


class UNetForwardRecorder:
    """DIFFUSION_MODEL wrapper: the UNet's own inputs (8-channel x, timesteps, context) and its output (eps)."""

    KEY = "lmm_edit.tests.unet_forward_recorder"

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        self.calls.append(dict(x=x.clone(), t=timesteps.clone(), context=context.clone(),
                               order=list(transformer_options["cond_or_uncond"]), eps=out.clone()))
        return out

    def install(self, model):
        import comfy.patcher_extension

        recorded = model.clone()
        recorded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, self.KEY, self)
        return recorded


def sample(guider, latent: dict, seed: int = 7, steps: int = 2) -> torch.Tensor:
    """Euler on the 'normal' schedule from the given guider (as test_dual_cfg_guider does)."""
    import comfy.sample
    import comfy.samplers

    samples = latent["samples"]
    noise = comfy.sample.prepare_noise(samples, seed)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", steps)
    return guider.sample(noise, samples, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=seed)


def clip_vision_output(image_embeds: torch.Tensor, penultimate: torch.Tensor | None = None):
    """A CLIP_VISION_OUTPUT as core CLIPVisionEncode returns it (comfy.clip_vision.Output), from given tensors."""
    import comfy.clip_vision

    out = comfy.clip_vision.Output()
    out["image_embeds"] = image_embeds
    out["penultimate_hidden_states"] = penultimate
    return out


def tiny_ip2p_adapter_state(seed: int = 5) -> dict:
    """A basic IP-Adapter for the tiny IP2P UNet (conftest's checkpoint), reading ViT-L-wide image embeds."""
    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG
    from lmm_edit.selfcheck.ip_adapter_files import tiny_ip_adapter_state

    # model_channels 320: what ComfyUI detects for the SD1.5 InstructPix2Pix checkpoint
    layers = cross_attention_layers(dict(TINY_UNET_LDM_CONFIG, model_channels=320))
    return tiny_ip_adapter_state("basic", layer_channels=[layer.channels for layer in layers],
                                 context_dim=CONTEXT_DIM, clip_dim=CLIP_IMAGE_EMBEDS, seed=seed)


def write_into(folder: pathlib.Path, name: str, writer) -> str:
    """Write a model file once into a models/ sub-folder; returns its name."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        writer(path)
    return name
