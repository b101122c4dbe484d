"""Reading the LLM answer: which states give the output and base embeddings, the caption, the base input.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/pipeline.py` `forward_llm`. The answer
format the LLM was trained on (`train.sh --output_text`) is
`... <base><video><im_gen>[target caption]<video></s>`:
- output embedding: `gen_idx` = the first `<video>` after the LAST `<im_gen>`; the state used is
  `hidden_states[gen_idx][-1][:, -1:]`, the last-layer state of the position PREDICTING that `<video>` (the `]`);
  later `<video>` tokens are subject ("additions") embeddings (fixture README quirk 6);
- base embedding (2+ inputs): the state at the `<base>` position (`hidden_states[index(<base>) + 1]`) through
  the predictor, rescaled to norm 20 and dotted with the inputs; the argmax input is the base image (quirk 7);
- caption: the first `[...]` group of the decoded FULL sequence, prompt included (quirk 9).
The reference crashes when the answer has no `<im_gen>` (returns None), has `<base_null>` instead of `<base>`
with 2+ inputs (`list.index`), or when the argmax picks an audio input (opens the WAV as an image). Here the
first two raise `AnswerError` / fall back as documented in `choose_base`, and the base is chosen among images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .tokenizer import SpecialIds

CAPTION_PATTERN = re.compile(r"\[([^\]]+)\]")  # pipeline.py forward_llm
BASE_NORM = 20.0  # pipeline.py forward_llm: base_embed / base_embed.norm() * 20


class AnswerError(ValueError):
    """The LLM answer cannot drive an edit (no `<im_gen>`, no caption); the message quotes the answer."""


@dataclass(frozen=True)
class AnswerSteps:
    """Indices into the answer tokens (= into `Decoded.last_hidden`)."""

    gen: int  # state predicting the first <video> after the last <im_gen>
    base: int | None  # state at <base> (predicting the token after it); None without <base>
    extras: tuple[int, ...]  # states predicting the later <video> tokens (subject embeddings)


def answer_steps(answer_ids: Sequence[int], ids: SpecialIds, answer_text: str) -> AnswerSteps:
    answer_ids = [int(i) for i in answer_ids]
    im_gen = [k for k, t in enumerate(answer_ids) if t == ids.im_gen]
    if not im_gen:
        raise AnswerError(
            f"the LLM answered without <im_gen>, so it produced no image embedding: {answer_text!r}. "
            "Rephrase the instruction as an edit (e.g. 'add [audio1] to [image1]') or change the seed"
        )
    videos = [k for k, t in enumerate(answer_ids) if t == ids.video and k > im_gen[-1]]
    if not videos:
        raise AnswerError(
            f"the LLM answer has no <video> after its last <im_gen>, so it produced no image embedding: "
            f"{answer_text!r}. Change the seed or the instruction"
        )
    base = None
    if ids.base in answer_ids:
        base = answer_ids.index(ids.base) + 1
        if base >= len(answer_ids):  # <base> as the very last token: no state at its position was recorded
            base = None
    return AnswerSteps(gen=videos[0], base=base, extras=tuple(videos[1:]))


def caption_of(full_text: str, answer_text: str, source: str = "sequence") -> str:
    """The first `[...]` group of the decoded full sequence ("sequence", the reference) or of the answer only
    ("answer": a bracket in the user's instruction can then not be taken for the caption)."""
    if source not in ("sequence", "answer"):
        raise ValueError(f"caption source must be 'sequence' (reference) or 'answer', not {source!r}")
    found = CAPTION_PATTERN.findall(full_text if source == "sequence" else answer_text)
    if not found:
        raise AnswerError(f"the LLM answer has no [caption] for the generation prompt: {answer_text!r}")
    return found[0]


@dataclass(frozen=True)
class BaseChoice:
    index: int | None  # chosen input (an image), None when no input is an image
    embed: torch.Tensor  # base_embed as the reference uses it in the fusion: [D] (1 input) or [1, D]
    reference_index: int  # the reference's choice (argmax over all inputs; may be an audio)
    scores: torch.Tensor | None  # [N] dot products (None with one input)


def choose_base(predicted: torch.Tensor | None, aux: torch.Tensor, kinds: Sequence[str]) -> BaseChoice:
    """The base image and `base_embed`.

    predicted: `vae_predictor_image` of the state at `<base>`, [1, D] (None when the answer has no `<base>`);
    aux: the inputs [N, D] (norm 20); kinds: "image" / "audio" per input.
    Rule: with one input, base = that input and `base_embed = aux[0]` (the reference). With 2+ inputs,
    `base_embed` is the predicted one and the scores are `(predicted / |predicted| * 20) . aux_i` (the
    reference); the base is the argmax among IMAGE inputs only (audio inputs masked out), which is the
    reference's choice whenever its argmax is an image. Without `<base>` in the answer (the reference crashes)
    the first image is the base and `base_embed` is `aux` of that image.
    """
    images = [i for i, k in enumerate(kinds) if k == "image"]
    first_image = images[0] if images else None
    if len(kinds) == 1:
        return BaseChoice(first_image, aux[0], 0, None)
    if predicted is None:
        fallback = first_image if first_image is not None else 0
        return BaseChoice(first_image, aux[fallback][None], fallback, None)
    unit = predicted.float() / predicted.norm() * BASE_NORM
    scores = torch.einsum("ac,bc->ab", unit, aux.float())[0]
    reference_index = int(scores.argmax())
    if not images:
        return BaseChoice(None, predicted, reference_index, scores)
    masked = scores.clone()
    masked[[i for i in range(len(kinds)) if kinds[i] != "image"]] = -float("inf")
    return BaseChoice(int(masked.argmax()), predicted, reference_index, scores)
