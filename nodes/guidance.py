"""Dual-CFG guidance for InstructPix2Pix-style editors: a GUIDER and a one-node sampler."""

from __future__ import annotations

import comfy.samplers
from comfy_api.v0_0_2 import io

from .comfy_internals import Guider_DualCFG, Noise_RandomNoise, sample_custom_advanced

SOURCE_IMAGE_KEY = "concat_latent_image"  # what ComfyUI's IP2P model concatenates to the noisy latent

TEXT_CFG_DEFAULT = 7.5  # instruct-pix2pix edit_cli.py --cfg-text
IMAGE_CFG_DEFAULT = 1.5  # instruct-pix2pix edit_cli.py --cfg-image


def without_source_image(conditioning: list) -> list:
    """The (∅,∅) branch: a copy of the negative (∅,I) conditioning with the source image removed.

    ComfyUI's IP2P model then concatenates a zero latent, the reference's null image. Every
    other key (ControlNet, model conds such as the BIM residual) is kept, so all three
    branches still batch into one UNet call.
    """
    out = []
    for tensor, options in conditioning:
        options = {k: v for k, v in options.items() if k != SOURCE_IMAGE_KEY}
        out.append([tensor, options])
    return out


class InstructPix2PixGuider(Guider_DualCFG):
    """Core's DualCFG guider fed with InstructPix2Pix's three branches from two conditionings.

    Core's regular style computes neg + cfg2 * (middle - neg) + cfg1 * (positive - middle)
    from a single batched ``calc_cond_batch`` call, with its own cfg == 1 shortcuts; with
    positive = (T,I), middle = (∅,I), negative = (∅,∅) that is InstructPix2Pix's Eq. 3.
    """

    def set_edit_conds(self, positive: list, negative: list) -> None:
        self.set_conds(positive, negative, without_source_image(negative))

    def set_scales(self, text_cfg: float, image_cfg: float) -> None:
        self.set_cfg(text_cfg, image_cfg, nested=False)


def build_guider(model, positive: list, negative: list, text_cfg: float, image_cfg: float) -> InstructPix2PixGuider:
    guider = InstructPix2PixGuider(model)
    guider.set_edit_conds(positive, negative)
    guider.set_scales(text_cfg, image_cfg)
    return guider


def _scale_inputs() -> list:
    return [
        io.Float.Input(
            "text_cfg", default=TEXT_CFG_DEFAULT, min=0.0, max=100.0, step=0.1, round=0.01,
            tooltip="How strongly to follow the instruction (InstructPix2Pix text guidance, 7.5 in the paper). "
            "1.0 skips the unconditional-text branch when image_cfg is also 1.0.",
        ),
        io.Float.Input(
            "image_cfg", default=IMAGE_CFG_DEFAULT, min=0.0, max=100.0, step=0.05, round=0.01,
            tooltip="How closely to stay with the source image (InstructPix2Pix image guidance, 1.5 in the paper). "
            "Values below 1 are applied as written (diffusers would silently turn guidance off). "
            "1.0 skips the null-image branch.",
        ),
    ]


def _model_and_conditioning_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="An InstructPix2Pix-style model (8 input channels), e.g. from "
                       "CheckpointLoaderSimple or LMMEdit_SmartEditLoader."),
        io.Conditioning.Input("positive", tooltip="Instruction conditioning that carries the source image, e.g. "
                              "the positive output of InstructPixToPixConditioning or LMMEdit_BIMConditioning."),
        io.Conditioning.Input("negative", tooltip="Null-text conditioning that carries the source image (the "
                              "negative output of the same node). The null-image branch is derived from it by "
                              "removing the source image."),
    ]


class DualCFGGuiderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_DualCFGGuider",
            display_name="Dual CFG Guider (InstructPix2Pix)",
            category="lmm_edit/sampling",
            description="InstructPix2Pix's exact two-scale guidance from two conditionings, all three "
            "branches in one batched UNet call per step. Plug into SamplerCustomAdvanced.",
            inputs=[*_model_and_conditioning_inputs(), *_scale_inputs()],
            outputs=[io.Guider.Output(tooltip="Guider for SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, text_cfg, image_cfg) -> io.NodeOutput:
        return io.NodeOutput(build_guider(model, positive, negative, text_cfg, image_cfg))


class DualCFGSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_DualCFGSampler",
            display_name="Dual CFG Sampler (InstructPix2Pix)",
            category="lmm_edit/sampling",
            description="One-node InstructPix2Pix sampling: the Dual CFG Guider plus seed, steps, sampler, "
            "scheduler and denoise.",
            inputs=[
                *_model_and_conditioning_inputs(),
                io.Latent.Input("latent_image", tooltip="The starting latent, e.g. the latent output of "
                                "InstructPixToPixConditioning (zeros of the source size)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise (and of ancestral samplers' noise)."),
                io.Int.Input("steps", default=100, min=1, max=10000,
                             tooltip="Sampling steps (the InstructPix2Pix reference uses 100)."),
                *_scale_inputs(),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler_ancestral",
                               tooltip="Sampler (the InstructPix2Pix reference uses Euler ancestral)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Noise schedule (the reference's k-diffusion sigmas are 'normal')."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1.0 starts from pure noise as the reference does."),
            ],
            outputs=[
                io.Latent.Output(display_name="output", tooltip="The edited latent; decode with the model's VAE."),
                io.Latent.Output(display_name="denoised_output",
                                 tooltip="The model's denoised prediction at the last step (as SamplerCustomAdvanced)."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, text_cfg, image_cfg,
                sampler_name, scheduler, denoise) -> io.NodeOutput:
        """Core's SamplerCustomAdvanced path with core's RandomNoise, KSampler sigmas and sampler object."""
        guider = build_guider(model, positive, negative, text_cfg, image_cfg)
        sigmas = comfy.samplers.KSampler(
            model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler, denoise=denoise,
        ).sigmas
        sampler = comfy.samplers.sampler_object(sampler_name)
        output, denoised = sample_custom_advanced(Noise_RandomNoise(seed), guider, sampler, sigmas, latent_image)
        return io.NodeOutput(output, denoised)


NODES = [DualCFGGuiderNode, DualCFGSamplerNode]

