"""The image tokens one image branch feeds the UNet: conditional from the source, unconditional by convention.

Conditional tokens (``[1, n*N, D_ctx]``): n reference images are projected separately and their
tokens concatenated into one image prompt, as diffusers' ``MultiIPAdapterImageProjection`` and
ComfyUI_IPAdapter_plus do with several images per adapter.

Unconditional tokens (what the guidance's unconditional branches see) follow what each family was
trained with when the image was dropped:

| family | unconditional tokens | reference |
|---|---|---|
| ``ip-adapter`` | projection of a zero ``image_embeds`` vector (not zero tokens: bias + LayerNorm) | tencent-ailab/IP-Adapter ``IPAdapter.get_image_embeds`` (``torch.zeros_like``), diffusers ``prepare_ip_adapter_image_embeds``, IPAdapter_plus |
| ``ip-adapter-plus`` | Resampler over CLIP's penultimate states of an all-zero ``pixel_values`` (after normalisation) | tencent ``IPAdapterPlus.get_image_embeds``, diffusers (``image_encoder(torch.zeros_like(image))``) |
| ``insightedit-iaa`` | the IAA's projection of a zero CLIP embedding (the Mapper's target space), the basic IP-Adapter convention | ours: the paper trains the IAA IP-Adapter style and states no null input |
| ``any2pix-global-local`` | projection of zero views with scales [1, 1] (global mode: ``LayerNorm(proj.bias + raw_embed[0])``) | jacklishufan/InstructAny2Pix @ d11e49b ``IPAdapter.get_image_embeds`` |

ComfyUI_IPAdapter_plus differs for Plus: it encodes a black 224 px image (zeros *before*
normalisation); we follow the training code (tencent ``tutorial_train_plus.py`` zeroes the
preprocessed ``clip_image``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .files import ANY2PIX_GLOBAL_LOCAL, INSIGHTEDIT_IAA, IP_ADAPTER, IP_ADAPTER_PLUS
from .load import ImageAdapter


def adapter_input_width(adapter: ImageAdapter) -> int:
    """Width of what the adapter's projection reads: CLIP ``image_embeds``, CLIP hidden states, ``[MM]`` states or
    the embedding of the global-local adapter."""
    projection = adapter.projection
    if adapter.family == ANY2PIX_GLOBAL_LOCAL:
        return projection.input_width
    if adapter.family == IP_ADAPTER:
        return projection.proj.in_features
    if adapter.family == IP_ADAPTER_PLUS:
        return projection.proj_in.in_features
    return projection.llm_dim


def _one_prompt(tokens: torch.Tensor) -> torch.Tensor:
    """``[n, N, D] -> [1, n*N, D]``: n images become one image prompt (concatenated tokens)."""
    return tokens.reshape(1, tokens.shape[0] * tokens.shape[1], tokens.shape[2])


def conditional_tokens(adapter: ImageAdapter, source: torch.Tensor) -> torch.Tensor:
    """Image tokens ``[1, n*N, D_ctx]`` on CPU from the family's input.

    source: ``image_embeds [n, D_clip]`` (IP-Adapter), ``penultimate_hidden_states [n, P, D_vis]`` (Plus),
    ``LMMInstruction.hidden_states [r, D_llm]`` (IAA; one image prompt of N tokens), or an embedding ``[n, C]``
    (global-local adapter; also ``[n, 2, C]``, the global and local views).
    Raises ValueError naming the expected width when the source does not fit the adapter.
    """
    width = adapter_input_width(adapter)
    if adapter.family == IP_ADAPTER_PLUS:
        fits = source.dim() == 3
    elif adapter.family == ANY2PIX_GLOBAL_LOCAL:
        fits = source.dim() == 2 or (source.dim() == 3 and source.shape[1] == 2)
    else:
        fits = source.dim() == 2
    if not fits or source.shape[-1] != width:
        raise ValueError(_mismatch_message(adapter, source, width))
    tokens = adapter.image_tokens(source)  # [n, N, D] (IAA: [1, N, D])
    return _one_prompt(tokens).cpu()


def unconditional_tokens(
    adapter: ImageAdapter, num_images: int, blank_image_states: torch.Tensor | None = None
) -> torch.Tensor:
    """Unconditional image tokens ``[1, num_images*N, D_ctx]`` on CPU, shaped like ``conditional_tokens``.

    blank_image_states: for IP-Adapter Plus only, CLIP's penultimate states ``[1, P, D_vis]`` of an
    all-zero (normalised) ``pixel_values``; the other families need nothing.
    """
    device = adapter.to_k_ip[0].device
    if adapter.family == ANY2PIX_GLOBAL_LOCAL:
        with torch.no_grad():
            return _one_prompt(adapter.projection.unconditional(num_images)).cpu()
    if adapter.family == IP_ADAPTER:
        zeros = torch.zeros(num_images, adapter_input_width(adapter), device=device)
        return _one_prompt(adapter.image_tokens(zeros)).cpu()
    if adapter.family == INSIGHTEDIT_IAA:
        image_proj = adapter.projection.image_proj
        with torch.no_grad():
            zeros = torch.zeros(1, image_proj.proj.in_features, device=device, dtype=image_proj.proj.weight.dtype)
            tokens = image_proj(zeros)  # [1, N, D]: the IAA makes one prompt from r [MM] states
        return tokens.cpu()
    if blank_image_states is None:
        raise ValueError(
            "IP-Adapter Plus computes its unconditional tokens from CLIP vision's view of a blank image: "
            "pass the CLIP vision model's penultimate states of a zero pixel_values"
        )
    tokens = adapter.image_tokens(blank_image_states)  # [1, N, D]
    return _one_prompt(tokens.expand(num_images, -1, -1)).cpu()


def blank_image_states(penultimate_states: Callable[[torch.Tensor], torch.Tensor], image_size: int,
                       device: torch.device) -> torch.Tensor:
    """CLIP's penultimate states ``[1, P, D_vis]`` of an all-zero normalised ``pixel_values`` (Plus's null image).

    penultimate_states: the CLIP vision model's forward from ``pixel_values [1, 3, S, S]`` to its penultimate
    hidden states; zeros *after* normalisation, as tencent ``tutorial_train_plus.py`` drops the image.
    """
    with torch.no_grad():
        return penultimate_states(torch.zeros(1, 3, image_size, image_size, device=device))


def _mismatch_message(adapter: ImageAdapter, source: torch.Tensor, width: int) -> str:
    found = f"a tensor of shape {tuple(source.shape)}"
    if adapter.family == IP_ADAPTER:
        return (
            f"the IP-Adapter {adapter.path} reads CLIP vision image_embeds [images, {width}], found {found}. "
            f"Use the CLIP vision model it was trained with ({_clip_vision_hint(width)})."
        )
    if adapter.family == IP_ADAPTER_PLUS:
        return (
            f"the IP-Adapter Plus {adapter.path} reads CLIP vision penultimate hidden states [images, tokens, {width}], "
            f"found {found}. Use the CLIP vision model it was trained with ({_clip_vision_hint(width)})."
        )
    if adapter.family == ANY2PIX_GLOBAL_LOCAL:
        return (
            f"the InstructAny2Pix adapter {adapter.path} reads an embedding [images, {width}] (the fused embedding of "
            f"the Any2Pix nodes, or CLIP ViT-H image_embeds) or its two views [images, 2, {width}], found {found}. "
            "Feed it the embedding made with the InstructAny2Pix files of the same release."
        )
    return (
        f"the InsightEdit IAA {adapter.path} reads [MM] hidden states [r, {width}], found {found}: the adapter was "
        "trained for another multimodal LLM. Use the LMM the IAA was trained with."
    )


# Widths of the CLIP vision encoders IP-Adapter releases use (h94/IP-Adapter model cards).
_CLIP_VISION_BY_WIDTH = {
    1024: "CLIP-ViT-H-14-laion2B-s32B-b79K: image_embeds 1024, hidden 1280",
    1280: "CLIP-ViT-H-14 hidden states (Plus), or CLIP-ViT-bigG-14 image_embeds (SDXL base)",
    768: "CLIP ViT-L/14 image_embeds",
}


def _clip_vision_hint(width: int) -> str:
    return _CLIP_VISION_BY_WIDTH.get(width, f"one whose output is {width} wide")
