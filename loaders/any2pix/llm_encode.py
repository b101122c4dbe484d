"""The LLM stage of InstructAny2Pix end to end: prompt, `<video>` injection, decoding, answer -> embeddings.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/pipeline.py` `forward_llm`, and the
`vicuna_v1` template of `instructany2pix/llm/conversation.py` (SeparatorStyle.TWO, sep " ", sep2 "</s>").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..instruction import check_context, check_encodable, check_placeholders
from .answer import AnswerSteps, BaseChoice, answer_steps, caption_of, choose_base
from .llm import Any2PixLLM
from .sampling import Decoded, SamplingSettings, decode_answer
from .tokenizer import VIDEO, Any2PixTokenizer, reserved_tokens

FAMILY = "InstructAny2Pix"

# conversation.py conv_vicuna_v1
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1_ROLES = ("USER", "ASSISTANT")
VICUNA_V1_SEP = " "


def vicuna_v1_prompt(instruction: str) -> str:
    """`conv_templates['vicuna_v1']` with the user's message and an open assistant turn (`get_prompt()`)."""
    user, assistant = VICUNA_V1_ROLES
    return f"{VICUNA_V1_SYSTEM}{VICUNA_V1_SEP}{user}: {instruction}{VICUNA_V1_SEP}{assistant}:"


def checked_prompt_ids(model: Any2PixLLM, tokenizer: Any2PixTokenizer, instruction: str) -> list[int]:
    """The prompt's ids, after refusing text with no UTF-8 form, the LLM's own tokens other than the `<video>`
    slots the markers became, and a prompt with no room left in the context for the answer's `<im_gen>`."""
    check_encodable(instruction)
    check_placeholders(instruction, reserved_tokens(tokenizer, keep=(VIDEO,)), FAMILY)
    prompt_ids = tokenizer.encode(vicuna_v1_prompt(instruction))
    check_context(
        len(prompt_ids) + 1, model.config.context, len(tokenizer.encode(instruction, add_bos=False)),
        f"{len(prompt_ids)} of prompt, then at least the answer's <im_gen>", FAMILY,
    )
    return prompt_ids


@dataclass
class LLMResult:
    """What `forward_llm` returns, plus what the pack needs to explain it."""

    image_embeds: torch.Tensor  # [1, 1, D] raw predictor output at the gen state
    base: BaseChoice  # base image index (images only) and base_embed
    caption: str
    text: str  # decoded full sequence (prompt + answer)
    answer_text: str
    prompt_ids: list[int]
    decoded: Decoded
    steps: AnswerSteps
    extra_embeds: torch.Tensor  # [E, D] predictor outputs of later <video> tokens (subject consistency)


def encode_instruction(
    model: Any2PixLLM, tokenizer: Any2PixTokenizer, instruction: str, aux: torch.Tensor, kinds: Sequence[str],
    settings: SamplingSettings, generator: torch.Generator | None = None, forced: Sequence[int] | None = None,
    caption_source: str = "sequence", on_token: Callable[[int, int], None] | None = None,
) -> LLMResult:
    """Run the LLM on `instruction` (markers already replaced by `<video>`) and the inputs `aux` [N, D]
    (ImageBind embeddings renormalised to norm 20, in marker order, kinds "image"/"audio").

    forced: answer token ids to replay instead of sampling (teacher forcing). Raises `answer.AnswerError`
    when the answer has no `<im_gen>` (the reference returns None and then fails). on_token: see `decode_answer`.
    """
    if aux.shape[0] != len(kinds):
        raise ValueError(f"{aux.shape[0]} input embeddings for {len(kinds)} input kinds")
    prompt_ids = checked_prompt_ids(model, tokenizer, instruction)
    videos = prompt_ids.count(tokenizer.ids.video)
    if videos != aux.shape[0]:
        raise ValueError(
            f"the instruction has {videos} <video> slots for {aux.shape[0]} inputs; every input needs exactly one "
            "[imageN]/[audioN] marker"
        )
    device = model.execution_device()
    ids = torch.tensor([prompt_ids], device=device)
    with torch.no_grad():
        embeds = model.prompt_embeddings(ids, aux.to(device), tokenizer.ids.video)
        decoded = decode_answer(model, embeds, settings, generator, forced, on_token)
        text = tokenizer.decode(prompt_ids + decoded.answer_ids)
        answer_text = tokenizer.decode(decoded.answer_ids)
        steps = answer_steps(decoded.answer_ids, tokenizer.ids, answer_text)
        image_embeds = model.predict_embedding(decoded.last_hidden[steps.gen][None, None])
        predicted_base = None
        if steps.base is not None:
            predicted_base = model.predict_embedding(decoded.last_hidden[steps.base][None, None])[0]
        base = choose_base(predicted_base, aux.to(image_embeds.dtype).to(device), kinds)
        extras = [model.predict_embedding(decoded.last_hidden[k][None]) for k in steps.extras]
    return LLMResult(
        image_embeds=image_embeds, base=base, caption=caption_of(text, answer_text, caption_source), text=text,
        answer_text=answer_text, prompt_ids=prompt_ids, decoded=decoded, steps=steps,
        extra_embeds=torch.cat(extras) if extras else image_embeds.new_zeros(0, image_embeds.shape[-1]),
    )
