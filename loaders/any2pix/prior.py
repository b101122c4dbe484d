"""The InstructAny2Pix refinement prior: a GPT-2-medium-shaped transformer over a conditioning sequence.

Reference: jacklishufan/InstructAny2Pix @ d11e49be50f0dde117ce99b58f6b7aab5dc9bddf,
`instructany2pix/prior/__init__.py` (`prior_config`) and `instructany2pix/prior/model.py`
(`InstructAny2PixPrior`: `get_input_sequence_and_mask`, `add_sos_eos_tokens`, `generate_diffusion`).

The sequence, in `prior_config["sequence_input_key"]` order, as the reference evaluates that list:
`["src_type", "imagebind", "crossattn_clip", "score", "noisy_inputs", "noise_level" "tgt_type"]` — the missing
comma joins the last two into `"noise_leveltgt_type"` (fixture README quirk 3). Keys absent from the
conditioning are skipped, and at inference only four are present:
- `src_type` (MODALITY.VIDEO = 3) -> `modality_embedding`, no SOS/EOS;
- `imagebind` (the LLM embedding at norm 100; zeros for the unconditional row) -> SOS_1, Linear_1, EOS_1;
- `crossattn_clip` (CLIP text states of "": BOS, EOS) -> SOS_2, Linear_2 per token, EOS_2;
- `score` (512-d sinusoidal embedding of the aesthetic score 6.5; the constant 2.0 unconditionally) -> SOS_3,
  Linear_3, EOS_3.
SOS/EOS rows and the Linear are indexed by the key's POSITION in that list. `noisy_inputs` is absent (the
no-diffusion path writes `noisy_input`), `noise_level` and `tgt_type` never match a key. The released prior
was trained with the same list, so feeding the two lost inputs would show it tokens it never saw; the list
is reproduced as it is, with no option to "fix" it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from .clip_text import ClipTextConfig, ClipTextTransformer
from .gpt2 import GPT2Body, GPT2Config

# prior/model.py MODALITY
MODALITY_IMAGE, MODALITY_AUDIO, MODALITY_TEXT, MODALITY_VIDEO = 0, 1, 2, 3
# prior/__init__.py prior_config["sequence_input_key"], as Python reads it (implicit concatenation of the last two)
SEQUENCE_KEYS = ("src_type", "imagebind", "crossattn_clip", "score", "noisy_inputs", "noise_leveltgt_type")
TYPE_KEYS = ("src_type", "tgt_type")
SCORE_EMBED_DIM = 512  # generate_diffusion: get_timestep_embedding(score, 512, flip_sin_to_cos=True, shift=0)
CLIP_PREFIX = "cond_stage_models.0.model."  # CLIPTextModelHiddenState.model (the only cond stage model)
GPT2_PREFIX = "model."


@dataclass(frozen=True)
class PriorConfig:
    embed_dim: int  # GPT-2 width = prior embed_dim (1024)
    linear_dims: dict[int, int]  # key position -> input width of input_sequence_embed_linear.<i>
    sos_rows: int  # start/end_of_sequence_tokens rows (32)
    modality_rows: int  # modality_embedding rows (10)
    gpt2: GPT2Config
    clip: ClipTextConfig

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], gpt2_config: dict | None, clip_text_config: dict | None):
        sos_rows, embed_dim = shapes["start_of_sequence_tokens.weight"]
        linear_dims = {
            int(k.split(".")[1]): shapes[k][1]
            for k in shapes if k.startswith("input_sequence_embed_linear.") and k.endswith(".weight")
        }
        return cls(
            embed_dim=embed_dim, linear_dims=linear_dims, sos_rows=sos_rows,
            modality_rows=shapes["modality_embedding.weight"][0],
            gpt2=GPT2Config.from_shapes(shapes, GPT2_PREFIX, gpt2_config),
            clip=ClipTextConfig.from_shapes(shapes, CLIP_PREFIX, clip_text_config),
        )


def score_embedding(score: torch.Tensor, dim: int = SCORE_EMBED_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """diffusers `get_timestep_embedding(score, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`: [B] -> [B, dim]
    = [cos(s * f_i), sin(s * f_i)], f_i = exp(-ln(max_period) * i / (dim / 2))."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=score.device) / half
    args = score[:, None].float() * torch.exp(exponent)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class Any2PixPrior(nn.Module):
    """Keys as the release `prior/model.bin`, minus the unused GPT-2 `wte` and with the CLIP text model under
    `clip.` (file: `cond_stage_models.0.model.text_model.*`)."""

    def __init__(self, config: PriorConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        e = config.embed_dim
        self.start_of_sequence_tokens = operations.Embedding(config.sos_rows, e)
        self.end_of_sequence_tokens = operations.Embedding(config.sos_rows, e)
        self.input_sequence_embed_linear = nn.ModuleDict(
            {str(i): operations.Linear(d, e) for i, d in sorted(config.linear_dims.items())}
        )
        self.modality_embedding = operations.Embedding(config.modality_rows, e)
        self.model = GPT2Body(config.gpt2, operations)
        self.clip = ClipTextTransformer(config.clip, operations)

    def _wrap(self, position: int, item: torch.Tensor) -> torch.Tensor:
        """add_sos_eos_tokens: [SOS_position, Linear_position(item), EOS_position] along time."""
        index = torch.tensor([position], device=item.device)
        b = item.shape[0]
        sos = self.start_of_sequence_tokens(index).expand(b, 1, -1)
        eos = self.end_of_sequence_tokens(index).expand(b, 1, -1)
        return torch.cat([sos, self.input_sequence_embed_linear[str(position)](item), eos], dim=1)

    def sequence(self, conditioning: dict[str, torch.Tensor]) -> torch.Tensor:
        """get_input_sequence_and_mask: the GPT-2 inputs_embeds [B, L, E] from the present keys, in key order.

        conditioning: "src_type"/"tgt_type" [B, 1] int64; other keys [B, T, width of their Linear].
        """
        parts = []
        for position, key in enumerate(SEQUENCE_KEYS):
            if key not in conditioning:
                continue
            value = conditioning[key]
            parts.append(self.modality_embedding(value) if key in TYPE_KEYS else self._wrap(position, value))
        return torch.cat(parts, dim=1)

    def predict_x0(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The single generated token (sequence_gen_length 1): GPT-2's last position [B, 1, E]."""
        return self.model(inputs_embeds)[:, -1:]

    def text_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """CLIPTextModelHiddenState: the CLIP last hidden state [B, T, W] of already tokenised text."""
        return self.clip(input_ids)
