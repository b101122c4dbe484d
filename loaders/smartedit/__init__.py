"""SmartEdit (TencentARC, CVPR 2024) in pure torch: loaders, LMM encoder, Q-Former + BIM bridge, UNet key map.

Public API (what the ComfyUI nodes call):
- `find_bundle(dir)` -> SmartEditBundle; `load_smartedit(bundle_dir, llava_dir, clip_path, ...)` -> SmartEditModels;
  or per component `load_lmm`, `load_bridge`, `load_unet_ldm`.
- `encode_instruction(lmm, image, instruction, seed=, temperature=, template=, force_image_tokens=, on_token=)`
  -> LMMInstruction; `SmartEditEncoder(lmm)`: the same as the family's InstructionEncoder (loaders/encoder.py).
- `bridge_condition(bridge, instruction, (latent_h, latent_w))` -> BridgeOutput(cond, residual, attention).
- `convert_smartedit(src, dst, dtype, clamp=)` -> Conversion (all or nothing); every load error is a
  loaders.errors.ModelFileError.
"""

from .conditioning import BridgeOutput, SmartEditBridge, bridge_condition
from .convert import convert_smartedit
from .encoder import TEMPLATE_CHOICES, SmartEditEncoder, encode_instruction
from .files import SmartEditBundle, find_bundle
from .lmm import SmartEditLMM
from .load import SmartEditModels, load_bridge, load_lmm, load_smartedit, load_unet_ldm
from .prompt import TEMPLATES, template_index_for_seed

__all__ = [
    "BridgeOutput",
    "SmartEditBridge",
    "SmartEditBundle",
    "SmartEditLMM",
    "SmartEditModels",
    "TEMPLATES",
    "TEMPLATE_CHOICES",
    "SmartEditEncoder",
    "bridge_condition",
    "convert_smartedit",
    "encode_instruction",
    "find_bundle",
    "load_bridge",
    "load_lmm",
    "load_smartedit",
    "load_unet_ldm",
    "template_index_for_seed",
]
