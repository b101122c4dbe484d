"""InstructAny2Pix (jacklishufan/InstructAny2Pix @ d11e49be50f0dde117ce99b58f6b7aab5dc9bddf) in plain torch.

Stages (fixture README numbering): 1 refinement prior (`prior*.py`, `gpt2.py`, `clip_text.py`); 2 the LLM
(`llm*.py`, `tokenizer.py`, `sampling.py`, `answer.py`); 3 ImageBind (`imagebind*.py`); 4 fusion
(`fusion.py`); 5 the two-view IP-Adapter projection (`ip_projection.py`); 6 DDIM inversion math and the mix
(`inversion.py`). Instruction markers: `markers.py`. No ComfyUI import.
"""

from .answer import AnswerError, BaseChoice, choose_base
from .fusion import DEMO, PRESETS, REFERENCE, FusionSettings, fuse, prior_input, renormalize_inputs
from .imagebind import (
    ImageBind,
    comfy_audio_rows,
    embed_audios,
    embed_images,
    load_imagebind,
)
from .inversion import (
    ddim_inversion_step,
    euler_init_noise_sigma,
    inversion_alphas,
    inversion_timesteps,
    polar_interpolate,
)
from .ip_projection import GlobalLocalAdapter, GlobalLocalImageProj, load_global_local_adapter
from .llm import Any2PixLLM, Any2PixLLMConfig
from .llm_encode import LLMResult, encode_instruction, vicuna_v1_prompt
from .llm_files import load_llm, read_generation_config
from .markers import MarkedInstruction, MarkerError, parse_markers
from .prior import Any2PixPrior, PriorConfig
from .prior_files import PriorBundle, load_prior
from .prior_refine import PriorResult, refine
from .sampling import SamplingSettings, decode_answer, warp_scores
from .tokenizer import Any2PixTokenizer

__all__ = [
    "ImageBind", "comfy_audio_rows",
    "embed_audios", "embed_images", "load_imagebind",
    "DEMO", "PRESETS", "REFERENCE", "AnswerError", "Any2PixLLM", "Any2PixLLMConfig", "Any2PixPrior",
    "Any2PixTokenizer", "BaseChoice", "FusionSettings", "GlobalLocalAdapter", "GlobalLocalImageProj", "LLMResult",
    "MarkedInstruction", "MarkerError", "PriorBundle", "PriorConfig", "PriorResult", "SamplingSettings",
    "choose_base", "ddim_inversion_step", "decode_answer", "encode_instruction", "euler_init_noise_sigma", "fuse",
    "inversion_alphas", "inversion_timesteps", "load_global_local_adapter", "load_llm", "load_prior",
    "parse_markers", "polar_interpolate", "prior_input", "read_generation_config", "refine", "renormalize_inputs",
    "vicuna_v1_prompt", "warp_scores",
]
