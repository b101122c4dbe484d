"""The attn2 replace patch of one UNet cross-attention layer: text attention plus stacked image branches.

ComfyUI (``comfy/ldm/modules/attention.py``, ``BasicTransformerBlock.forward``) calls an attn2 replace
patch as ``patch(q, k, v, extra_options) -> out`` with attn2's projected ``q [B, Lq, H*D]`` and
``k, v [B, Lt, H*D]``, and feeds ``out`` to ``attn2.to_out``. ``extra_options`` holds every
``transformer_options`` entry: ``n_heads``, ``cond_or_uncond`` (one entry per guidance branch batched in
this call), ``sigmas`` (the current sigma per row), ``original_shape`` (the UNet input ``[B, C, h, w]``)
and, moved there by ``nodes/model_conds.py``, the pack's model conds: each branch's image tokens
``[B, N, D_ctx]``, already batched by ComfyUI in the same row order as ``q``. So nothing here splits
the batch by position; the tokens of the unconditional rows are those the negative conditioning carries.

One ``ImageBranchPatch`` per attn2 layer holds every branch stacked on the model (as
ComfyUI_IPAdapter_plus's ``Attn2Replace`` accumulates adapters); a branch is skipped when its sigma
window excludes this step, its weight is 0, or the conditioning does not carry its tokens. With no
branch left the layer runs ``text_attention`` (ComfyUI's own attention, injected by the node), so it
is exactly the unpatched layer. This module imports nothing of ComfyUI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ...kernels import use_backend
from .decoupled_attention import ImageBranch, decoupled_attention
from .load import ImageAdapter
from .query_mask import mask_to_query_weights

TOKEN_KEY_FORMAT = "lmm_edit_image_tokens_{}"  # model cond key of branch n (nodes/model_conds.py prefix)
BACKEND_OPTION = "lmm_edit_attention_backend"  # transformer_options entry naming a forced kernels backend
AUTO_BACKEND = "auto"

TextAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]
LOG = logging.getLogger(__name__)


def kernel_text_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
    """Text-only attention through kernels/ (the default when no host attention is injected)."""
    return decoupled_attention(q, k, v, extra_options["n_heads"])


@dataclass(frozen=True, eq=False)
class ImageBranchSettings:
    """One stacked image branch.

    adapter: its per-layer ``to_k_ip``/``to_v_ip`` weights are read at call time (where ComfyUI loaded them).
    weights_owner: what must be loaded with the UNet for those weights (a ComfyUI ModelPatcher), or None.
    weights: lambda, one value or one per image of the latent batch.
    sigma_start, sigma_end: active while ``sigma_end <= sigma <= sigma_start``; None = always.
    mask: ``[1 or b, H, W]`` image-space weight of the branch's effect (1 = full), or None.
    """

    token_key: str
    adapter: ImageAdapter
    weights: tuple[float, ...] = (1.0,)
    sigma_start: float | None = None
    sigma_end: float | None = None
    mask: torch.Tensor | None = None
    weights_owner: object | None = field(default=None, compare=False)

    def active_at(self, extra_options: dict) -> bool:
        if all(w == 0 for w in self.weights) or self.token_key not in extra_options:
            return False
        if self.sigma_start is None or "sigmas" not in extra_options:
            return True
        sigma = float(extra_options["sigmas"].reshape(-1)[0])  # one sigma per step, repeated per row
        return self.sigma_end <= sigma <= self.sigma_start

    def row_weights(self, rows: int, chunks: int, device: torch.device) -> float | torch.Tensor:
        """lambda per batch row: the latent batch (``rows // chunks`` images) repeated per guidance chunk."""
        if len(self.weights) == 1:
            return self.weights[0]
        images = rows // chunks
        if len(self.weights) != images:
            raise ValueError(
                f"image branch {self.token_key}: {len(self.weights)} per-image weights for a latent batch of "
                f"{images}; give one weight, or one per image"
            )
        return torch.tensor(self.weights, device=device, dtype=torch.float32).repeat(chunks)

    def row_mask(self, q: torch.Tensor, chunks: int, extra_options: dict) -> torch.Tensor | None:
        """``[1 or B, Lq]`` query-row weights of this layer from the image-space mask."""
        if self.mask is None:
            return None
        height, width = extra_options["original_shape"][-2:]
        rows = mask_to_query_weights(self.mask, q.shape[1], height, width).to(q.device, q.dtype)
        images = q.shape[0] // chunks
        if rows.shape[0] == 1:
            return rows
        if rows.shape[0] != images:
            raise ValueError(
                f"image branch {self.token_key}: a mask batch of {rows.shape[0]} for a latent batch of {images}; "
                "give one mask, or one per image"
            )
        return rows.repeat(chunks, 1)


class ImageBranchPatch:
    """attn2 replace patch of layer ``layer_index`` (adapter weight order) with the stacked image branches."""

    # Recognised by this marker rather than by class: ComfyUI and the tests may import the pack twice.
    is_lmm_edit_image_branch_patch = True

    def __init__(
        self,
        layer_index: int,
        branches: Sequence[ImageBranchSettings] = (),
        text_attention: TextAttention = kernel_text_attention,
    ) -> None:
        self.layer_index = layer_index
        self.branches = tuple(branches)
        self.text_attention = text_attention
        self._warned_missing: set[str] = set()

    def with_branch(self, branch: ImageBranchSettings) -> ImageBranchPatch:
        """A new patch with ``branch`` stacked on top (this one, shared by the upstream MODEL, is unchanged)."""
        return ImageBranchPatch(self.layer_index, (*self.branches, branch), self.text_attention)

    def __deepcopy__(self, memo: dict) -> ImageBranchPatch:
        # ComfyUI deep-copies model_options on every MODEL clone; adapters and masks are shared, not copied.
        return ImageBranchPatch(self.layer_index, self.branches, self.text_attention)

    def add(self, *args: object, **kwargs: object) -> None:
        """ComfyUI_IPAdapter_plus appends its adapters to an existing attn2 patch with ``.add(...)``; refuse clearly."""
        raise RuntimeError(
            "This model's cross-attention already carries LMM Edit's image branch; ComfyUI_IPAdapter_plus cannot add "
            "its adapter to it. Use LMMEdit_IAAImageBranch (with LMMEdit_AdapterLoader) for every IP-Adapter on this "
            "model: several branches stack."
        )

    def models(self) -> list:
        """What ComfyUI loads with the UNet (``ModelPatcher.model_patches_models``): the adapters' weights."""
        return [b.weights_owner for b in self.branches if b.weights_owner is not None]

    def _warn_missing(self, extra_options: dict) -> None:
        missing = [b.token_key for b in self.branches if b.token_key not in extra_options]
        new = [key for key in missing if key not in self._warned_missing]
        if new and self.layer_index == 0:
            self._warned_missing.update(new)
            LOG.warning(
                "LMM Edit image branch: the conditioning carries no %s, so that image branch is off. Feed the "
                "sampler the positive/negative outputs of the LMMEdit_IAAImageBranch node that made this MODEL.",
                ", ".join(new),
            )

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        active = [b for b in self.branches if b.active_at(extra_options)]
        if len(active) < len(self.branches):
            self._warn_missing(extra_options)
        if not active:
            return self.text_attention(q, k, v, extra_options)
        chunks = max(len(extra_options.get("cond_or_uncond", ())), 1)
        image_branches = []
        for branch in active:
            tokens = extra_options[branch.token_key]  # [B, N, D_ctx] in q's row order
            image_branches.append(
                ImageBranch(
                    tokens,
                    branch.adapter.to_k_ip[self.layer_index],
                    branch.adapter.to_v_ip[self.layer_index],
                    branch.row_weights(q.shape[0], chunks, q.device),
                    branch.row_mask(q, chunks, extra_options),
                )
            )
        with backend_choice(extra_options.get(BACKEND_OPTION, AUTO_BACKEND)):
            return decoupled_attention(q, k, v, extra_options["n_heads"], image_branches)


def backend_choice(name: str):
    """The kernels' own choice for ``AUTO_BACKEND``, else backend ``name`` forced (strict, no fallback)."""
    return contextlib.nullcontext() if name == AUTO_BACKEND else use_backend(name)


def next_branch_index(patches: Sequence[object]) -> int:
    """Index of the next branch: how many this pack's patches already hold (0 on an unpatched model)."""
    counts = {len(p.branches) for p in patches if is_image_branch_patch(p)}
    return max(counts, default=0)


def is_image_branch_patch(patch: object) -> bool:
    return getattr(patch, "is_lmm_edit_image_branch_patch", False) is True
