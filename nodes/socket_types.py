"""The pack's custom socket types, one place for every node module.

The string is the wire type ComfyUI checks when two sockets are linked; web/js/lmm_edit.js
colours the same names.
"""

from __future__ import annotations

from comfy_api.v0_0_2 import io

# a multimodal LLM with its vision tower and tokenizer (a ComfyUI ModelPatcher around the torch module)
LMM = io.Custom("LMM_EDIT_LMM")
# SmartEdit's Q-Former + BIM (a ComfyUI ModelPatcher around loaders.smartedit.SmartEditBridge)
BRIDGE = io.Custom("LMM_EDIT_BRIDGE")
# loaders.instruction.LMMInstruction: small CPU tensors, cached by ComfyUI between runs
INSTRUCTION = io.Custom("LMM_EDIT_INSTRUCTION")
# loaders.ip_adapter.ImageAdapter (InsightEdit IAA or IP-Adapter) in a ComfyUI ModelPatcher
ADAPTER = io.Custom("LMM_EDIT_ADAPTER")
# nodes.any2pix_loader.Any2PixModels: InstructAny2Pix's LLM, ImageBind and prior, each a ModelPatcher
ANY2PIX = io.Custom("LMM_EDIT_ANY2PIX")
# nodes.any2pix_encode.Any2PixEncoding: the LLM's output/base embeddings, caption and inputs (small CPU tensors)
ANY2PIX_ENCODING = io.Custom("LMM_EDIT_ANY2PIX_ENCODING")
# an image-space embedding given directly to an image adapter: torch.Tensor [n, C] (float, CPU), one row per
# image prompt; InstructAny2Pix's fused ImageBind-space embedding (C = 1024), read by LMMEdit_IAAImageBranch
# with the any2pix-global-local adapter (or a basic IP-Adapter reading C-wide CLIP image_embeds)
EMBEDDING = io.Custom("LMM_EDIT_EMBEDDING")
