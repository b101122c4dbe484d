"""Image + instruction -> LMMInstruction, as SmartEdit's reference (test/DS_SmartEdit_test.py).

1. CLIP: the image squashed to 224x224 (PIL bicubic), OpenAI normalisation, penultimate layer without CLS
   -> V [1, 256, C]; mm_projector -> [1, 256, D].
2. Prompt (prompt.py) tokenised (tokenizer.py); the first <img_0> id is deleted and the 256 projected
   features are inserted at its index.
3. Decode loop (decode.py) -> the 32 kept states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from ..encoder import AUTO_TEMPLATE, MAX_NEW_TOKENS, EncodeOptions, missing_tokens_problem, status_lines
from ..instruction import LMMInstruction, check_context, check_encodable, check_placeholders
from .decode import DecodeResult, decode_image_states, image_tokens_in_order
from .lmm import SmartEditLMM
from .prompt import TEMPLATES, build_prompt, resolve_template, template_index_for_seed
from .vision import clip_pixels

# "NN: <Human line>", numbered 1..30 in the order of data/ConversationTemplateEditing_use.txt
TEMPLATE_CHOICES = [AUTO_TEMPLATE] + [f"{i + 1:02d}: {human}" for i, (human, _) in enumerate(TEMPLATES)]
# Working memory of one encode, beyond the weights (what ComfyUI must free before loading the LMM):
ALLOCATOR_HEADROOM = 256 * 1024 * 1024  # CLIP activations, logits [V] per step and the allocator's fragmentation


@dataclass(frozen=True)
class PromptInputs:
    input_ids: torch.Tensor  # [T] token ids of the prompt
    insert_at: int  # index of the first <img_0>, removed and replaced by the image features
    inputs_embeds: torch.Tensor  # [1, T - 1 + P, D]


def vision_features(lmm: SmartEditLMM, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [H, W, 3] 0..1 -> (CLIP patch features [1, P, C], projected features [1, P, D]) in compute dtype."""
    device = lmm.execution_device()
    pixels = clip_pixels(image, lmm.vision.config.image_size).to(device)
    feats = lmm.vision(pixels)
    return feats, lmm.mm_projector(feats)


def prompt_inputs(lmm: SmartEditLMM, input_ids: torch.Tensor, projected: torch.Tensor) -> PromptInputs:
    """Embed `input_ids` [T] with the first <img_0> removed and `projected` [1, P, D] inserted in its place."""
    first_image = lmm.info.image_token_ids[0]
    hits = (input_ids == first_image).nonzero()
    if hits.numel() == 0:
        raise ValueError("the prompt holds no <img_0> placeholder for the image features")
    at = int(hits[0, 0])
    kept = torch.cat([input_ids[:at], input_ids[at + 1 :]]).to(projected.device)
    embeds = lmm.llm.embed(kept.unsqueeze(0))
    embeds = torch.cat([embeds[:, :at], projected.to(embeds.dtype), embeds[:, at:]], dim=1)
    return PromptInputs(input_ids=input_ids, insert_at=at, inputs_embeds=embeds)


@torch.inference_mode()
def encode_instruction(
    lmm: SmartEditLMM,
    image: torch.Tensor,
    instruction: str,
    *,
    seed: int = 0,
    temperature: float = 0.0,
    template: int | str | None = None,
    force_image_tokens: bool = False,
    on_token: Callable[[int, int], None] | None = None,
    teacher_ids: Sequence[int] | None = None,
) -> LMMInstruction:
    """Encode one image [H, W, 3] (0..1) and instruction into an LMMInstruction (CPU fp32 tensors).

    seed: picks the template when `template` is None and seeds sampling; temperature 0 = greedy
    (the reference script uses 0.7). template: None / index 0..29 / custom Human line with [cap].
    When the model does not emit exactly <img_0>..<img_31> (in order, then </s>), `image_tokens_in_order`
    is False; teacher_ids replays a given answer (the token chosen at each step, e.g. a reference run's
    forced tokens); with fewer than 32 image states and no forcing, `hidden_states` holds what was kept
    (the reference would fail its assertion) and `extras["problem"]` says what happened.
    """
    human = resolve_template(template, seed)
    ids = torch.tensor(checked_prompt_ids(lmm, instruction, human), dtype=torch.long)
    feats, projected = vision_features(lmm, image)
    prompt = prompt_inputs(lmm, ids, projected)
    result: DecodeResult = decode_image_states(
        lmm.llm, prompt.inputs_embeds, lmm.info.image_token_ids, lmm.info.eos_id,
        temperature=temperature, seed=seed, force_image_tokens=force_image_tokens, on_token=on_token,
        teacher_ids=teacher_ids,
    )
    in_order = image_tokens_in_order(result.model_choices, lmm.info.image_token_ids, lmm.info.eos_id) and not result.forced
    first_image = lmm.info.image_token_ids[0]
    text_ids = [t for t in result.token_ids if t < first_image]
    extras = {"first_logits_argmax": int(result.first_logits.argmax()), "model_choices": result.model_choices}
    kept = result.kept_states.shape[0]
    if kept != len(lmm.info.image_token_ids):
        extras["problem"] = missing_tokens_problem(kept, len(lmm.info.image_token_ids), _token_range(lmm))
    return LMMInstruction(
        hidden_states=result.kept_states.float().cpu(),
        vision_features=feats[0].float().cpu(),
        token_ids=torch.tensor(result.token_ids, dtype=torch.long),
        image_tokens_in_order=in_order,
        family=lmm.info.family,
        text=lmm.tokenizer.decode(text_ids),
        forced=result.forced,
        template=human,
        extras=extras,
    )


def checked_prompt_ids(lmm: SmartEditLMM, instruction: str, human: str) -> list[int]:
    """The prompt's token ids (with the one <img_0> slot), after refusing text with no UTF-8 form, SmartEdit's own tokens in it and a
    prompt (image features and the 32 image tokens counted) longer than the LLM's context."""
    check_encodable(instruction)
    tokenizer = lmm.tokenizer
    check_placeholders(instruction, [*tokenizer.added, *tokenizer.special], lmm.info.family)
    ids = tokenizer.encode(build_prompt(instruction, human))
    image_features = lmm.vision.config.grid ** 2  # the <img_0> slot becomes P = 256 CLIP features
    image_tokens = len(lmm.info.image_token_ids)
    prompt_tokens = len(ids) - 1 + image_features
    check_context(
        prompt_tokens + image_tokens, lmm.info.context, len(tokenizer.encode(instruction, add_bos=False)),
        f"{prompt_tokens} of prompt with {image_features} image features, then the {image_tokens} image tokens "
        f"{_token_range(lmm)}", lmm.info.family,
    )
    return ids


def _token_range(lmm: SmartEditLMM) -> str:
    return f"<img_0>..<img_{len(lmm.info.image_token_ids) - 1}>"


def template_index(choice: str, seed: int) -> int:
    """0-based index into TEMPLATES of a TEMPLATE_CHOICES entry; auto: the one the seed picks."""
    if choice == AUTO_TEMPLATE:
        return template_index_for_seed(seed)
    if choice not in TEMPLATE_CHOICES:
        raise ValueError(f"unknown SmartEdit template {choice!r}; pick one of the 30 or {AUTO_TEMPLATE!r}")
    return TEMPLATE_CHOICES.index(choice) - 1


class SmartEditEncoder:
    """SmartEdit's LMM as an ``InstructionEncoder`` (loaders/encoder.py)."""

    def __init__(self, lmm: SmartEditLMM) -> None:
        self.lmm = lmm
        self.family = lmm.info.family

    def encode(self, image: torch.Tensor, instruction: str, options: EncodeOptions) -> LMMInstruction:
        index = template_index(options.template, options.seed)
        result = encode_instruction(
            self.lmm, image, instruction, seed=options.seed, temperature=options.temperature, template=index,
            force_image_tokens=options.force_image_tokens, on_token=options.on_token,
        )
        template_line = f"Template {index + 1:02d}: {TEMPLATES[index][0]}"
        return replace(result, status=status_lines(result, len(self.lmm.info.image_token_ids), _token_range(self.lmm),
                                                   template_line))

    def memory_required(self) -> int:
        """The KV cache of a full-length answer plus the prompt pass's MLP activations and some headroom."""
        config = self.lmm.llm.config
        itemsize = self.lmm.llm.norm.weight.element_size()  # activations and cache: the compute dtype
        positions = self.lmm.info.context + MAX_NEW_TOKENS  # the longest prompt encode() accepts, then the answer
        kv_cache = 2 * config.layers * config.hidden * positions * itemsize
        activations = 4 * positions * config.intermediate * itemsize  # MLP intermediates of the prompt pass
        return kv_cache + activations + ALLOCATOR_HEADROOM
