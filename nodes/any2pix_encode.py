"""LMMEdit_Any2PixEncode: an instruction with [image1..3]/[audio1..3] markers and the images/sounds it names ->
InstructAny2Pix's embeddings, the caption for the SDXL prompt, and the base image to edit.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `serve.py` `run` (markers -> `<video>`, inputs in order of
appearance) and `pipeline.py` `forward_llm` (ImageBind, renormalisation to norm 20, the LLM, the answer rules).
The work is in loaders/any2pix; here: which inputs are connected, ComfyUI IMAGE/AUDIO -> ImageBind, models
loaded through ComfyUI before use, a ProgressBar tick and interrupt check per generated token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.v0_0_2 import io

from ..loaders.any2pix import (
    AnswerError,
    SamplingSettings,
    comfy_audio_rows,
    embed_audios,
    embed_images,
    encode_instruction,
    parse_markers,
    renormalize_inputs,
)
from ..loaders.any2pix.markers import SLOTS, MarkerError
from ..loaders.any2pix.sampling import DEFAULT_TEMPERATURE
from ..loaders.pixels import first_rgb
from .encode import TokenProgress
from .module_patchers import load_for_use
from .socket_types import ANY2PIX, ANY2PIX_ENCODING

NODE = "LMMEdit_Any2PixEncode"
IMAGE_SLOTS = tuple(f"image{i}" for i in range(1, SLOTS + 1))
AUDIO_SLOTS = tuple(f"audio{i}" for i in range(1, SLOTS + 1))
CAPTION_SOURCES = ("whole sequence (reference)", "answer only (fix)")
# ImageBind-huge's activations for a few inputs (ViT-H: 257 tokens x 1280 wide, 3 audio clips at a time): tens of
# MB; reserved generously so ComfyUI frees room before loading what fits of it
IMAGEBIND_WORKING_BYTES = 256 * 1024 * 1024
BASE_RULE = ("The base image is chosen among the IMAGE inputs only: with one input it is that input; with several, "
             "the image whose ImageBind embedding best matches the LLM's <base> prediction (the reference's dot "
             "product; the reference may pick an audio and then crash); without <base> in the answer, the first "
             "image named in the instruction.")


@dataclass
class Any2PixEncoding:
    """LMM_EDIT_ANY2PIX_ENCODING: small CPU float32 tensors, cached by ComfyUI between runs."""

    image_embeds: torch.Tensor  # [1, 1, D] raw predictor output at the gen state (`image_embeds`)
    base_embed: torch.Tensor  # [D] (one input) or [1, D]: `base_embed` of the fusion
    inputs: torch.Tensor  # [N, D] ImageBind embeddings at norm 20, in marker order
    kinds: tuple[str, ...]  # "image"/"audio" per input
    base_input: int  # index (in marker order) of the base image
    caption: str
    answer: str


def connected_inputs(values: dict) -> set[tuple[str, int]]:
    return {(name[:5], int(name[5:])) for name in IMAGE_SLOTS + AUDIO_SLOTS if values.get(name) is not None}


def check_markers(instruction: str, connected: set[tuple[str, int]]):
    """parse_markers, plus: the edit needs an image to start from. Errors name the node and the fix."""
    try:
        marked = parse_markers(instruction, connected)
    except MarkerError as err:
        raise MarkerError(f"{NODE}: {err}") from None
    if not any(kind == "image" for kind, _ in marked.inputs):
        raise MarkerError(f"{NODE}: the instruction names no image; InstructAny2Pix edits an image, so connect one "
                          "to image1 and name it, e.g. 'add [audio1] to [image1]'")
    return marked


def embed_inputs(models, marked, values: dict) -> torch.Tensor:
    """ImageBind embeddings [N, D] (fp32, CPU) of the named inputs, in marker order (first item of each batch)."""
    imagebind = load_for_use(models.imagebind, IMAGEBIND_WORKING_BYTES)
    rows: dict[int, torch.Tensor] = {}
    images = [(i, first_rgb(values[f"image{slot}"], NODE)[0]) for i, (kind, slot) in enumerate(marked.inputs) if kind == "image"]
    audios = []
    for i, (kind, slot) in enumerate(marked.inputs):
        if kind == "audio":
            batch = comfy_audio_rows(values[f"audio{slot}"])
            if not batch:
                raise ValueError(f"{NODE}: audio{slot} holds no sound (empty batch); connect a Load Audio output")
            audios.append((i, batch[0]))
    if images:
        rows.update(zip([i for i, _ in images], embed_images(imagebind, [img for _, img in images]).float().cpu()))
    if audios:
        rows.update(zip([i for i, _ in audios], embed_audios(imagebind, [a for _, a in audios]).float().cpu()))
    return torch.stack([rows[i] for i in range(len(marked.inputs))])


class Any2PixEncodeNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="InstructAny2Pix Encode",
            category="lmm_edit/conditioning",
            description="Embeds the images and sounds the instruction names with ImageBind, runs the LLM on the "
            "instruction (markers replaced by <video>) and reads its answer: the target embedding, the caption and "
            "the base image. " + BASE_RULE,
            inputs=[
                ANY2PIX.Input("any2pix", tooltip="From LMMEdit_Any2PixLoader."),
                io.String.Input("instruction", multiline=True, default="add [audio1] to [image1]",
                                tooltip="The edit, naming each connected input once by its marker: [image1], [image2], "
                                "[image3], [audio1], [audio2], [audio3], e.g. 'change [image1] to the style of "
                                "[image2]'. Other square brackets are not allowed (the reference reserves them)."),
                *[io.Image.Input(name, optional=True, tooltip=f"Image named [{name}] in the instruction; the first of a "
                                 "batch is used. ImageBind sees it resized (short side 224, bicubic) and center-cropped.")
                  for name in IMAGE_SLOTS],
                *[io.Audio.Input(name, optional=True, tooltip=f"Sound named [{name}] (Load Audio); the first of a "
                                 "batch is used. Any sample rate and channel count: mixed to mono and resampled to "
                                 "16 kHz as ImageBind's loader does; three 2 s clips are averaged.") for name in AUDIO_SLOTS],
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the LLM's token sampling (the reference uses torch's global seed)."),
                io.Float.Input("temperature", default=DEFAULT_TEMPERATURE, min=0.0, max=2.0, step=0.05, round=0.01,
                               tooltip="Sampling temperature of the LLM answer (0.3 in the reference, top-k 50); 0 = "
                               "greedy."),
                io.Combo.Input("caption_from", options=list(CAPTION_SOURCES), default=CAPTION_SOURCES[0],
                               tooltip="Where the caption is read: the first [...] of the whole decoded sequence, prompt "
                               "included (reference quirk), or of the LLM answer only (fix)."),
            ],
            outputs=[
                ANY2PIX_ENCODING.Output(display_name="ENCODING", tooltip="The LLM's embeddings, for LMMEdit_Any2PixFuse."),
                io.String.Output(display_name="caption", tooltip="The LLM's caption of the result: the SDXL prompt "
                                 "(the reference prefixes 'best quality, high quality' without a separator)."),
                io.Image.Output(display_name="base_image", tooltip="The input image the edit starts from (for "
                                "LMMEdit_Any2PixInvert). " + BASE_RULE),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, instruction=None, input_types=None) -> bool | str:
        """Markers against the connected inputs, before anything runs (links are known, values are not)."""
        types = input_types or {}
        for name, received in types.items():
            wanted = {"any2pix": "LMM_EDIT_ANY2PIX"}.get(name) or ("IMAGE" if name in IMAGE_SLOTS else
                                                                   "AUDIO" if name in AUDIO_SLOTS else None)
            if wanted is not None and received not in (wanted, "*"):
                return f"{name} needs a {wanted} output; {received} is connected"
        if instruction is None:  # linked: checked when it runs
            return True
        try:
            check_markers(instruction, connected_inputs({name: True for name in types}))
        except MarkerError as err:
            return str(err)
        return True

    @classmethod
    def execute(cls, any2pix, instruction, seed, temperature, caption_from, **inputs) -> io.NodeOutput:
        marked = check_markers(instruction, connected_inputs(inputs))
        kinds = tuple(kind for kind, _ in marked.inputs)
        aux = renormalize_inputs(embed_inputs(any2pix, marked, inputs))
        settings = SamplingSettings.from_generation_config(
            any2pix.generation_config, any2pix.tokenizer.ids.eos, temperature, source=any2pix.llm_folder)
        # ComfyUI reserves the KV cache and activations, then loads what fits of the LLM (partially if need be)
        model = load_for_use(any2pix.llm, any2pix.llm.model.working_memory(settings.max_new_tokens))
        progress = TokenProgress(cls.hidden.unique_id if cls.hidden is not None else None)
        generator = torch.Generator().manual_seed(seed)
        try:
            result = encode_instruction(
                model, any2pix.tokenizer, marked.text, aux, kinds, settings, generator, on_token=progress,
                caption_source="sequence" if caption_from == CAPTION_SOURCES[0] else "answer",
            )
        except AnswerError as err:
            raise AnswerError(f"{NODE}: {err}") from None
        progress.finish()
        _, slot = marked.inputs[result.base.index]
        base_image = first_rgb(inputs[f"image{slot}"], NODE)
        encoding = Any2PixEncoding(
            image_embeds=result.image_embeds.float().cpu(), base_embed=result.base.embed.float().cpu(), inputs=aux,
            kinds=kinds, base_input=result.base.index, caption=result.caption, answer=result.answer_text,
        )
        return io.NodeOutput(encoding, result.caption, base_image)


NODES = [Any2PixEncodeNode]
