"""Fused multi-branch cross-attention vs the unfused two SDPA + mul + add, measured side by side.

    python benchmarks/attention.py            # CUDA if available, else CPU (eager figures only)
    python benchmarks/attention.py --device cpu --repeats 10 --threads 1

Shapes: SD 1.5 at 512 px (B = 3 for dual CFG, 8 heads, Lq 4096/1024/256/64, D 40/80/160) and SDXL at
1024 px (D 64, 10/20 heads, Lq 4096/1024); text 77 tokens plus one image branch of 4 (IP-Adapter)
or 16 (Plus) tokens (docs/kernels.md, Shapes). Inputs are in ComfyUI's attn2 layout [B, L, H*D].

"unfused" is what IPAdapter_plus does: SDPA over text, SDPA over image tokens, ``out + out_ip * w``.
"op" is ``multi_branch_cross_attention`` through the registry: the Triton kernel on a GPU, the eager
backend (the same SDPA calls) on a CPU, where the ratio shows only the op's dispatch overhead.
On a GPU the table adds the bytes floor of docs/kernels.md (Memory traffic) (fused bytes / HBM bandwidth)
and the fraction of it reached; targets from the issue: >= 2x over unfused, >= 50 % of the floor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from pack_import import import_pack

import_pack()
from lmm_edit.kernels import AttentionBranch, multi_branch_cross_attention, select_backend  # noqa: E402

TEXT_TOKENS = 77  # one CLIP chunk
IMAGE_WEIGHT = 0.8
H100_SXM5_HBM_TBS = 3.35  # TB/s, docs/kernels.md (H100 PCIe: 2.0)


@dataclass(frozen=True)
class Layer:
    model: str
    heads: int
    q_len: int
    head_dim: int
    count: int  # attn2 layers of this shape in one UNet evaluation (docs/kernels.md, Shapes)


LAYERS = (
    Layer("SD1.5", 8, 4096, 40, 5),
    Layer("SD1.5", 8, 1024, 80, 5),
    Layer("SD1.5", 8, 256, 160, 5),
    Layer("SD1.5", 8, 64, 160, 1),
    Layer("SDXL", 10, 4096, 64, 10),
    Layer("SDXL", 20, 1024, 64, 60),
)
IMAGE_TOKENS = (4, 16)
BATCH = 3


def bytes_moved(layer: Layer, image_tokens: int, element_size: int) -> tuple[float, float]:
    """(fused, unfused) HBM bytes of one call, docs/kernels.md (Memory traffic) with n = 1 image branch."""
    channels = layer.heads * layer.head_dim
    keys = TEXT_TOKENS + image_tokens
    fused = element_size * BATCH * channels * (2 * layer.q_len + 2 * keys)
    unfused = element_size * BATCH * channels * ((2 + 7) * layer.q_len + 2 * keys)
    return fused, unfused


def _inputs(layer: Layer, image_tokens: int, device: torch.device, dtype: torch.dtype):
    channels = layer.heads * layer.head_dim

    def projection(length: int) -> torch.Tensor:
        return torch.randn(BATCH, length, channels, device=device, dtype=dtype)

    return projection(layer.q_len), projection(TEXT_TOKENS), projection(TEXT_TOKENS), \
        projection(image_tokens), projection(image_tokens)


def _heads_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, H*D] -> [B, H, L, D] view, as ComfyUI's attention_pytorch does (no copy)."""
    batch, length, channels = x.shape
    return x.view(batch, length, heads, channels // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def variants(layer: Layer, tensors) -> dict[str, Callable[[], torch.Tensor]]:
    q, k_txt, v_txt, k_img, v_img = (_heads_view(t, layer.heads) for t in tensors)
    branches = [AttentionBranch(k_txt, v_txt), AttentionBranch(k_img, v_img, IMAGE_WEIGHT)]

    def text_only():
        return _merge_heads(functional.scaled_dot_product_attention(q, k_txt, v_txt))

    def unfused():
        out = _merge_heads(functional.scaled_dot_product_attention(q, k_txt, v_txt))
        out_ip = _merge_heads(functional.scaled_dot_product_attention(q, k_img, v_img))
        return out + out_ip * IMAGE_WEIGHT

    def op():
        return multi_branch_cross_attention(q, branches)

    return {"text only": text_only, "unfused": unfused, "op": op}


def _time_cpu(calls: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Minimum wall time in µs over interleaved repetitions (a shared host makes medians noisy)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1e6)
    return {name: min(values) for name, values in samples.items()}


def _time_cuda(calls: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median µs per call from CUDA events, each sample averaging 20 back-to-back launches."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(3):
            call()  # compile / warm up
    torch.cuda.synchronize()
    for _ in range(repeats):
        for name, call in calls.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(20):
                call()
            end.record()
            torch.cuda.synchronize()
            samples[name].append(start.elapsed_time(end) * 1e3 / 20)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="samples per variant (default 5 CPU / 30 GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bandwidth-tbs", type=float, default=H100_SXM5_HBM_TBS, help="HBM TB/s for the floor")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.float16 if on_gpu else torch.float32
    repeats = args.repeats or (30 if on_gpu else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = _time_cuda if on_gpu else _time_cpu
    print(f"device {device} ({torch.cuda.get_device_name(device) if on_gpu else 'CPU'}), {dtype}, B={BATCH}, "
          f"text {TEXT_TOKENS} tokens, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = f"{'model':6} {'H':>3} {'Lq':>5} {'D':>4} {'Lkv':>4} | {'text':>9} {'unfused':>9} {'op':>9} {'unf/op':>6}"
    if on_gpu:
        header += f" | {'floor':>6} {'%floor':>6}"
    print(header + f" | {'backend':7} {'max|op-unf|':>11}   (µs per call)")
    totals: dict[str, dict[str, float]] = {}
    for image_tokens in IMAGE_TOKENS:
        for layer in LAYERS:
            tensors = _inputs(layer, image_tokens, device, dtype)
            calls = variants(layer, tensors)
            backend = select_backend("multi_branch_cross_attention",
                                     *(_heads_view(t, layer.heads) for t in tensors))
            difference = (calls["op"]().float() - calls["unfused"]().float()).abs().max().item()
            times = timer(calls, repeats)
            row = (f"{layer.model:6} {layer.heads:>3} {layer.q_len:>5} {layer.head_dim:>4} {image_tokens:>4} | "
                   f"{times['text only']:>9.1f} {times['unfused']:>9.1f} {times['op']:>9.1f} "
                   f"{times['unfused'] / times['op']:>6.2f}")
            total = totals.setdefault(f"{layer.model} Lkv {image_tokens}", {"unfused": 0.0, "op": 0.0, "floor": 0.0})
            total["unfused"] += layer.count * times["unfused"]
            total["op"] += layer.count * times["op"]
            if on_gpu:
                fused_bytes, _ = bytes_moved(layer, image_tokens, torch.finfo(dtype).bits // 8)
                floor = fused_bytes / (args.bandwidth_tbs * 1e12) * 1e6
                total["floor"] += layer.count * floor
                row += f" | {floor:>6.1f} {100 * floor / times['op']:>5.0f}%"
            print(row + f" | {backend:7} {difference:>11.2e}")
    print("per UNet evaluation (all attn2 layers, docs/kernels.md):")
    for name, total in totals.items():
        line = f"  {name:14} unfused {total['unfused'] / 1e3:8.2f} ms  op {total['op'] / 1e3:8.2f} ms  " \
               f"unfused/op {total['unfused'] / total['op']:.2f}"
        if on_gpu:
            line += f"  floor {total['floor'] / 1e3:.3f} ms ({100 * total['floor'] / total['op']:.0f}% of it reached)"
        print(line)


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs every node (execution.py)
        main()
