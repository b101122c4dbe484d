"""LMMEdit_BIMConditioning: the encoded instruction through SmartEdit's Q-Former + BIM -> positive / negative.

positive = (cond, source latent, v'), negative = (null text, source latent, v'), as core's
InstructPixToPixConditioning plus v' on both: LMMEdit_DualCFGGuider derives the null-image branch
from negative, so the reference's three branches [(f', I), (∅, I), (∅, ∅)] all carry v'
(docs/smartedit.md, Guidance). Non-square sizes work: the BIM's v' is made at (h, w), where the
reference swaps them (loaders/smartedit/conditioning.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.v0_0_2 import io, ui

from ..loaders.instruction import LMMInstruction
from ..loaders.pixels import edit_pixels
from ..loaders.smartedit import SmartEditBridge, bridge_condition
from .bim_residual import BIM_RESIDUAL_KEY
from .guidance import SOURCE_IMAGE_KEY
from .model_conds import attach_model_cond
from .module_patchers import load_for_use
from .socket_types import BRIDGE, INSTRUCTION


def edit_conditionings(cond: torch.Tensor, null_text: list, source_latent: torch.Tensor, residual: torch.Tensor) -> tuple[list, list]:
    """positive [[cond, {source, v'}]], negative = null_text entries with source and v' added."""
    positive = [[cond, {SOURCE_IMAGE_KEY: source_latent}]]
    negative = [[tensor, {**options, SOURCE_IMAGE_KEY: source_latent}] for tensor, options in null_text]
    return attach_model_cond(positive, BIM_RESIDUAL_KEY, residual), attach_model_cond(negative, BIM_RESIDUAL_KEY, residual)


def edit_region_mask(attention: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """BIM token-to-image attention [1, g, g] in 0..1 -> MASK [1, H, W] (bilinear).

    The CLIP grid covers the whole image squashed to a square, so stretching it back covers the image.
    """
    mask = F.interpolate(attention.float().unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)
    return mask[:, 0].clamp(0.0, 1.0)


def _check_instruction(instruction: LMMInstruction) -> None:
    if instruction.hidden_states.shape[0] == 0:
        raise ValueError(
            "The LMM wrote no image token, so there is nothing for the Q-Former to read. Turn on force_image_tokens "
            "in LMMEdit_LMMEncode, or try another seed, template or temperature 0."
        )


class BIMConditioningNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_BIMConditioning",
            display_name="SmartEdit BIM Conditioning",
            category="lmm_edit/conditioning",
            description="SmartEdit's Q-Former and Bidirectional Interaction Module: turns the encoded instruction into "
            "the UNet's text conditioning and its conv_in residual, with the source image, for LMMEdit_DualCFGGuider.",
            inputs=[
                BRIDGE.Input("bridge", tooltip="The bridge from LMMEdit_SmartEditLoader."),
                INSTRUCTION.Input("instruction", tooltip="The encoded instruction from LMMEdit_LMMEncode."),
                io.Vae.Input("vae", tooltip="The SD1.5 VAE (SmartEdit uses timbrooks/instruct-pix2pix's), which "
                             "encodes the source image for the UNet's extra input channels."),
                io.Image.Input("image", tooltip="The source image (the first of a batch), the same one the LMM saw."),
                io.Conditioning.Input("null_text", tooltip="CLIPTextEncode of an empty text with the SD1.5 CLIP-L text "
                                      "encoder (e.g. from the instruct-pix2pix checkpoint): the reference's "
                                      "unconditional text."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8, optional=True,
                             tooltip="Edit width in pixels; 0 = the source's, cropped to a multiple of 8. SmartEdit "
                             "was trained at 256 (the reference resizes to 256 x 256); 384 works too."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8, optional=True,
                             tooltip="Edit height in pixels; 0 = the source's, cropped to a multiple of 8."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="The instruction (Q-Former + BIM) with the "
                                       "source image and the BIM residual: positive of LMMEdit_DualCFGGuider."),
                io.Conditioning.Output(display_name="negative", tooltip="The null text with the source image and the "
                                       "BIM residual: negative of LMMEdit_DualCFGGuider."),
                io.Latent.Output(display_name="latent", tooltip="An empty latent of the edit size, to start sampling "
                                 "from (denoise 1.0)."),
                io.Mask.Output(display_name="edit_region", tooltip="Where the BIM looks: its token-to-image attention "
                               "at the edit size, 1 = strongest."),
            ],
        )

    @classmethod
    def execute(cls, bridge, instruction, vae, image, null_text, width=0, height=0) -> io.NodeOutput:
        module = bridge.model
        if not isinstance(module, SmartEditBridge):
            raise TypeError(f"LMMEdit_BIMConditioning needs SmartEdit's bridge; got a {type(module).__name__}")
        _check_instruction(instruction)
        pixels = edit_pixels(image, width, height)
        source_latent = vae.encode(pixels)
        load_for_use(bridge, whole=True)  # small; its raw query tokens are read directly
        out = bridge_condition(module, instruction, latent_hw=tuple(source_latent.shape[-2:]))
        # the fp16 conditioning upcast exactly; ComfyUI casts it to the UNet's dtype as the reference does
        positive, negative = edit_conditionings(out.cond.float(), null_text, source_latent, out.residual)
        mask = edit_region_mask(out.attention, pixels.shape[1], pixels.shape[2])
        # the mask is also shown on the node (core's mask preview), where the instruction points
        return io.NodeOutput(positive, negative, {"samples": torch.zeros_like(source_latent)}, mask,
                             ui=ui.PreviewMask(mask, cls=cls))


NODES = [BIMConditioningNode]
