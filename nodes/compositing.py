"""LMMEdit_PreserveBackground and LMMEdit_EditRegionPreview: the edit kept inside its mask, and the mask shown.

The work is in loaders/compositing.py (plain torch); these nodes only wire it and show their mask
or overlay on the node (a preview image, as core PreviewImage does).
"""

from __future__ import annotations

from comfy_api.v0_0_2 import io, ui  # the pinned V3 API version (comfy_api.latest moves)

from ..loaders.compositing import COLOUR_MATCH_MODES, OVERLAY_COLOURS, blend_weights, overlay_mask, preserve_background

DEFAULT_THRESHOLD = 0.5  # half the BIM attention's maximum (its edit_region is scaled to a maximum of 1)
DEFAULT_FEATHER = 16  # output pixels

THRESHOLD_TOOLTIP = ("Pixels where the mask is at least this count as edited (1), the rest as untouched (0); 0.5 = half "
                     "the maximum of the BIM edit_region. 0 keeps the mask's own soft values.")
FEATHER_TOOLTIP = ("Width in output pixels of the fade from the mask's edge inward. The fade never reaches outside the "
                   "mask, so untouched pixels stay exactly the source's; grow the mask first (core GrowMask) for more "
                   "room. 0 = a hard edge.")


def _threshold_input(default: float) -> io.Float.Input:
    return io.Float.Input("threshold", default=default, min=0.0, max=1.0, step=0.01, tooltip=THRESHOLD_TOOLTIP)


def _feather_input(default: int) -> io.Int.Input:
    return io.Int.Input("feather", default=default, min=0, max=1024, step=1, tooltip=FEATHER_TOOLTIP)


class PreserveBackgroundNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_PreserveBackground",
            display_name="Preserve Background (edit inside mask)",
            category="lmm_edit/compositing",
            description="Puts the edit into the source only inside a soft mask (e.g. the BIM edit_region), so every "
            "pixel outside it is the source's, exactly. The edit is resized to the source's size, so a 256-px edit "
            "can be composited into the full-size original.",
            inputs=[
                io.Image.Input("edited", tooltip="The edited image (any size; resized to the source's, bicubic)."),
                io.Image.Input("source", tooltip="The original image; the output has its size and channels."),
                io.Mask.Input("mask", tooltip="Where the edit may change the picture: the edit_region of SmartEdit BIM "
                              "Conditioning or any MASK (resized to the source's size)."),
                _feather_input(DEFAULT_FEATHER),
                _threshold_input(DEFAULT_THRESHOLD),
                io.Combo.Input("colour_match", options=list(COLOUR_MATCH_MODES), default="off",
                               tooltip="Correct the edit's colour drift before blending, measured in a band just "
                               "outside the mask where the edit should equal the source: mean = per-channel offset "
                               "(colour cast, exposure), mean_std = offset and contrast. off = the edit as it is."),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="The source with the edit inside the mask; identical "
                                "to the source outside it."),
                io.Mask.Output(display_name="blend_mask", tooltip="The blend weights used (thresholded, feathered, "
                               "at the source's size): 0 = the source's pixel, 1 = the edit's."),
            ],
        )

    @classmethod
    def execute(cls, edited, source, mask, feather, threshold, colour_match) -> io.NodeOutput:
        image, weights = preserve_background(edited, source, mask, threshold=threshold, feather=feather,
                                             colour_match=colour_match)
        return io.NodeOutput(image, weights)


class EditRegionPreviewNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_EditRegionPreview",
            display_name="Edit Region Preview",
            category="lmm_edit/compositing",
            description="Shows a mask (e.g. the BIM edit_region: where the instruction points) tinted over the "
            "source image, on the node and as an IMAGE.",
            inputs=[
                io.Image.Input("image", tooltip="The picture to draw on (the source image)."),
                io.Mask.Input("mask", tooltip="The mask to show, e.g. edit_region of SmartEdit BIM Conditioning or "
                              "blend_mask of Preserve Background (resized to the image)."),
                io.Float.Input("opacity", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="How strongly the mask tints the picture where it is 1."),
                io.Combo.Input("colour", options=list(OVERLAY_COLOURS), default="red", tooltip="The tint."),
                _threshold_input(0.0),
                _feather_input(0),
            ],
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="The picture with the mask tinted over it.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, mask, opacity, colour, threshold, feather) -> io.NodeOutput:
        weights = blend_weights(mask, image.shape[1], image.shape[2], threshold=threshold, feather=feather)
        preview = overlay_mask(image, weights, colour=colour, opacity=opacity)
        return io.NodeOutput(preview, ui=ui.PreviewImage(preview, cls=cls))


NODES = [PreserveBackgroundNode, EditRegionPreviewNode]
