"""LMMEdit_SmartEditLoader: a SmartEdit bundle -> MODEL (its UNet), LMM_EDIT_LMM, LMM_EDIT_BRIDGE.

The work is in loaders/smartedit (pure torch). Here: folder pickers, dtype policy, the UNet through
ComfyUI's own loading path (LDM keys -> `comfy.sd.load_diffusion_model_state_dict`, detected as
SD15_instructpix2pix) with the BIM-residual patch, and the LMM and bridge as ModelPatchers.
"""

from __future__ import annotations

from pathlib import Path

import comfy.model_base
import comfy.model_patcher
import comfy.ops
import comfy.sd
import torch
from comfy_api.v0_0_2 import io

from ..loaders import model_folders
from ..loaders.errors import ModelFileError
from ..loaders.ip2p.unet_keys import LDM_PREFIX
from ..loaders.smartedit import SmartEditBundle, SmartEditEncoder, find_bundle, load_bridge, load_lmm, load_unet_ldm
from ..loaders.storage import STORAGE_CHOICES, storage_dtype
from .bim_residual import install_bim_residual
from .folders import list_model_subfolders, model_file_options, resolve_model_file, resolve_model_subfolder
from .lmm_handle import LMMHandle
from .module_patchers import (
    DTYPE_CHOICES,
    WEIGHT_DTYPE_TOOLTIP,
    explicit_dtype,
    lmm_load_device,
    lmm_operations,
    resolve_dtype,
    wrap_module,
)
from .socket_types import BRIDGE, LMM


def load_smartedit_unet(bundle: SmartEditBundle, dtype: torch.dtype | None) -> comfy.model_patcher.ModelPatcher:
    """The bundle's UNet as a ComfyUI MODEL (SD15_instructpix2pix) with the BIM residual patch installed.

    dtype None: ComfyUI picks the UNet dtype for the device, as for any checkpoint.
    """
    state = load_unet_ldm(bundle, dtype)
    conv_in = state.get(LDM_PREFIX + "input_blocks.0.0.weight")
    options = {} if dtype is None else {"dtype": dtype}
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options=options)
    if model is None or not isinstance(model.model, comfy.model_base.SD15_instructpix2pix):
        found = "a UNet ComfyUI does not recognise" if model is None else f"a {type(model.model).__name__} model"
        raise ModelFileError(
            bundle.unet,
            "an SD1.5 InstructPix2Pix UNet (8 input channels, 320 base channels, 768-wide cross-attention)",
            f"{found} (conv_in {list(conv_in.shape) if conv_in is not None else 'missing'})",
            "use unet-<step>/adapter_model.bin of TencentARC/SmartEdit-7B or -13B as published",
        )
    install_bim_residual(model)
    return model


class SmartEditLoaderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_SmartEditLoader",
            display_name="SmartEdit Loader",
            category="lmm_edit/loaders",
            description="Loads SmartEdit (TencentARC, CVPR 2024) from its release files: the edit UNet as a MODEL, "
            "the LLaVA-1.1 LMM and the Q-Former + BIM bridge.",
            inputs=[
                io.Combo.Input(
                    "bundle", options=list_model_subfolders(model_folders.SMARTEDIT),
                    tooltip="SmartEdit bundle folder in models/lmm_edit/smartedit/: TencentARC/SmartEdit-7B or -13B as "
                    "published (LLM-15000/, embeddings_qformer/, modulate-15000/, unet-15000/, and adapter_config.json) "
                    "or the output of `python -m lmm_edit convert-smartedit`.",
                ),
                io.Combo.Input(
                    "llava", options=list_model_subfolders(model_folders.LLAVA),
                    tooltip="LLaVA-1.1 base folder in models/lmm_edit/llava/ (7B for SmartEdit-7B, 13B for -13B), merged "
                    "from the delta weights, with config.json, the pytorch_model-*.bin (or safetensors) shards and the "
                    "LLaMA tokenizer.model. LLaVA-1.5/1.6 do not work.",
                ),
                io.Combo.Input(
                    "clip_vision", options=model_file_options(model_folders.CLIP_VISION),
                    tooltip="CLIP ViT-L/14, 224 px (openai/clip-vit-large-patch14) from models/clip_vision/, in the "
                    "transformers key layout (vision_model.*) that ComfyUI's CLIP Vision loader also reads, e.g. the "
                    "repository's model.safetensors (+ config.json) in a sub-folder. Not the 336 px or open_clip files.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPE_CHOICES), default="auto",
                    tooltip="Weights and compute dtype. auto: fp16 (else bf16) on a GPU, fp32 on CPU; the LMM runs on "
                    "ComfyUI's text-encoder device. The UNet dtype follows ComfyUI's choice on auto. The reference runs "
                    "the LMM in fp32 (40 GB for 7B); fp16 needs about 14 GB for 7B.",
                ),
                io.Int.Input(
                    "qformer_heads", default=0, min=0, max=128, optional=True,
                    tooltip="Attention heads of the Q-Former (BERT). 0: width / 64, i.e. 12 for SmartEdit's 768-wide "
                    "Q-Former (bert-base-uncased); the shapes cannot tell.",
                ),
                io.Combo.Input(
                    "weight_dtype", options=list(STORAGE_CHOICES), default="default", optional=True,
                    tooltip=WEIGHT_DTYPE_TOOLTIP + " For SmartEdit-7B: about 13.5 GB of LLaMA weights in fp16, 7 GB in fp8.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="SmartEdit's UNet (InstructPix2Pix-style, 8 input channels) "
                                "with the BIM residual patch; also serves plain InstructPix2Pix conditioning."),
                LMM.Output(display_name="LMM", tooltip="LLaVA-1.1 with SmartEdit's LoRA and tokens, its CLIP tower and "
                           "tokenizer: for LMMEdit_LMMEncode."),
                BRIDGE.Output(display_name="BRIDGE", tooltip="Q-Former + BIM: for LMMEdit_BIMConditioning."),
            ],
        )

    @classmethod
    def execute(cls, bundle, llava, clip_vision, dtype, qformer_heads=0, weight_dtype="default") -> io.NodeOutput:
        bundle_dir = resolve_model_subfolder(model_folders.SMARTEDIT, bundle)
        llava_dir = resolve_model_subfolder(model_folders.LLAVA, llava)
        clip_path = resolve_model_file(model_folders.CLIP_VISION, clip_vision)
        device = lmm_load_device()
        lmm_dtype = resolve_dtype(dtype, device)
        bridge_dtype = explicit_dtype(dtype) or torch.float32  # small; the reference runs it in fp32
        found = find_bundle(Path(bundle_dir))
        ops = comfy.ops.disable_weight_init  # ComfyUI's layers, as its own models use (loaders/operations.py)
        storage = storage_dtype(weight_dtype, lmm_dtype)
        lmm = load_lmm(found, llava_dir, clip_path, None, lmm_dtype, operations=lmm_operations(storage, lmm_dtype),
                       storage=storage)
        bridge = load_bridge(found, bridge_dtype, qformer_heads or None, operations=ops)
        unet = load_smartedit_unet(found, explicit_dtype(dtype))
        lmm_handle = LMMHandle(wrap_module(lmm, device), SmartEditEncoder(lmm))
        return io.NodeOutput(unet, lmm_handle, wrap_module(bridge, device))


NODES = [SmartEditLoaderNode]
