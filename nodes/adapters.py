"""Image-branch nodes: load an IP-Adapter / InsightEdit IAA, apply it as decoupled cross-attention, pick a kernel.

- ``LMMEdit_AdapterLoader``: a file of ``models/ipadapter`` recognised by its keys -> LMM_EDIT_ADAPTER
  (IP-Adapter, IP-Adapter Plus, InsightEdit IAA, InstructAny2Pix's SDXL ``ip_adapter_global_local_2_view``).
- ``LMMEdit_IAAImageBranch``: MODEL + adapter + image source -> MODEL with the branch on every attn2 layer,
  and positive/negative carrying the branch's conditional/unconditional image tokens.

Image sources, one per branch: ``instruction`` (IAA), ``clip_vision_output`` (IP-Adapter, Plus; also the
global-local adapter, with CLIP ViT-H image_embeds), or ``embedding`` (socket ``LMM_EDIT_EMBEDDING``: a
``torch.Tensor [n, C]``, one row per image prompt; the global-local adapter's own input, InstructAny2Pix's fused
ImageBind-space embedding, as the reference's ``IPAdapterXL.generate(clip_image_embeds=...)``; a basic
IP-Adapter also reads it in place of C-wide CLIP image_embeds). With the global-local adapter the tokens are
the reference's: 4 global tokens from ``[embedding, zeros]`` at scales [1, 0.5]; the negative gets the
projection of zeros.
- ``LMMEdit_AttentionBackend``: force a ``kernels/`` backend for the image branches of a MODEL.
"""

from __future__ import annotations

import comfy.model_management
import comfy.ops
import torch
from comfy_api.v0_0_2 import io

from ..kernels import MULTI_BRANCH_CROSS_ATTENTION, list_backends
from ..loaders import model_folders
from ..loaders.ip_adapter import ANY2PIX_GLOBAL_LOCAL, INSIGHTEDIT_IAA, IP_ADAPTER, IP_ADAPTER_PLUS, load_image_adapter
from ..loaders.ip_adapter.image_branch_patch import AUTO_BACKEND, BACKEND_OPTION
from ..loaders.ip_adapter.image_tokens import blank_image_states, conditional_tokens, unconditional_tokens
from .folders import model_file_options, resolve_model_file
from .image_branch_install import attach_image_tokens, install_image_branch, probe_attention, unet_layers, wrap_adapter
from .socket_types import ADAPTER, EMBEDDING, INSTRUCTION


class AdapterLoaderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_AdapterLoader",
            display_name="Image Adapter Loader (IP-Adapter / InsightEdit IAA)",
            category="lmm_edit/loaders",
            description="Loads an image adapter for LMMEdit_IAAImageBranch from models/ipadapter, recognised by its "
            "keys: IP-Adapter (4 tokens from CLIP image embeds), IP-Adapter Plus (16 tokens from CLIP hidden states), "
            "an InsightEdit IAA (tokens from the multimodal LLM's [MM] states) or InstructAny2Pix's SDXL "
            "ip_adapter_global_local_2_view (4 tokens from an embedding).",
            inputs=[
                io.Combo.Input(
                    "adapter_name", options=model_file_options(model_folders.IPADAPTER),
                    tooltip="Adapter file in models/ipadapter (.safetensors or .bin), e.g. ip-adapter_sd15.safetensors, "
                    "ip-adapter-plus_sd15.safetensors, or an InsightEdit IAA in the layout the README describes.",
                ),
            ],
            outputs=[ADAPTER.Output(display_name="ADAPTER", tooltip="The adapter, for LMMEdit_IAAImageBranch.")],
        )

    @classmethod
    def execute(cls, adapter_name) -> io.NodeOutput:
        path = resolve_model_file(model_folders.IPADAPTER, adapter_name)
        # ComfyUI's layers, as its own models use (loaders/operations.py)
        return io.NodeOutput(wrap_adapter(load_image_adapter(path, operations=comfy.ops.disable_weight_init)))


def parse_weights(weight: float, batch_weights: str) -> tuple[float, ...]:
    """lambda: ``weight``, or one value per image of the latent batch from a comma list ("1.0, 0.5")."""
    if not batch_weights.strip():
        return (float(weight),)
    try:
        return tuple(float(part) for part in batch_weights.split(","))
    except ValueError as err:
        raise ValueError(
            f"batch_weights must be numbers separated by commas, e.g. '1.0, 0.5'; found {batch_weights!r}"
        ) from err


def schedule_error(start_percent=None, end_percent=None, batch_weights=None) -> str | None:
    """What is wrong with the branch's plain values, or None; a value None (a linked input) is not checked."""
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if value is not None and not 0.0 <= value <= 1.0:
            return f"{name} {value} is outside [0, 1]: it is a fraction of the sampling progress"
    if start_percent is not None and end_percent is not None and end_percent < start_percent:
        return f"end_percent {end_percent} is before start_percent {start_percent}"
    if batch_weights is not None:
        try:
            parse_weights(1.0, batch_weights)
        except ValueError as err:
            return str(err)
    return None


# the sources each family reads, the first one being its own
FAMILY_SOURCES = {
    INSIGHTEDIT_IAA: ("instruction",),
    IP_ADAPTER_PLUS: ("clip_vision_output",),
    IP_ADAPTER: ("clip_vision_output", "embedding"),
    ANY2PIX_GLOBAL_LOCAL: ("embedding", "clip_vision_output"),
}
SOURCE_HELP = {
    "instruction": "the LMM_EDIT_INSTRUCTION of LMMEdit_LMMEncode (the [MM] hidden states the IAA maps)",
    "clip_vision_output": "the CLIP_VISION_OUTPUT of core CLIPVisionEncode on the reference image",
    "embedding": "an LMM_EDIT_EMBEDDING, e.g. the fused embedding of the InstructAny2Pix fusion node",
}


def _source_for(adapter, instruction, clip_vision_output, embedding=None) -> torch.Tensor:
    """The adapter's input from the one connected image source; errors say which source the family needs."""
    given = (("instruction", instruction), ("clip_vision_output", clip_vision_output), ("embedding", embedding))
    connected = [name for name, value in given if value is not None]
    accepted = FAMILY_SOURCES[adapter.family]
    if len(connected) != 1 or connected[0] not in accepted:
        found = " and ".join(connected) if connected else "nothing"
        wanted = " or ".join(f"{name} ({SOURCE_HELP[name]})" for name in accepted)
        raise ValueError(
            f"{adapter.family} adapter {adapter.path}: connect exactly one image source, {wanted}; "
            f"found {found} connected."
        )
    if connected == ["instruction"]:
        if instruction.hidden_states.shape[0] == 0:
            raise ValueError("The LMM wrote no [MM] token, so the IAA has nothing to map. Turn on force_image_tokens "
                             "in LMMEdit_LMMEncode, or try another seed or temperature 0.")
        return instruction.hidden_states  # [r, D_llm]
    if connected == ["embedding"]:
        return embedding  # [n, C] (the global-local adapter also takes [n, 2, C])
    if adapter.family == ANY2PIX_GLOBAL_LOCAL:
        return clip_vision_output["image_embeds"]
    return clip_vision_output[adapter.input_kind]  # image_embeds [n, D] or penultimate_hidden_states [n, P, D]


def _blank_image_states(clip_vision) -> torch.Tensor:
    """Plus's null image through core's CLIP vision model (loaded by ComfyUI first)."""
    comfy.model_management.load_model_gpu(clip_vision.patcher)
    return blank_image_states(lambda pixels: clip_vision.model(pixel_values=pixels, intermediate_output=-2)[1],
                              clip_vision.image_size, clip_vision.load_device)


def _mask_rows(mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask if mask.dim() == 3 else mask.reshape(1, *mask.shape[-2:])  # [1 or b, H, W]
    return mask.detach().float().cpu()


class IAAImageBranchNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_IAAImageBranch",
            display_name="Image Branch (InsightEdit IAA / IP-Adapter)",
            category="lmm_edit/image_branch",
            description="Adds an image prompt to a model through decoupled cross-attention on every UNet "
            "cross-attention layer: out = text attention + weight x image attention. Feeds InsightEdit's IAA from "
            "the multimodal LLM's [MM] states, an IP-Adapter from CLIP vision, InstructAny2Pix's SDXL adapter from "
            "its fused embedding. Use its positive and negative "
            "outputs downstream: they carry the image tokens. Several branches stack.",
            inputs=[
                io.Model.Input("model", tooltip="The UNet to patch (SD1.5-class for the IAA and SD1.5 IP-Adapters)."),
                ADAPTER.Input("adapter", tooltip="From LMMEdit_AdapterLoader."),
                io.Conditioning.Input("positive", tooltip="Conditioning of the edit (gets the image tokens)."),
                io.Conditioning.Input("negative", tooltip="Unconditional conditioning (gets the unconditional image "
                                      "tokens; the dual-CFG guider's null-image branch inherits them)."),
                io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                               tooltip="lambda, the strength of the image attention (IP-Adapter's scale). 0 = off."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the branch turns on."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress at which the branch turns off."),
                io.String.Input("batch_weights", default="", optional=True,
                                tooltip="Optional lambda per image of the latent batch, comma separated "
                                "(e.g. '1.0, 0.5'); replaces weight when given."),
                INSTRUCTION.Input("instruction", optional=True,
                                  tooltip="For an InsightEdit IAA: the output of LMMEdit_LMMEncode."),
                EMBEDDING.Input("embedding", optional=True,
                                tooltip="For InstructAny2Pix's global-local adapter: the fused embedding of the "
                                "Any2Pix fusion node (also read by a basic IP-Adapter in place of CLIP image_embeds)."),
                io.ClipVisionOutput.Input("clip_vision_output", optional=True,
                                          tooltip="For an IP-Adapter: core CLIPVisionEncode of the reference image "
                                          "(several images become one image prompt)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="For IP-Adapter Plus only: the CLIP vision model, to compute the "
                                    "unconditional tokens from a blank image as the IP-Adapter reference does."),
                io.Mask.Input("attn_mask", optional=True,
                              tooltip="Where the image prompt acts (1) and where not (0); one mask or one per image."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The model with the image branch."),
                io.Conditioning.Output(display_name="positive", tooltip="positive with the image tokens."),
                io.Conditioning.Output(display_name="negative", tooltip="negative with the unconditional image tokens."),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None, batch_weights=None) -> bool | str:
        # named (not **kwargs) so ComfyUI still range-checks the other widgets; linked inputs arrive as None
        return schedule_error(start_percent, end_percent, batch_weights) or True

    @classmethod
    def execute(cls, model, adapter, positive, negative, weight, start_percent, end_percent, batch_weights="",
                instruction=None, clip_vision_output=None, clip_vision=None, attn_mask=None,
                embedding=None) -> io.NodeOutput:
        error = schedule_error(start_percent, end_percent)  # again here for values that came through links
        if error is not None:
            raise ValueError(error)
        weights = parse_weights(weight, batch_weights)
        module = adapter.model
        source = _source_for(module, instruction, clip_vision_output, embedding)
        patched, token_key, _ = install_image_branch(model, adapter, weights, start_percent, end_percent,
                                                     _mask_rows(attn_mask))
        # whole: ComfyUI's partial (lowvram) loading would leave the Resampler's own `latents` behind
        comfy.model_management.load_models_gpu([adapter], force_full_load=True)
        cond = conditional_tokens(module, source)
        blank = None
        if module.family == IP_ADAPTER_PLUS:
            if clip_vision is None:
                raise ValueError(
                    f"IP-Adapter Plus {module.path}: connect clip_vision (the CLIPVisionLoader output that feeds "
                    "CLIPVisionEncode); Plus computes its unconditional tokens from CLIP's view of a blank image."
                )
            blank = _blank_image_states(clip_vision)
        images = 1 if module.family == INSIGHTEDIT_IAA else source.shape[0]
        uncond = unconditional_tokens(module, images, blank)
        positive, negative = attach_image_tokens(positive, negative, token_key, cond, uncond)
        return io.NodeOutput(patched, positive, negative)


class AttentionBackendNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = [name for name, info in list_backends().items() if MULTI_BRANCH_CROSS_ATTENTION in info["ops"]]
        return io.Schema(
            node_id="LMMEdit_AttentionBackend",
            display_name="Image Branch Attention Backend",
            category="lmm_edit/advanced",
            description="Chooses the kernel that computes the image branches' decoupled cross-attention on this "
            "model: auto (the fused Triton kernel where its constraints hold, else eager PyTorch SDPA) or one "
            "backend forced. The backend is tried once here, so a broken one fails in this node.",
            inputs=[
                io.Model.Input("model", tooltip="A model, with or without image branches yet."),
                io.Combo.Input("backend", options=[AUTO_BACKEND, *names], default=AUTO_BACKEND,
                               tooltip="auto, or a backend of lmm_edit.kernels (eager: two SDPA calls per branch; "
                               "triton: one fused kernel, NVIDIA GPUs)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model with the backend choice.")],
        )

    @classmethod
    def execute(cls, model, backend) -> io.NodeOutput:
        patched = model.clone()
        patched.model_options["transformer_options"][BACKEND_OPTION] = backend
        layers, unet_config = unet_layers(patched)
        probe_attention(patched, layers, unet_config)
        return io.NodeOutput(patched)


NODES = [AdapterLoaderNode, IAAImageBranchNode, AttentionBackendNode]
