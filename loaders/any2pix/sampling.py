"""Decoding the LLM answer as the reference's `generate` call does, with a KV cache.

The reference (jacklishufan/InstructAny2Pix @ d11e49b, `pipeline.py` `forward_llm`) calls transformers 4.34.1
`generate(do_sample=True, temperature=0.3, max_new_tokens=100, use_cache=False, ...)` on a model whose
`generation_config` is the folder's `generation_config.json` over `GenerationConfig` defaults. For that call
4.34.1 `GenerationMixin.sample` applies (`generation/utils.py` `_get_logits_processor`, `_get_logits_warper`):
- no logits processor (repetition penalty, min length, bad words ... all at their inactive defaults);
- warpers, in this order: `TemperatureLogitsWarper(temperature)` (temperature != 1), `TopKLogitsWarper(top_k)`
  (`top_k` default **50**), `TopPLogitsWarper(top_p)` (only when the file sets `top_p` < 1, e.g. Vicuna-1.5's
  0.6), min_tokens_to_keep 1;
- `torch.multinomial(softmax(scores), 1)` on the global RNG; the token is appended, then generation stops on
  `eos_token_id` or after `max_new_tokens` (the prompt's `KeywordsStoppingCriteria("</s>")` stops on the same
  token).
Temperature 0 is taken as greedy (argmax of the raw logits). With a `torch.Generator` the draws are
reproducible; with the same RNG state as the reference they are the same draws.

`use_cache=False` in the reference recomputes the whole sequence at every step; the cache here gives the same
states within float rounding (checked against the fixture's per-step states). Input `<video>` projections sit
in the prompt only, as in the reference when the prompt holds one `<video>` per input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ModelFileError
from .llm import Any2PixLLM

DEFAULT_TEMPERATURE = 0.3  # pipeline.py forward_llm
DEFAULT_MAX_NEW_TOKENS = 100  # pipeline.py forward_llm
GENERATION_DEFAULT_TOP_K = 50  # transformers 4.34.1 GenerationConfig.top_k default
# GenerationConfig fields whose non-default values would add processors/warpers not reproduced here
UNSUPPORTED = {"repetition_penalty": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
               "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0, "bad_words_ids": None,
               "min_length": 0, "min_new_tokens": None, "suppress_tokens": None, "begin_suppress_tokens": None,
               "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
               "renormalize_logits": False, "sequence_bias": None, "guidance_scale": None}


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = GENERATION_DEFAULT_TOP_K
    top_p: float = 1.0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    eos_ids: tuple[int, ...] = (2,)

    @classmethod
    def from_generation_config(
        cls, generation_config: dict, eos_id: int, temperature: float = DEFAULT_TEMPERATURE,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, source: str = "generation_config.json",
    ) -> SamplingSettings:
        """The reference's settings: its temperature/max_new_tokens over the file's values and 4.34.1's defaults."""
        for key, inactive in UNSUPPORTED.items():
            if generation_config.get(key, inactive) not in (inactive, None):
                raise ModelFileError(
                    source, f"generation settings InstructAny2Pix reproduces (temperature, top_k, top_p); {key} inactive",
                    f"{key} = {generation_config[key]!r}", f"remove {key} from generation_config.json",
                )
        eos = generation_config.get("eos_token_id", eos_id)
        eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
        top_k = generation_config.get("top_k", GENERATION_DEFAULT_TOP_K)
        top_p = generation_config.get("top_p", 1.0)
        return cls(
            temperature=float(temperature), top_k=int(top_k or 0), top_p=float(1.0 if top_p is None else top_p),
            max_new_tokens=int(max_new_tokens), eos_ids=eos_ids,
        )

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def warp_scores(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Scores [B, V] after 4.34.1's warpers for sampling: temperature, then top-k, then top-p (-inf filtered)."""
    scores = logits
    if settings.temperature != 1.0:
        scores = scores / settings.temperature
    if settings.top_k:
        k = min(max(settings.top_k, 1), scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if settings.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - settings.top_p)
        drop_sorted[..., -1:] = False  # min_tokens_to_keep = 1
        drop = drop_sorted.scatter(1, order, drop_sorted)
        scores = scores.masked_fill(drop, -float("inf"))
    return scores


def next_token(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None) -> int:
    """One token from logits [1, V]: argmax at temperature 0, else multinomial on the warped distribution."""
    if settings.greedy:
        return int(logits.argmax(dim=-1)[0])
    probs = torch.softmax(warp_scores(logits.float(), settings), dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)  # a CPU generator gives the same draws whatever device the LLM is on
    return int(torch.multinomial(probs, num_samples=1, generator=generator)[0, 0])


@dataclass
class Decoded:
    """The answer tokens and, per answer token k, the final-norm state and logits of the position predicting it.

    `last_hidden[k]` is the reference's `output_ids.hidden_states[k][-1][0, -1]`.
    """

    answer_ids: list[int]
    last_hidden: torch.Tensor  # [n, H]
    logits: torch.Tensor  # [n, V]


@torch.no_grad()
def decode_answer(
    model: Any2PixLLM, inputs_embeds: torch.Tensor, settings: SamplingSettings,
    generator: torch.Generator | None = None, forced: Sequence[int] | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> Decoded:
    """Generate after the prompt embeddings [1, T, H] (KV cache); `forced` replays given tokens (teacher forcing).

    on_token(step, token id) is called after each token (a progress bar; it may raise to stop).
    """
    llm = model.llm
    limit = len(forced) if forced is not None else settings.max_new_tokens
    cache = llm.new_cache(1, inputs_embeds.shape[1] + limit, device=inputs_embeds.device)
    hidden = llm(inputs_embeds, cache)[:, -1:]
    ids: list[int] = []
    states: list[torch.Tensor] = []
    logits_all: list[torch.Tensor] = []
    for step in range(limit):
        logits = llm.logits(hidden)[:, -1]
        states.append(hidden[0, -1])
        logits_all.append(logits[0])
        token = int(forced[step]) if forced is not None else next_token(logits, settings, generator)
        ids.append(token)
        if on_token is not None:
            on_token(step, token)
        if forced is None and token in settings.eos_ids:
            break
        if step + 1 < limit:
            token_embed = llm.embed(torch.tensor([[token]], device=inputs_embeds.device))
            hidden = llm(token_embed, cache)
    return Decoded(ids, torch.stack(states), torch.stack(logits_all))
