"""ImageBind in fp16 / bf16 against the fp32 run on the same inputs (the reference runs fp32 only).

The relative error (max|low - fp32| / max|fp32|) is printed. Inputs: the fixture's PNG and stored audio input.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lmm_edit.loaders.any2pix.imagebind import load_imagebind

# bf16 keeps 8 bits of mantissa (rel. rounding 4e-3), fp16 11 bits (5e-4); the trunks add a few roundings up
REL_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
CUDA_FP32_REL_TOL = 1e-2  # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32)


def _embeddings(fixture, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    model = load_imagebind(fixture.weights, kwargs_file=fixture.kwargs_file, dtype=dtype, device=device)
    assert model.dtype == dtype
    with torch.no_grad():
        audio = model.audio(fixture.audio_input.to(device=device, dtype=dtype))
    return model.embed_images([Image.open(fixture.images[0])]), audio


@pytest.fixture(scope="module")
def fp32_cpu(fixture):
    return _embeddings(fixture, torch.float32, "cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_on_cpu_stays_close_to_fp32(fixture, fp32_cpu, dtype, rel_err):
    vision, audio = _embeddings(fixture, dtype, "cpu")
    assert vision.dtype == audio.dtype == torch.float32  # post-processing in fp32
    errs = rel_err(vision, fp32_cpu[0]), rel_err(audio, fp32_cpu[1])
    print(f"\nCPU {dtype}: relative error vs fp32 vision {errs[0]:.1e}, audio {errs[1]:.1e}")
    assert max(errs) <= REL_TOL[dtype]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_cuda_stays_close_to_cpu_fp32(fixture, fp32_cpu, dtype, rel_err):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    vision, audio = _embeddings(fixture, dtype, "cuda")
    assert vision.device.type == audio.device.type == "cuda"
    errs = rel_err(vision, fp32_cpu[0]), rel_err(audio, fp32_cpu[1])
    print(f"\nCUDA {dtype}: relative error vs CPU fp32 vision {errs[0]:.1e}, audio {errs[1]:.1e}")
    assert max(errs) <= REL_TOL.get(dtype, CUDA_FP32_REL_TOL)
