"""Encoding an image and an instruction with a VLM into an ``LMMInstruction`` (the ``[MM]`` hidden states).

Steps (the capture rule follows SmartEdit's, docs/smartedit.md, The image-token states: the hidden state of the
position *holding* each image token, after the final norm):

1. prompt = template with the image marker and the instruction; the image placeholder is expanded to
   one token per visual feature the model makes of this image;
2. optionally the model answers (``max_new_tokens > 0``; greedy at temperature 0, else
   softmax(logits / T) sampling from a seeded generator, no top-k / top-p), stopping at EOS;
3. one forward pass over prompt + answer + ``[MM_0] .. [MM_{r-1}]`` gives the last-layer states at
   the ``[MM]`` positions ``[r, D_llm]``. When the model wrote the ``[MM]`` tokens itself, in
   order, those are its own positions (``image_tokens_in_order``); with ``force_image_tokens`` they are
   appended after the answer's text (``forced``), which is what training sees (teacher forcing); otherwise
   the states of the ``[MM]`` tokens it wrote are kept as written and the status says what went wrong.

``VLMEncoder`` is this family's ``InstructionEncoder`` (loaders/encoder.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from ..encoder import AUTO_TEMPLATE, MAX_NEW_TOKENS, EncodeOptions, missing_tokens_problem, status_lines
from ..instruction import LMMInstruction
from .families import VISION_QWEN2
from .inputs import as_pil_image, check_instruction_text, check_prompt_length
from .inputs import image_inputs as prepare_image
from .load import MLLMBundle, run_device
from .memory import working_memory

UNTRAINED_NOTE = ("Note: this folder has no learned [MM] tokens (the loader added them untrained); bridges trained "
                  "for a fine-tuned model will not get meaningful states.")


@dataclass(frozen=True)
class AnswerSplit:
    """The generated ids cut at the first ``[MM]`` token: ``text_ids`` before it, the ``[MM]`` run after it."""

    text_ids: list[int]
    mm_run: list[int]  # generated ids from the first [MM] token on, EOS excluded
    in_order: bool  # mm_run is exactly [MM_0] .. [MM_{r-1}]


def split_answer(generated: Sequence[int], mm_ids: Sequence[int], eos_ids: Sequence[int]) -> AnswerSplit:
    """Split a generated stream (EOS and anything after it dropped) at its first ``[MM]`` token."""
    stream = list(generated)
    for index, token in enumerate(stream):
        if token in eos_ids:
            stream = stream[:index]
            break
    mm = set(mm_ids)
    first = next((i for i, token in enumerate(stream) if token in mm), len(stream))
    run = stream[first:]
    return AnswerSplit(stream[:first], run, run == list(mm_ids))


class _TokenCallback(BaseStreamer):
    """Calls ``on_token(step, id)`` for each generated token (generate's first ``put`` is the prompt)."""

    def __init__(self, on_token: Callable[[int, int], None]) -> None:
        self.on_token = on_token
        self.prompt_seen = False
        self.step = 0

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.on_token(self.step, int(token))
            self.step += 1

    def end(self) -> None:
        return None


def _vision(bundle: MLLMBundle, image_inputs: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor]:
    """(placeholder tokens the LLM gets for the image, un-projected vision features ``[P, D_vis]``)."""
    model = bundle.model.model
    if bundle.family.vision_kind == VISION_QWEN2:
        out = model.get_image_features(image_inputs["pixel_values"], image_inputs["image_grid_thw"])
        return out.pooler_output[0].shape[0], out.last_hidden_state  # [P, D_vis] before the 2x2 merger
    config = bundle.model.config
    kwargs = {"image_sizes": image_inputs["image_sizes"]} if "image_sizes" in image_inputs else {}
    out = model.get_image_features(pixel_values=image_inputs["pixel_values"], output_hidden_states=True, **kwargs)
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    features = torch.cat([out.hidden_states[layer][0] for layer in layers], dim=-1)  # base image (first crop)
    if config.vision_feature_select_strategy == "default":
        features = features[1:]  # drop CLS, as the projector input does
    return out.pooler_output[0].shape[0], features


def _prompt_ids(bundle: MLLMBundle, prompt: str, image_tokens: int) -> torch.Tensor:
    ids = bundle.tokenizer(prompt, return_tensors="pt").input_ids[0]
    placeholder = bundle.model.config.image_token_id
    where = (ids == placeholder).nonzero().flatten()
    if where.numel() != 1:
        raise ValueError(
            f"the prompt must hold the image marker exactly once, found {where.numel()} in {prompt!r}; "
            "write {image} once in the template"
        )
    at = int(where[0])
    return torch.cat([ids[:at], torch.full((image_tokens,), placeholder, dtype=ids.dtype), ids[at + 1 :]])


def _text_inputs(bundle: MLLMBundle, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (all ones) and, for Qwen's M-RoPE, mm_token_type_ids (1 on image tokens)."""
    device = run_device(bundle.model)
    inputs = {
        "input_ids": ids[None].to(device),
        "attention_mask": torch.ones(1, ids.shape[0], dtype=torch.long, device=device),
    }
    if bundle.family.vision_kind == VISION_QWEN2:
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == bundle.model.config.image_token_id).int()
    return inputs


def _generate(
    bundle: MLLMBundle, ids: torch.Tensor, image_inputs: dict, max_new_tokens: int, temperature: float, seed: int,
    on_token: Callable[[int, int], None] | None,
) -> list[int]:
    model = bundle.model
    own = model.generation_config
    # A fresh config: the folder's generation_config.json may set top-k/top-p/repetition penalties.
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        repetition_penalty=1.0,
        eos_token_id=own.eos_token_id,
        pad_token_id=own.pad_token_id if own.pad_token_id is not None else own.eos_token_id,
        bos_token_id=own.bos_token_id,
        **sampling,
    )
    device = run_device(model)
    streamer = _TokenCallback(on_token) if on_token is not None else None
    with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type):
        torch.manual_seed(seed)
        out = model.generate(**_text_inputs(bundle, ids), **image_inputs, generation_config=config, streamer=streamer)
    return out[0, ids.shape[0] :].tolist()


def _eos_ids(bundle: MLLMBundle) -> list[int]:
    eos = bundle.model.generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


@torch.no_grad()
def encode_instruction(
    bundle: MLLMBundle,
    image: Image.Image | torch.Tensor,
    instruction: str,
    *,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    force_image_tokens: bool = False,
    template: str | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> LMMInstruction:
    """``[MM]`` hidden states ``[r, D_llm]``, vision features ``[P, D_vis]`` and the answer text (CPU fp32).

    max_new_tokens 0: no answer, the ``[MM]`` tokens follow the prompt. force_image_tokens False: use the
    states of the ``[MM]`` tokens the model wrote (``extras["problem"]`` says when they are not r in order).
    """
    template = template or bundle.family.default_template
    check_instruction_text(bundle, instruction)
    prompt = template.replace("{image}", bundle.image_marker).replace("{instruction}", instruction)
    image_inputs = prepare_image(bundle, as_pil_image(bundle, image))
    image_tokens, vision_features = _vision(bundle, image_inputs)
    ids = _prompt_ids(bundle, prompt, image_tokens)
    check_prompt_length(bundle, ids, image_tokens, instruction)
    mm_ids = bundle.mm_token_ids

    generated = []
    if max_new_tokens:
        generated = _generate(bundle, ids, image_inputs, max_new_tokens, temperature, seed, on_token)
    split = split_answer(generated, mm_ids, _eos_ids(bundle))
    forced = not split.in_order and (force_image_tokens or not max_new_tokens)  # no answer: appended by design
    tail = list(mm_ids) if forced else split.mm_run
    full = torch.cat([ids, torch.tensor(split.text_ids + tail, dtype=ids.dtype)])
    out = bundle.model.model(**_text_inputs(bundle, full), **image_inputs)
    # SmartEdit's capture rule: the state of every position holding an [MM] token, in the order written
    mm = set(mm_ids)
    start = full.shape[0] - len(tail)
    positions = torch.tensor([start + i for i, token in enumerate(tail) if token in mm], dtype=torch.long)
    hidden = out.last_hidden_state[0, positions.to(run_device(bundle.model))]  # [r, D_llm] after the final norm
    extras = {"mm_tokens_trained": bundle.mm_tokens_trained, "prompt": prompt}
    if not bundle.mm_tokens_trained:
        extras["notes"] = (UNTRAINED_NOTE,)
    if not forced and not split.in_order and positions.numel() != len(mm_ids):
        extras["problem"] = missing_tokens_problem(positions.numel(), len(mm_ids), _token_range(mm_ids))
    return LMMInstruction(
        hidden_states=hidden.float().cpu(),
        vision_features=vision_features.float().cpu(),
        token_ids=torch.tensor(generated, dtype=torch.long),
        image_tokens_in_order=split.in_order,
        family=bundle.family.name,
        text=bundle.tokenizer.decode(split.text_ids, skip_special_tokens=True).strip(),
        forced=forced,
        template=template,
        extras=extras,
    )


def _token_range(mm_ids: Sequence[int]) -> str:
    return f"[MM_0]..[MM_{len(mm_ids) - 1}]"


class VLMEncoder:
    """A transformers VLM with ``[MM]`` tokens as an ``InstructionEncoder`` (loaders/encoder.py).

    template: AUTO_TEMPLATE uses the family's own (``families.py``); a template with ``{image}`` and
    ``{instruction}`` replaces it. SmartEdit's 30 templates are LLaVA-1.1 conversation lines and are refused.
    """

    def __init__(self, bundle: MLLMBundle) -> None:
        self.bundle = bundle
        self.family = bundle.family.name

    def encode(self, image: torch.Tensor, instruction: str, options: EncodeOptions) -> LMMInstruction:
        template = None
        if options.template != AUTO_TEMPLATE:
            if "{instruction}" not in options.template or "{image}" not in options.template:
                raise ValueError(
                    f"template {options.template!r} is one of SmartEdit's LLaVA-1.1 conversation lines; a "
                    f"{self.family} model uses its own template. Set template to {AUTO_TEMPLATE!r}."
                )
            template = options.template
        result = encode_instruction(
            self.bundle, image, instruction, max_new_tokens=MAX_NEW_TOKENS, temperature=options.temperature,
            seed=options.seed, force_image_tokens=options.force_image_tokens, template=template,
            on_token=options.on_token,
        )
        mm_ids = self.bundle.mm_token_ids
        template_line = f"Template ({result.family}): {result.template}"
        return replace(result, status=status_lines(result, len(mm_ids), _token_range(mm_ids), template_line))

    def memory_required(self) -> int:
        """KV cache and activations of one encode (memory.py), for ComfyUI to keep free beside the weights."""
        return working_memory(self.bundle.model.config, self.bundle.model.dtype.itemsize)
