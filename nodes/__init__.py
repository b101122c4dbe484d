"""ComfyUI nodes of LMM Edit (V3 API). Importing this package needs a running ComfyUI."""

from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from . import (
    adapters,
    any2pix_encode,
    any2pix_fuse,
    any2pix_invert,
    any2pix_loader,
    compositing,
    conditioning,
    encode,
    guidance,
    smartedit_loader,
    vlm_loader,
)
from .folders import register_model_folders

NODE_MODULES = [guidance, smartedit_loader, encode, conditioning, vlm_loader, adapters, compositing, any2pix_loader,
                any2pix_encode, any2pix_fuse, any2pix_invert]


def all_nodes() -> list[type[io.ComfyNode]]:
    return [node for module in NODE_MODULES for node in module.NODES]


class LMMEditExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.64 does not call on_load(); registering here is idempotent.
        register_model_folders()
        return all_nodes()
