"""ImageBind's vision and audio encoders (stem, CLS, positions, trunk, head, post-processing), eval mode.

Numerically as facebookresearch/ImageBind @ 3fcf5c9039de97f6ff5528ee4a9dce903c5979b3,
`imagebind/models/imagebind_model.py` (`ImageBindModel._create_modality_*`, `forward`) and
`imagebind/models/multimodal_preprocessors.py` (`PadIm2Video`, `PatchEmbedGeneric`, `RGBDTPreprocessor`):

vision, pixels [N, 3, 224, 224] (already normalised, see imagebind_vision_input.py):
  `PadIm2Video(repeat, ntimes=2)`: [N, 3, 2, 224, 224] (the still image repeated along time);
  Conv3d(3 -> W, kernel = stride = (2, 14, 14), no bias): [N, W, 1, 16, 16] -> tokens [N, 256, W];
  prepend the CLS token, add the learned positions [1, 257, W] (no interpolation: the size is fixed);
  trunk with the pre-transformer LayerNorm; head = LayerNorm(eps 1e-6) -> token 0 -> Linear(W -> D, no bias);
  post-processing: L2 normalise (norm 1).
audio, fbank clips [N, S, 1, 128, 204] (S = 3 clips, see imagebind_audio_input.py):
  the clips are folded into the batch [N S, 1, 128, 204];
  Conv2d(1 -> W, kernel 16, stride 10, no bias): [N S, W, 12, 19] -> tokens [N S, 228, W] -> LayerNorm (eps 1e-5,
  torch's default: the audio stem's `nn.LayerNorm(audio_embed_dim)`);
  CLS + learned positions [1, 229, W]; trunk with `add_bias_kv`, no pre-transformer norm; head as vision;
  post-processing per clip: L2 normalise, times clip(exp(log_logit_scale), max=100) = 20 (a frozen buffer);
  then the mean over the S clips (norm slightly below 20).

The post-processing runs in fp32 whatever the trunk's dtype (the reference is fp32 throughout); the outputs are fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from .imagebind_trunk import ImageBindTrunk, TrunkConfig

HEAD_NORM_EPS = 1e-6  # imagebind_model.py `_create_modality_heads`
AUDIO_STEM_NORM_EPS = 1e-5  # nn.LayerNorm default; the audio stem's norm_layer is built without eps
IMAGE_TIME_REPEATS = 2  # imagebind_model.py: PadIm2Video(pad_type="repeat", ntimes=2)
MAX_LOGIT_SCALE = 100.0  # imagebind/models/helpers.py LearnableLogitScaling(max_logit_scale=100)
AUDIO_LOGIT_SCALE = 20.0  # imagebind_model.py: LearnableLogitScaling(logit_scale_init=20.0, learnable=False)


@dataclass(frozen=True)
class VisionEncoderConfig:
    trunk: TrunkConfig
    out_dim: int
    kernel: tuple[int, int, int]  # (time, height, width); the stride equals the kernel
    grid: tuple[int, int, int]  # patch layout (time, height, width) of a 224 x 224 image

    @property
    def image_size(self) -> int:
        return self.grid[1] * self.kernel[1]


@dataclass(frozen=True)
class AudioEncoderConfig:
    trunk: TrunkConfig
    out_dim: int
    kernel: int
    stride: int
    grid: tuple[int, int]  # patch layout (mel, time) of one [128 x 204] clip


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1, p=2)


class ImageBindVisionEncoder(nn.Module):
    """Parameters: `patch_embed` (Conv3d), `cls_token` [1, 1, W], `pos_embed` [1, 1 + patches, W], `trunk`,
    `head_norm`, `head_proj`."""

    def __init__(self, config: VisionEncoderConfig, operations: ModuleType = DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        w = config.trunk.width
        self.patch_embed = operations.Conv3d(3, w, kernel_size=config.kernel, stride=config.kernel, bias=False)
        self.cls_token = nn.Parameter(torch.empty(1, 1, w))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + math.prod(config.grid), w))
        self.trunk = ImageBindTrunk(config.trunk, operations)
        self.head_norm = operations.LayerNorm(w, eps=HEAD_NORM_EPS)
        self.head_proj = operations.Linear(w, config.out_dim, bias=False)

    def head(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, H, W] (normalised) -> head output [N, D] before the post-processing."""
        video = pixels.unsqueeze(2).repeat(1, 1, IMAGE_TIME_REPEATS, 1, 1)  # Im2Video + PadIm2Video: [N, 3, 2, H, W]
        tokens = self.patch_embed(video).flatten(2).transpose(1, 2)  # [N, patches, W]
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"the vision encoder expects {self.config.image_size} x {self.config.image_size} pixels "
                f"({self.pos_embed.shape[1] - 1} patches); got an input of shape {tuple(pixels.shape)}"
            )
        cls = self.cls_token.to(tokens).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed.to(tokens)
        x = self.trunk(x)
        return self.head_proj(self.head_norm(x)[:, 0])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, H, W] -> L2-normalised embeddings [N, D] (fp32)."""
        return _l2_normalize(self.head(pixels))


class ImageBindAudioEncoder(nn.Module):
    """Parameters: `patch_embed` (Conv2d), `patch_norm`, `cls_token`, `pos_embed`, `trunk`, `head_norm`,
    `head_proj`; buffer `log_logit_scale` (fp32, log 20 in the release file)."""

    def __init__(self, config: AudioEncoderConfig, operations: ModuleType = DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        w = config.trunk.width
        self.patch_embed = operations.Conv2d(1, w, kernel_size=config.kernel, stride=config.stride, bias=False)
        self.patch_norm = operations.LayerNorm(w, eps=AUDIO_STEM_NORM_EPS)
        self.cls_token = nn.Parameter(torch.empty(1, 1, w))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + math.prod(config.grid), w))
        self.trunk = ImageBindTrunk(config.trunk, operations)
        self.head_norm = operations.LayerNorm(w, eps=HEAD_NORM_EPS)
        self.head_proj = operations.Linear(w, config.out_dim, bias=False)
        self.register_buffer("log_logit_scale", torch.tensor(math.log(AUDIO_LOGIT_SCALE)))

    def head(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [M, 1, mel, frames] (normalised fbank) -> head output [M, D] before the post-processing."""
        tokens = self.patch_norm(self.patch_embed(clips).flatten(2).transpose(1, 2))  # [M, patches, W]
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(
                f"the audio encoder expects fbank clips giving {self.pos_embed.shape[1] - 1} patches; "
                f"got clips of shape {tuple(clips.shape)}"
            )
        cls = self.cls_token.to(tokens).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed.to(tokens)
        x = self.trunk(x)
        return self.head_proj(self.head_norm(x)[:, 0])

    def postprocess(self, head: torch.Tensor) -> torch.Tensor:
        """Per clip [M, D]: normalise, then the fixed logit scale (20, clipped at 100); fp32."""
        scale = self.log_logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
        return scale * _l2_normalize(head)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [N, S, 1, mel, frames] -> [N, D]: the mean over the S post-processed clip embeddings (fp32)."""
        n, s = clips.shape[:2]
        per_clip = self.postprocess(self.head(clips.reshape(n * s, *clips.shape[2:])))
        return per_clip.reshape(n, s, -1).mean(dim=1)
