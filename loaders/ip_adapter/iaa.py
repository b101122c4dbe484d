"""InsightEdit's Image Alignment Adapter (IAA): the LMM's ``[MM]`` hidden states -> image tokens.

Paper (InsightEdit, arXiv 2411.17323, Fig. 3; docs/smartedit.md, InsightEdit): IAA = Mapper -> Linear ->
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

from dataclasses import dataclass

import torch
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from .image_projection import ImageProjConfig, ImageProjModel


class Mapper(nn.Sequential):
    """Per-token MLP ``D_llm -> ... -> D_clip`` with GELU between layers."""

    def __init__(self, widths: list[int], operations=DEFAULT_OPERATIONS) -> None:
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.GELU())
            layers.append(operations.Linear(d_in, d_out))
        super().__init__(*layers)


@dataclass(frozen=True)
class IAAConfig:
    mapper_widths: tuple[int, ...]  # [D_llm, D_1, ..., D_clip]
    projection: ImageProjConfig

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> IAAConfig:
        """Sizes from an IAA file's ``mapper.*`` and ``image_proj.*`` shapes; ValueError for a broken chain."""
        mapper = {k[len("mapper."):]: v for k, v in shapes.items() if k.startswith("mapper.")}
        projection = ImageProjConfig.from_shapes(
            {k[len("image_proj."):]: v for k, v in shapes.items() if k.startswith("image_proj.")}
        )
        indices = sorted(int(k.split(".")[0]) for k in mapper if k.endswith(".weight"))
        if not indices or indices != list(range(0, 2 * len(indices), 2)):
            raise ValueError(f"mapper weights must be numbered 0, 2, 4, ...; found {indices}")
        widths = [mapper["0.weight"][1]]
        for index in indices:
            out_features, in_features = mapper[f"{index}.weight"]
            if in_features != widths[-1]:
                raise ValueError(f"mapper.{index}.weight takes {in_features} inputs, the layer before gives {widths[-1]}")
            widths.append(out_features)
        if widths[-1] != projection.clip_dim:
            raise ValueError(
                f"the mapper ends at width {widths[-1]} but image_proj.proj.weight takes {projection.clip_dim} inputs"
            )
        return cls(tuple(widths), projection)


class ImageAlignmentAdapter(nn.Module):
    """``[MM]`` hidden states ``[B, r, D_llm]`` (or ``[r, D_llm]``) -> image tokens ``[B, N, D_ctx]``.

    State-dict keys ``mapper.*`` and ``image_proj.*``, as the IAA file's sections.
    """

    def __init__(self, config: IAAConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.mapper = Mapper(list(config.mapper_widths), operations=operations)
        self.image_proj = ImageProjModel(config.projection, operations=operations)
        self.num_tokens = config.projection.num_tokens
        self.context_dim = config.projection.context_dim
        self.llm_dim = config.mapper_widths[0]

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
