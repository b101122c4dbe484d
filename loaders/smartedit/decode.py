"""SmartEdit's decode loop (test/DS_SmartEdit_test.py `get_prompt_embedding_LLM`), seeded and observable.

Reference behaviour kept exactly:
- step 0 runs the prompt embeddings (image features spliced in) with the KV cache; every later step feeds
  the token chosen at the previous step;
- the final-norm hidden state of a step is kept when the token FED at that step has an id >= <img_0>
  (any image token, in any order; text tokens in between are not kept);
- the loop stops when the chosen token is </s> or when 35 states are kept (`config.num_new_tokens`), or
  after 512 steps;
- temperature < 1e-4 is greedy argmax, otherwise softmax(logits / T) and one multinomial draw.
Differences, all opt-in or observational: draws come from a seeded CPU generator instead of the global
RNG; `force_image_tokens` makes the tokens <img_0>..<img_31> then </s> follow as soon as the model picks
an image token or </s> (the answer layout SmartEdit was trained on); `on_token(step, token_id)` is called
after every step (progress bars, interrupts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..encoder import MAX_NEW_TOKENS
from ..llama import LlamaLM

MAX_KEPT_STATES = 35  # reference stop condition: config.num_new_tokens = 32 + 1 + 2
GREEDY_BELOW = 1e-4  # reference: temperature < 1e-4 -> argmax


@dataclass(frozen=True)
class DecodeResult:
    """token_ids: ids chosen at each step [S]; kept_states [K, D] (K = 32 when the model behaved);
    step_states [S, D]: final-norm state of every step (row 0: last prompt position);
    first_logits [V]: logits at the last prompt position; model_choices [S]: what the model itself picked;
    forced: some chosen token differs from the model's own pick."""

    token_ids: list[int]
    kept_states: torch.Tensor
    step_states: torch.Tensor
    first_logits: torch.Tensor
    model_choices: list[int]
    forced: bool


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    logits = logits.float()
    if temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1).cpu()
    return int(torch.multinomial(probs, num_samples=1, generator=generator))


@torch.inference_mode()
def decode_image_states(
    llm: LlamaLM,
    inputs_embeds: torch.Tensor,
    image_token_ids: Sequence[int],
    eos_id: int,
    *,
    temperature: float = 0.0,
    seed: int = 0,
    force_image_tokens: bool = False,
    teacher_ids: Sequence[int] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    on_token: Callable[[int, int], None] | None = None,
) -> DecodeResult:
    """Run the reference decode loop on `inputs_embeds` [1, T, D].

    image_token_ids: ids of <img_0>..<img_31> in order; a fed id >= image_token_ids[0] is kept.
    teacher_ids: when given, the token chosen at step k is teacher_ids[k] (k < len), as the fixture's forcing.
    """
    first_image_id = int(image_token_ids[0])
    forced_tail = [int(i) for i in image_token_ids] + [int(eos_id)]
    generator = torch.Generator().manual_seed(int(seed))
    cache = llm.new_cache(batch=1, capacity=inputs_embeds.shape[1] + 64, device=inputs_embeds.device)
    step_states: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    chosen: list[int] = []
    model_choices: list[int] = []
    forcing_from: int | None = None
    first_logits = None
    token = None
    for step in range(max_new_tokens):
        if step == 0:
            hidden = llm(inputs_embeds.to(llm.compute_dtype), cache)[:, -1]
        else:
            hidden = llm(llm.embed(torch.tensor([[token]], device=inputs_embeds.device)), cache)[:, -1]
        state = hidden[0]
        step_states.append(state)
        if token is not None and token >= first_image_id:
            kept.append(state)
        logits = llm.logits(hidden)[0]
        if first_logits is None:
            first_logits = logits.float()
        own = _pick(logits, temperature, generator)
        model_choices.append(own)
        token = own
        if teacher_ids is not None and step < len(teacher_ids):
            token = int(teacher_ids[step])
        elif force_image_tokens:
            if forcing_from is None and (own >= first_image_id or own == eos_id or step >= max_new_tokens - len(forced_tail)):
                forcing_from = step
            if forcing_from is not None:
                token = forced_tail[min(step - forcing_from, len(forced_tail) - 1)]
        chosen.append(token)
        if on_token is not None:
            on_token(step, token)
        if token == eos_id or len(kept) == MAX_KEPT_STATES:
            break
    width = inputs_embeds.shape[-1]
    return DecodeResult(
        token_ids=chosen,
        kept_states=torch.stack(kept) if kept else inputs_embeds.new_zeros(0, width),
        step_states=torch.stack(step_states),
        first_logits=first_logits,
        model_choices=model_choices,
        forced=any(a != b for a, b in zip(chosen, model_choices)),
    )


def image_tokens_in_order(token_ids: Sequence[int], image_token_ids: Sequence[int], eos_id: int) -> bool:
    """True when the emitted ids >= <img_0> are exactly <img_0>..<img_31> in order and </s> ends the answer."""
    first = int(image_token_ids[0])
    images = [t for t in token_ids if t >= first]
    return images == [int(i) for i in image_token_ids] and bool(token_ids) and token_ids[-1] == eos_id
