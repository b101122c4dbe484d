"""LMMEdit_Any2PixFuse: the prior's refinement of the LLM embedding and the fusion -> the embedding for SDXL.

Reference: jacklishufan/InstructAny2Pix @ d11e49b `pipeline.py` `__call__`: `y = prior.generate_diffusion(...,
image_embeds / |image_embeds| * 100, score=6.5, guidance_scale=10, no_diffusion=True)`, then
`latent = h0 base_embed + h1 image_embeds + h2 * 20 y / |y|`, rescaled to `norm`. Presets: the `__call__`
defaults and the Gradio demo's sliders (loaders/any2pix/fusion.py). The work is in loaders/any2pix.
"""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..loaders.any2pix import DEMO, REFERENCE, fuse, prior_input, refine
from ..loaders.any2pix.prior_refine import DEFAULT_GUIDANCE, DEFAULT_NEGATIVE_SCORE, DEFAULT_SCORE
from .module_patchers import load_for_use
from .socket_types import ANY2PIX, ANY2PIX_ENCODING, EMBEDDING

PRESETS = {"reference __call__": REFERENCE, "gradio demo": DEMO}
CUSTOM = "custom (h0, h1, h2, norm below)"
PRIOR_MODES = {"reference (int64 noise round trip)": "reference", "direct (x0_u + g (x0_c - x0_u))": "direct"}
PRIOR_SEED = 0  # the reference's prior draws (cancelled up to 1e-10) come from torch's global RNG


def fusion_weights(preset: str, h0: float, h1: float, h2: float, norm: float) -> tuple[tuple[float, float, float], float]:
    if preset == CUSTOM:
        if h0 == h1 == h2 == 0:
            raise ValueError("LMMEdit_Any2PixFuse: h0, h1 and h2 are all 0, so there is nothing to fuse; set at least "
                             "one weight (the reference uses h1 0.4, h2 1.0)")
        return (h0, h1, h2), norm
    if preset not in PRESETS:
        raise ValueError(f"LMMEdit_Any2PixFuse: preset must be one of {[*PRESETS, CUSTOM]}, not {preset!r}")
    return PRESETS[preset].h, PRESETS[preset].norm


@torch.no_grad()
def refine_and_fuse(any2pix, encoding, h: tuple[float, float, float], norm: float, score: float,
                    negative_score: float, guidance: float, mode: str) -> torch.Tensor:
    """The fused embedding [1, D] (CPU, fp32)."""
    prior = load_for_use(any2pix.prior, whole=True)  # small; its raw embeddings go where it runs
    device, dtype = prior.start_of_sequence_tokens.weight.device, prior.start_of_sequence_tokens.weight.dtype
    image_embeds = encoding.image_embeds.to(device=device, dtype=dtype)
    text_states = prior.text_states(torch.tensor([any2pix.prior_text_ids], device=device))
    result = refine(prior, prior_input(image_embeds), text_states, score, negative_score, guidance, mode,
                    torch.Generator().manual_seed(PRIOR_SEED))
    fused = fuse(encoding.base_embed.to(device=device, dtype=dtype), image_embeds, result.y, h, norm)
    return fused.reshape(1, -1).float().cpu()


class Any2PixFuseNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        ref, demo = REFERENCE, DEMO
        return io.Schema(
            node_id="LMMEdit_Any2PixFuse",
            display_name="InstructAny2Pix Refine + Fuse",
            category="lmm_edit/conditioning",
            description="Refines the LLM's target embedding with the prior (one regression step, CFG on the "
            "aesthetic score) and fuses it with the LLM and base embeddings, as InstructAny2Pix's __call__ does. The "
            "result drives SDXL through the two-view IP-Adapter image branch.",
            inputs=[
                ANY2PIX.Input("any2pix", tooltip="From LMMEdit_Any2PixLoader (its prior is used)."),
                ANY2PIX_ENCODING.Input("encoding", tooltip="From LMMEdit_Any2PixEncode."),
                io.Combo.Input("preset", options=[*PRESETS, CUSTOM], default="reference __call__",
                               tooltip=f"Fusion weights h = (base, LLM, refined) and norm. reference __call__: h {ref.h}, "
                               f"norm {ref.norm:g} (also alpha {ref.alpha:g} in Invert, Euler sampling). gradio demo "
                               f"(serve.py sliders): h {demo.h}, norm {demo.norm:g} (alpha {demo.alpha:g}, DDIM sampling). "
                               "custom: the four values below."),
                io.Float.Input("h0", default=ref.h[0], min=0.0, max=3.0, step=0.05,
                               tooltip="custom only: weight of the base embedding (the chosen input's)."),
                io.Float.Input("h1", default=ref.h[1], min=0.0, max=3.0, step=0.05,
                               tooltip="custom only: weight of the LLM's raw output embedding."),
                io.Float.Input("h2", default=ref.h[2], min=0.0, max=3.0, step=0.05,
                               tooltip="custom only: weight of the prior's refined embedding (rescaled to norm 20)."),
                io.Float.Input("norm", default=ref.norm, min=0.0, max=100.0, step=0.5,
                               tooltip="custom only: norm of the fused embedding (20 in both presets)."),
                io.Float.Input("aesthetic_score", default=DEFAULT_SCORE, min=0.0, max=10.0, step=0.1,
                               tooltip="The prior's aesthetic-score condition (6.5 in the reference)."),
                io.Float.Input("negative_score", default=DEFAULT_NEGATIVE_SCORE, min=0.0, max=10.0, step=0.1,
                               tooltip="The unconditional branch's score: the constant 2.0 added to a zeroed score "
                               "embedding (reference quirk, kept)."),
                io.Float.Input("prior_cfg", default=DEFAULT_GUIDANCE, min=0.0, max=30.0, step=0.5,
                               tooltip="Classifier-free guidance of the prior's output (10 in the reference)."),
                io.Combo.Input("prior_arithmetic", options=list(PRIOR_MODES), default=next(iter(PRIOR_MODES)),
                               tooltip="reference: the DDPM round trip of the reference (noise cast to int64, one "
                               "step at t = 1, 1e-10 of fresh noise). direct: the same value without the round trip "
                               "(differs by float rounding, ~1e-5)."),
            ],
            outputs=[EMBEDDING.Output(display_name="EMBEDDING", tooltip="The fused embedding [1, D] for the "
                                              "two-view IP-Adapter (ip_adapter_global_local_2_view) image branch.")],
        )

    @classmethod
    def execute(cls, any2pix, encoding, preset, h0, h1, h2, norm, aesthetic_score, negative_score, prior_cfg,
                prior_arithmetic) -> io.NodeOutput:
        h, fused_norm = fusion_weights(preset, h0, h1, h2, norm)
        if prior_arithmetic not in PRIOR_MODES:
            raise ValueError(f"LMMEdit_Any2PixFuse: prior_arithmetic must be one of {list(PRIOR_MODES)}")
        fused = refine_and_fuse(any2pix, encoding, h, fused_norm, aesthetic_score, negative_score, prior_cfg,
                                PRIOR_MODES[prior_arithmetic])
        return io.NodeOutput(fused)


NODES = [Any2PixFuseNode]
