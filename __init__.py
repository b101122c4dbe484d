"""LMM Edit: instruction-based image editing driven by multimodal LLMs, as ComfyUI nodes.

ComfyUI loads this folder as a package under its own module name and calls
``comfy_entrypoint`` (V3 API). Nothing of ComfyUI is imported at module level, so
the pure-torch parts (``loaders``, ``kernels``) import without ComfyUI, e.g. as
``lmm_edit`` in the unit tests or from ``python -m lmm_edit``.
"""

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]


async def comfy_entrypoint():
    # Imported here, not at module level: only ComfyUI calls this.
    from .nodes import LMMEditExtension

    return LMMEditExtension()
