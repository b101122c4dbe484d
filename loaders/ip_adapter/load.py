"""Image adapters for the UNet's decoupled cross-attention: IP-Adapter (base, Plus) and InsightEdit's IAA.

One module type for the three families (``adapter_file.py``): an image projection that produces the
image tokens, and per attn2 layer the bias-free ``to_k_ip`` / ``to_v_ip`` projections, in the order
of ``cross_attention_layers.cross_attention_layers`` (ComfyUI block keys). All sizes come from the
file's tensors.

    adapter = load_image_adapter("models/ipadapter/ip-adapter_sd15.safetensors")
    adapter.check_unet(cross_attention_layers(unet_config), context_dim=768)   # at load time
    tokens = adapter.image_tokens(clip_vision_output.image_embeds)              # [B, 4, 768]
    branch = adapter.branch(layer_index, tokens, weight=0.8)                    # per attn2 call
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelFileError
from ..operations import DEFAULT_OPERATIONS
from ..state_checks import check_float_tensors, load_checked
from .cross_attention_layers import CrossAttentionLayer, weight_module_key
from .decoupled_attention import ImageBranch
from .files import (
    ANY2PIX_GLOBAL_LOCAL,
    INSIGHTEDIT_IAA,
    IP_ADAPTER,
    IP_ADAPTER_PLUS,
    Sections,
    read_adapter_sections,
    recognise_adapter_family,
)
from .global_local import global_local_projection
from .iaa import IAAConfig, ImageAlignmentAdapter
from .image_projection import ImageProjConfig, ImageProjModel, Resampler, ResamplerConfig

# What each family's projection reads (the node feeds it from CLIP vision or the LMM encoder).
INPUT_IMAGE_EMBEDS = "image_embeds"  # CLIP vision projected embedding [B, D_clip]
INPUT_PENULTIMATE = "penultimate_hidden_states"  # CLIP vision penultimate layer [B, 257, D_vis]
INPUT_MM_HIDDEN_STATES = "mm_hidden_states"  # LMMInstruction.hidden_states [r, D_llm]
INPUT_EMBEDDING = "embedding"  # an image-space embedding [n, C] given directly (InstructAny2Pix's fused one)
FAMILY_INPUT = {
    IP_ADAPTER: INPUT_IMAGE_EMBEDS,
    IP_ADAPTER_PLUS: INPUT_PENULTIMATE,
    INSIGHTEDIT_IAA: INPUT_MM_HIDDEN_STATES,
    ANY2PIX_GLOBAL_LOCAL: INPUT_EMBEDDING,
}


def _layer_weights(sections: Sections, path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    layers = sections["ip_adapter"]
    numbers = sorted(int(k.split(".")[0]) for k in layers if k.endswith(".to_k_ip.weight"))
    expected = [int(weight_module_key(n)) for n in range(len(numbers))]
    if numbers != expected:
        raise ModelFileError(
            path,
            f"ip_adapter.<2n+1>.to_k_ip.weight for n = 0..{len(numbers) - 1} (1, 3, 5, ...)",
            f"layer numbers {numbers[:20]}",
            "the file is damaged or not an IP-Adapter; download it again",
        )
    to_k, to_v = [], []
    for number in numbers:
        k_key, v_key = f"{number}.to_k_ip.weight", f"{number}.to_v_ip.weight"
        if v_key not in layers or layers[v_key].shape != layers[k_key].shape or layers[k_key].dim() != 2:
            found = tuple(layers[v_key].shape) if v_key in layers else "nothing"
            raise ModelFileError(
                path,
                f"ip_adapter.{v_key} shaped like ip_adapter.{k_key} {tuple(layers[k_key].shape)}",
                str(found),
                "the file is damaged; download it again",
            )
        to_k.append(layers[k_key])
        to_v.append(layers[v_key])
    return to_k, to_v


def _projection(family: str, sections: Sections, path: Path, operations=DEFAULT_OPERATIONS) -> nn.Module:
    """The family's projection, sized from its tensors (``Config.from_shapes``) and loaded strictly in the file dtype."""
    if family == ANY2PIX_GLOBAL_LOCAL:
        return global_local_projection(sections["image_proj"], path, operations)
    if family == INSIGHTEDIT_IAA:
        state = {f"{name}.{k}": v for name in ("mapper", "image_proj") for k, v in sections[name].items()}
        config_type, model_type = IAAConfig, ImageAlignmentAdapter
    else:
        state = sections["image_proj"]
        config_type, model_type = (ImageProjConfig, ImageProjModel) if family == IP_ADAPTER else (ResamplerConfig, Resampler)
    fix = "the file is damaged or mixes two adapters; download it again"
    try:
        config = config_type.from_shapes({k: tuple(v.shape) for k, v in state.items()})
    except (ValueError, KeyError) as err:
        if isinstance(err, ModelFileError):
            raise
        missing = f"no tensor {err.args[0]}" if isinstance(err, KeyError) else str(err).splitlines()[0][:300]
        raise ModelFileError(
            path, f"a consistent {family} image projection (image_proj/mapper shapes that chain)", missing, fix,
        ) from err
    with torch.device("meta"):
        module = model_type(config, operations=operations)
    # keeps the file dtype; IAA keys are already `mapper.*` / `image_proj.*`
    return load_checked(module, state, path, f"the {family} image projection", fix,
                        (lambda k: k) if family == INSIGHTEDIT_IAA else (lambda k: f"image_proj.{k}"))


class ImageAdapter(nn.Module):
    """An IP-Adapter or IAA: ``projection`` (inputs -> image tokens ``[B, N, D_ctx]``) + per-layer K/V weights.

    Attributes: ``family`` (``adapter_file.FAMILIES``), ``input_kind`` (what ``image_tokens`` reads),
    ``path``, ``num_tokens`` N, ``context_dim`` D_ctx, ``layer_channels`` (``to_k_ip`` out-features per layer).
    """

    def __init__(
        self, family: str, projection: nn.Module, to_k_ip: Sequence[torch.Tensor], to_v_ip: Sequence[torch.Tensor],
        path: str = "",
    ) -> None:
        super().__init__()
        self.family = family
        self.input_kind = FAMILY_INPUT[family]
        self.path = path
        self.projection = projection
        self.to_k_ip = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in to_k_ip)
        self.to_v_ip = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in to_v_ip)
        self.projection.requires_grad_(False)

    @property
    def num_tokens(self) -> int:
        return self.projection.num_tokens

    @property
    def context_dim(self) -> int:
        return self.to_k_ip[0].shape[1]

    @property
    def layer_channels(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.to_k_ip)

    def image_tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """Image tokens ``[B, N, D_ctx]`` from the family's input (see ``input_kind``), in the adapter's dtype."""
        with torch.no_grad():
            return self.projection(inputs.to(self.to_k_ip[0].device))

    def branch(
        self,
        layer_index: int,
        tokens: torch.Tensor,
        weight: float | torch.Tensor = 1.0,
        mask: torch.Tensor | None = None,
    ) -> ImageBranch:
        """The ``ImageBranch`` of attn2 layer ``layer_index`` for ``decoupled_attention``."""
        return ImageBranch(tokens, self.to_k_ip[layer_index], self.to_v_ip[layer_index], weight, mask)

    def check_unet(self, layers: Sequence[CrossAttentionLayer], context_dim: int) -> None:
        """Raise ``ModelFileError`` unless this adapter fits a UNet with these attn2 layers and text width."""
        expected = tuple(layer.channels for layer in layers)
        if self.context_dim != context_dim or self.layer_channels != expected:
            kind = "SDXL" if self.context_dim == 2048 else "SD1.5" if self.context_dim == 768 else "another"
            raise ModelFileError(
                self.path,
                f"an adapter for this UNet: {len(expected)} cross-attention layers with channels "
                f"{_channels_text(expected)} over a {context_dim}-wide text context",
                f"a {self.family} file for {kind} UNets: {len(self.layer_channels)} layers with channels "
                f"{_channels_text(self.layer_channels)} over a {self.context_dim}-wide context",
                "pick the adapter made for this checkpoint's base model (SD1.5 adapters end in _sd15, SDXL in _sdxl)",
            )


def _channels_text(channels: Sequence[int]) -> str:
    """``[320, 320, 640]`` -> ``"[320 x2, 640]"`` (SDXL lists 70 layers)."""
    runs: list[list[int]] = []
    for c in channels:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    return "[" + ", ".join(f"{c} x{n}" if n > 1 else str(c) for c, n in runs) + "]"


def load_image_adapter(path: str | Path, operations=DEFAULT_OPERATIONS) -> ImageAdapter:
    """Read an IP-Adapter (base / Plus), InsightEdit IAA or InstructAny2Pix global-local file (``.safetensors`` or ``.bin``) into an ``ImageAdapter``.

    Raises ``ModelFileError`` naming the file, the expected layout and what was found for an
    unreadable, truncated, foreign or inconsistent file.
    """
    path = Path(path)
    sections = read_adapter_sections(path)
    for name, tensors in sections.items():
        check_float_tensors(tensors, path, "download the adapter file again", lambda k, name=name: f"{name}.{k}")
    family = recognise_adapter_family(sections, path)
    to_k, to_v = _layer_weights(sections, path)
    projection = _projection(family, sections, path, operations)
    if to_k[0].shape[1] != projection.context_dim or any(w.shape[1] != to_k[0].shape[1] for w in to_k):
        raise ModelFileError(
            path,
            f"every to_k_ip/to_v_ip taking the {projection.context_dim}-wide image tokens the projection makes",
            f"in-features {sorted({w.shape[1] for w in to_k})}",
            "the file mixes two adapters; download it again",
        )
    return ImageAdapter(family, projection, to_k, to_v, str(path))
