"""The SDXL IP-Adapter `ip_adapter_global_local_2_view` of InstructAny2Pix: image projection and layer weights.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/diffusion/ip_adapter/ip_adapter.py`:
`ImageProjModel(cross_attention_dim, clip_embeddings_dim, clip_extra_context_tokens=4, num_crops=2)`
(`proj` Linear(C -> tokens * X), learned `raw_embed` [2, X] (global, local), `norm` LayerNorm(X)),
`IPAdapter.get_image_embeds` / `IPAdapterXL.generate` and `load_ip_adapter` (`.bin`:
`{"image_proj": ..., "ip_adapter": ...}`; `.safetensors`: the same keys prefixed `image_proj.` / `ip_adapter.`).

`forward(embeds [B, 2, C], mode, scales)`: per crop `proj` -> [B, 2, tokens, X]; the local crop becomes
`global * (1 - scales[1]) + local * scales[1]` (`scales[0]` is unused); `raw_embed[0]` is added to the global
tokens, `raw_embed[1]` to the local ones; `mode` keeps the global ("global", the pipeline's), the local
("local") or both crops; then LayerNorm. The pipeline feeds `[fused embedding, zeros]` with scales [1, 0.5]
(`IPAdapterXL.generate` default `scale_l=0.5`); the unconditional tokens are the projection of zeros with
scales [1, 1]: `LayerNorm(proj.bias + raw_embed[0])`, not zeros (fixture README quirk 10). The 4 global tokens
are appended after the 77 text tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelFileError
from ..ip_adapter.files import read_adapter_sections
from ..operations import DEFAULT_OPERATIONS
from ..state_checks import check_float_tensors, load_checked

NUM_CROPS = 2  # ImageProjModel default, used by IPAdapter.init_proj (global crop, local crop)
COND_SCALES = (1.0, 0.5)  # IPAdapterXL.generate: scale_g=1.0, scale_l=0.5
UNCOND_SCALES = (1.0, 1.0)  # IPAdapter.get_image_embeds: image_proj_model(image_embeds_neg, mode=mode)
MODES = ("global", "local", "both")
PROJ_KEYS = frozenset({"proj.weight", "proj.bias", "norm.weight", "norm.bias", "raw_embed"})


@dataclass(frozen=True)
class GlobalLocalProjConfig:
    clip_dim: int  # clip_embeddings_dim (ImageBind/OpenCLIP ViT-H: 1024)
    cross_dim: int  # cross_attention_dim (SDXL: 2048)
    tokens: int  # clip_extra_context_tokens (4)
    eps: float = 1e-5  # nn.LayerNorm default

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], path: str | Path) -> GlobalLocalProjConfig:
        if set(shapes) != PROJ_KEYS:
            raise ModelFileError(
                path, "image_proj keys proj.weight, proj.bias, norm.weight, norm.bias, raw_embed (InstructAny2Pix's "
                "two-view ImageProjModel)", f"image_proj keys {sorted(shapes)}",
                "use ckpts/sdxl/ip_adapter_global_local_2_view.bin of the InstructAny2Pix release; plain IP-Adapters "
                "have no raw_embed",
            )
        cross = shapes["norm.weight"][0]
        out, clip_dim = shapes["proj.weight"]
        if out % cross or shapes["raw_embed"] != (NUM_CROPS, cross):
            raise ModelFileError(
                path, f"proj.weight [tokens x {cross}, C] and raw_embed [{NUM_CROPS}, {cross}]",
                f"proj.weight {list(shapes['proj.weight'])}, raw_embed {list(shapes['raw_embed'])}",
                "use the InstructAny2Pix ip_adapter_global_local_2_view file",
            )
        return cls(clip_dim=clip_dim, cross_dim=cross, tokens=out // cross)


class GlobalLocalImageProj(nn.Module):
    def __init__(self, config: GlobalLocalProjConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.proj = operations.Linear(config.clip_dim, config.tokens * config.cross_dim)
        self.norm = operations.LayerNorm(config.cross_dim, eps=config.eps)
        self.raw_embed = nn.Parameter(torch.zeros(NUM_CROPS, config.cross_dim))

    def forward(self, embeds: torch.Tensor, mode: str = "global", scales: tuple[float, float] = COND_SCALES) -> torch.Tensor:
        """embeds [B, 2, C] (global, local) -> image tokens [B, crops * tokens, X]."""
        if mode not in MODES:
            raise ValueError(f"projection mode must be one of {MODES}, not {mode!r}")
        c = self.config
        b = embeds.shape[0]
        tokens = self.proj(embeds).reshape(b, NUM_CROPS, c.tokens, c.cross_dim)
        glob, local = tokens[:, 0:1], tokens[:, 1:]
        local = glob * (1 - scales[1]) + local * scales[1]
        raw = self.raw_embed.to(tokens.dtype)
        glob = glob + raw[0][None, None]
        local = local + raw[1][None, None]
        kept = {"global": glob, "local": local, "both": torch.cat([glob, local], dim=1)}[mode]
        return self.norm(kept.reshape(b, -1, c.cross_dim))

    def conditional(self, fused: torch.Tensor, mode: str = "global") -> torch.Tensor:
        """The pipeline's conditional tokens of the fused embedding [B, C]: input [fused, zeros], scales [1, 0.5]."""
        return self(torch.stack([fused, torch.zeros_like(fused)], dim=1), mode, COND_SCALES)

    def unconditional(self, batch: int = 1, mode: str = "global") -> torch.Tensor:
        """The projection of zeros (scales [1, 1]) used for the negative prompt."""
        zeros = torch.zeros(batch, NUM_CROPS, self.config.clip_dim, dtype=self.proj.weight.dtype, device=self.proj.weight.device)
        return self(zeros, mode, UNCOND_SCALES)


@dataclass
class GlobalLocalAdapter:
    image_proj: GlobalLocalImageProj
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # (to_k_ip.weight, to_v_ip.weight) per cross-attention, in order
    layer_indices: list[int]  # the file's processor indices (odd: attn2 of every transformer block)


def read_layer_weights(ip_adapter: dict[str, torch.Tensor], path: str | Path) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
    """`ip_adapter.<i>.to_k_ip.weight` / `.to_v_ip.weight` pairs sorted by the integer index `i` (the position of
    the processor in `unet.attn_processors`, i.e. the UNet's attention layer order)."""
    indices = sorted({int(k.split(".")[0]) for k in ip_adapter if k.split(".")[0].isdigit()})
    pairs = []
    for i in indices:
        k, v = ip_adapter.get(f"{i}.to_k_ip.weight"), ip_adapter.get(f"{i}.to_v_ip.weight")
        if k is None or v is None:
            raise ModelFileError(
                path, f"ip_adapter.{i}.to_k_ip.weight and ip_adapter.{i}.to_v_ip.weight", "only one of them",
                "re-download the adapter file",
            )
        pairs.append((k, v))
    return indices, pairs


def load_global_local_adapter(path: str | Path, dtype: torch.dtype = torch.float32, operations=DEFAULT_OPERATIONS) -> GlobalLocalAdapter:
    """The projection module (CPU, `dtype`) and the per-layer IP key/value weights of the adapter file."""
    sections = read_adapter_sections(path)
    image_proj = sections["image_proj"]
    fix = "use ckpts/sdxl/ip_adapter_global_local_2_view.bin of the InstructAny2Pix release"
    check_float_tensors(image_proj, path, fix, lambda k: f"image_proj.{k}")
    check_float_tensors(sections["ip_adapter"], path, fix, lambda k: f"ip_adapter.{k}")
    config = GlobalLocalProjConfig.from_shapes({k: tuple(v.shape) for k, v in image_proj.items()}, path)
    with torch.device("meta"):
        module = GlobalLocalImageProj(config, operations)
    load_checked(module, {k: v.to(dtype) for k, v in image_proj.items()}, path, "the two-view image projection", fix,
                 lambda k: f"image_proj.{k}")
    indices, pairs = read_layer_weights(sections["ip_adapter"], path)
    width = {tuple(k.shape)[1] for k, _ in pairs} | {tuple(v.shape)[1] for _, v in pairs}
    if width != {config.cross_dim}:
        raise ModelFileError(
            path, f"to_k_ip/to_v_ip weights reading the {config.cross_dim}-wide image tokens",
            f"input widths {sorted(width)}", "use the InstructAny2Pix ip_adapter_global_local_2_view file",
        )
    return GlobalLocalAdapter(module.eval(), [(k.to(dtype), v.to(dtype)) for k, v in pairs], indices)
