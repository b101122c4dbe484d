"""InsightEdit's Image Alignment Adapter (IAA): the LMM's ``[MM]`` hidden states -> image tokens.

Paper (InsightEdit, arXiv 2411.17323, Fig. 3; research/smartedit.md §5.2): IAA = Mapper -> Linear ->
LayerNorm. The Mapper (an MLP) maps the ``r`` hidden states ``h [r, D_llm]`` of the ``[MM]`` tokens to
one vector in the space of the CLIP image embedding of the target image (trained with
``L_IAA = ||CLIP(I_tar) - Mapper(h)||^2``); the Linear + LayerNorm expand it into ``N`` image tokens
for the UNet's decoupled cross-attention, as IP-Adapter's ``ImageProjModel`` does. The authors
released no model code or weights (``poppyxu/InsightEdit`` ships the data pipeline only), so the
choices the paper leaves open are ours, documented here:

- the Mapper is applied to each ``[MM]`` state and the ``r`` outputs are averaged (a per-token MLP,
  independent of ``r``; an MLP over the flattened ``32 x 4096`` states would need 131,072 weights per
  hidden unit and fix ``r``);
- GELU between Mapper layers (none after the last);
- ``N``, every width and the Mapper depth are whatever the checkpoint's tensors say.

Checkpoint layout (``.safetensors`` with these flat keys, or ``.bin`` holding the nested dict
``{"mapper": {...}, "image_proj": {...}, "ip_adapter": {...}}``), modelled on IP-Adapter so that the
``image_proj`` and per-layer K/V sections are exactly IP-Adapter's and the same loader serves both:

| key | shape | meaning |
|---|---|---|
| ``mapper.<2i>.weight`` | ``[D_{i+1}, D_i]`` | Mapper Linear i (0..depth-1); ``D_0 = D_llm``, ``D_depth = D_clip`` |
| ``mapper.<2i>.bias`` | ``[D_{i+1}]`` | (odd indices are the GELUs of an ``nn.Sequential``) |
| ``image_proj.proj.weight`` | ``[N * D_ctx, D_clip]`` | the paper's Linear: one CLIP vector -> N tokens |
| ``image_proj.proj.bias`` | ``[N * D_ctx]`` | |
| ``image_proj.norm.weight`` / ``.bias`` | ``[D_ctx]`` | the paper's LayerNorm, per token |
| ``ip_adapter.<2n+1>.to_k_ip.weight`` | ``[C_n, D_ctx]`` | K projection of the n-th UNet attn2 layer |
| ``ip_adapter.<2n+1>.to_v_ip.weight`` | ``[C_n, D_ctx]`` | V projection (layer order: ``cross_attention_layers.py``) |

For an SD1.5-class UNet with CLIP ViT-L/14 as the alignment target: ``D_clip = 768`` (the projected
``image_embeds``, the only 768-d CLIP image embedding, matching the paper's "1 x 768"),
``D_ctx = 768``, 16 layers with ``C_n`` in {320, 640, 1280}.
"""

from __future__ import annotations

import torch
from torch import nn

from .image_projection import ImageProjModel


def mapper_widths(mapper_state: dict[str, torch.Tensor]) -> list[int]:
    """``[D_llm, D_1, ..., D_clip]`` from ``<2i>.weight`` shapes; raises ValueError for a broken chain."""
    indices = sorted(int(k.split(".")[0]) for k in mapper_state if k.endswith(".weight"))
    if not indices or indices != list(range(0, 2 * len(indices), 2)):
        raise ValueError(f"mapper weights must be numbered 0, 2, 4, ...; found {indices}")
    widths = [mapper_state["0.weight"].shape[1]]
    for index in indices:
        out_features, in_features = mapper_state[f"{index}.weight"].shape
        if in_features != widths[-1]:
            raise ValueError(f"mapper.{index}.weight takes {in_features} inputs, the layer before gives {widths[-1]}")
        widths.append(out_features)
    return widths


class Mapper(nn.Sequential):
    """Per-token MLP ``D_llm -> ... -> D_clip`` with GELU between layers."""

    def __init__(self, widths: list[int]) -> None:
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(nn.Linear(d_in, d_out))
        super().__init__(*layers)


class ImageAlignmentAdapter(nn.Module):
    """``[MM]`` hidden states ``[B, r, D_llm]`` (or ``[r, D_llm]``) -> image tokens ``[B, N, D_ctx]``."""

    def __init__(self, mapper_widths: list[int], context_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.mapper = Mapper(mapper_widths)
        self.image_proj = ImageProjModel(mapper_widths[-1], context_dim, num_tokens)
        self.num_tokens = num_tokens
        self.context_dim = context_dim
        self.llm_dim = mapper_widths[0]

    def clip_embedding(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The Mapper's output ``[B, D_clip]``: the estimate of the target image's CLIP embedding."""
        if hidden_states.dim() == 2:
            hidden_states = hidden_states.unsqueeze(0)  # [1, r, D_llm]
        if hidden_states.shape[-1] != self.llm_dim:
            raise ValueError(
                f"the IAA expects [MM] hidden states of width {self.llm_dim} (its mapper.0.weight), got "
                f"{tuple(hidden_states.shape)}; the adapter was trained for another LMM"
            )
        first = self.mapper[0].weight
        return self.mapper(hidden_states.to(first.dtype)).mean(dim=1)  # [B, D_clip]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.clip_embedding(hidden_states))  # [B, N, D_ctx]

    @classmethod
    def from_sections(cls, mapper_state: dict[str, torch.Tensor], image_proj_state: dict[str, torch.Tensor]):
        """Build with sizes read from the tensors and load them (strict)."""
        sizes = ImageProjModel.sizes_from_state_dict(image_proj_state)
        widths = mapper_widths(mapper_state)
        if widths[-1] != sizes["clip_dim"]:
            raise ValueError(
                f"the mapper ends at width {widths[-1]} but image_proj.proj.weight takes {sizes['clip_dim']} inputs"
            )
        module = cls(widths, sizes["context_dim"], sizes["num_tokens"])
        state = {f"mapper.{k}": v for k, v in mapper_state.items()}
        state.update({f"image_proj.{k}": v for k, v in image_proj_state.items()})
        module.load_state_dict(state, strict=True, assign=True)  # keeps the file dtype
        return module
