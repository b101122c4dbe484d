"""A tiny random SDXL-family checkpoint (single file) that core ``CheckpointLoaderSimple`` loads, and the LDM
(ComfyUI) UNet config of a diffusers SDXL-shaped UNet.

ComfyUI 0.3.64 recognises an SDXL-family UNet by ``comfy/supported_models.py`` ``unet_config``: model_channels
320, context_dim 2048, adm_in_channels 2816, use_linear_in_transformer and an exact ``transformer_depth`` list
(one entry per input res block). The smallest UNet with one of those lists is KOALA_700M's ``[0, 2, 5]`` on a
single level (channel_mult [1], three res blocks: 0, 2 and 5 transformer blocks), no attention on the way up
and a middle block of res blocks only: ComfyUI builds ``model_base.SDXL`` for it (``KOALA_700M`` subclasses
``SDXL``: same text encoders, latent format and conds). About 50 M UNet parameters.

The text encoders (CLIP-L and CLIP-G, ``comfy/sdxl_clip.py``) and the VAE are built by ComfyUI at their real,
fixed sizes, so they keep them here (random weights); that is most of the file (~1.8 GB in fp16). Every part
is made from ComfyUI's own modules (on the meta device, for names and shapes) and saved through the model
config's ``process_*_state_dict_for_saving``, as core ``CheckpointSave`` writes a checkpoint, so the file is
what ComfyUI itself reads back. ComfyUI must be importable (the edit command and the integration tests run it).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import torch
from safetensors.torch import save_file

# comfy/model_detection.py detect_unet_config keys, for the KOALA_700M-matching tiny UNet
TINY_SDXL_UNET_CONFIG = dict(
    use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
    num_classes="sequential", adm_in_channels=2816, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[3], channel_mult=[1], transformer_depth=[0, 2, 5], transformer_depth_output=[0, 0, 0, 0],
    transformer_depth_middle=-1, use_linear_in_transformer=True, context_dim=2048,
    use_temporal_resblock=False, use_temporal_attention=False,
    num_heads=-1, num_head_channels=64,  # supported_models.SDXL.unet_extra_config
)
# comfy/sd.py VAE: the SD / SDXL AutoencoderKL (the SDXL latent scale 0.13025 comes from the model's latent format)
SDXL_VAE_DDCONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                         ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def random_like_shapes(shapes: Mapping[str, torch.Size], seed: int, dtype: torch.dtype = torch.float16,
                       std: float = 0.02) -> dict[str, torch.Tensor]:
    """Seeded weights that keep activations finite through deep random stacks (as ip2p_models.randomise_):
    biases N(0, std), 1-d weights (norms, scales) 1 + N(0, std), other weights N(0, 1/fan_in)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("position_ids"):
            out[name] = torch.arange(shape[-1]).expand(tuple(shape)).clone()
            continue
        value = torch.randn(tuple(shape), generator=generator)
        if name.endswith("bias"):
            value *= std
        elif len(shape) <= 1:
            value = 1.0 + value * std
        else:
            value /= max(int(torch.Size(shape[1:]).numel()), 1) ** 0.5
        out[name] = value.to(dtype)
    return out


def comfy_part_shapes(unet_config: Mapping[str, object] = TINY_SDXL_UNET_CONFIG) -> dict[str, dict[str, torch.Size]]:
    """Names and shapes of ComfyUI's own UNet, SDXL text encoders and VAE (built on the meta device)."""
    import comfy.ldm.models.autoencoder
    import comfy.ldm.modules.diffusionmodules.openaimodel
    import comfy.ops
    import comfy.sdxl_clip

    with torch.device("meta"):
        unet = comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel(
            **dict(unet_config), dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta", dtype=torch.float32)
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(SDXL_VAE_DDCONFIG), embed_dim=4)
    return {name: {k: v.shape for k, v in module.state_dict().items()}
            for name, module in (("unet", unet), ("clip", clip), ("vae", vae))}


def tiny_sdxl_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The single-file checkpoint's tensors, named by ComfyUI's SDXL saving rules."""
    import comfy.supported_models

    shapes = comfy_part_shapes()
    config = comfy.supported_models.KOALA_700M(dict(TINY_SDXL_UNET_CONFIG))
    state: dict[str, torch.Tensor] = {}
    state.update(config.process_unet_state_dict_for_saving(random_like_shapes(shapes["unet"], seed, dtype)))
    clip = {k: v for k, v in random_like_shapes(shapes["clip"], seed + 1, dtype).items() if not k.endswith("logit_scale")}
    state.update(config.process_clip_state_dict_for_saving(clip))
    state.update(config.process_vae_state_dict_for_saving(random_like_shapes(shapes["vae"], seed + 2, dtype)))
    return {k: v.contiguous() for k, v in state.items()}


def write_tiny_sdxl_checkpoint(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the checkpoint once (fp16); an existing file is kept (callers cache it per session)."""
    path = pathlib.Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file(tiny_sdxl_state_dict(seed), str(partial))
        partial.replace(path)
    return path


def ldm_unet_config(diffusers_config: Mapping[str, object]) -> dict[str, object]:
    """ComfyUI's (LDM) ``unet_config`` of a diffusers SDXL-shaped ``UNet2DConditionModel`` config.

    The keys ``comfy/model_detection.py`` ``detect_unet_config`` produces: per level ``layers_per_block`` res
    blocks; ``transformer_depth`` one entry per input res block (``transformer_layers_per_block`` of the level
    when its down block has cross-attention, else 0); ``transformer_depth_output`` one per output block,
    shallowest level first (``UNetModel`` pops it from the end); the middle block's depth is the deepest level's.
    diffusers' SDXL configs give ``attention_head_dim`` as the number of heads per level; ComfyUI takes one head
    width, ``num_head_channels`` (SDXL: 64).
    """
    c = diffusers_config
    channels = list(c["block_out_channels"])
    levels = len(channels)
    per_block = c["layers_per_block"]
    per_block = [per_block] * levels if isinstance(per_block, int) else list(per_block)
    depth = c.get("transformer_layers_per_block", 1)
    depth = [depth] * levels if isinstance(depth, int) else list(depth)
    heads = c["num_attention_heads"] or c["attention_head_dim"]
    heads = [heads] * levels if isinstance(heads, int) else list(heads)
    widths = {ch // h for ch, h in zip(channels, heads)}
    if len(widths) != 1 or any(ch % h for ch, h in zip(channels, heads)) or channels[0] <= 0:
        raise ValueError(f"heads {heads} over channels {channels}: ComfyUI's UNet needs one head width")
    if any(ch % channels[0] for ch in channels):
        raise ValueError(f"block_out_channels {channels} are not multiples of the first")
    down_attn = ["CrossAttn" in t for t in c["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in reversed(c["up_block_types"])]  # up blocks run deepest level first
    mid = c.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    return dict(
        use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
        num_classes="sequential" if c.get("addition_embed_type") == "text_time" else None,
        adm_in_channels=c.get("projection_class_embeddings_input_dim"),
        in_channels=c["in_channels"], out_channels=c["out_channels"], model_channels=channels[0],
        num_res_blocks=per_block, channel_mult=[ch // channels[0] for ch in channels],
        transformer_depth=[depth[lv] if down_attn[lv] else 0 for lv in range(levels) for _ in range(per_block[lv])],
        transformer_depth_output=[depth[lv] if up_attn[lv] else 0 for lv in range(levels) for _ in range(per_block[lv] + 1)],
        transformer_depth_middle=depth[-1] if mid == "UNetMidBlock2DCrossAttn" else -1,
        use_linear_in_transformer=bool(c.get("use_linear_projection", False)), context_dim=c["cross_attention_dim"],
        use_temporal_resblock=False, use_temporal_attention=False,
        num_heads=-1, num_head_channels=widths.pop(),
    )
