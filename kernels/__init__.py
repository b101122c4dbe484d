"""Attention ops and their backends (eager, triton), selected by declared constraints.

Pure torch: nothing here imports ComfyUI. Triton is imported only when its backend first runs.

    from lmm_edit.kernels import AttentionBranch, multi_branch_cross_attention
    out = multi_branch_cross_attention(q, [AttentionBranch(k_txt, v_txt), AttentionBranch(k_img, v_img, lam, mask)])
"""

from .backends import ATTENTION, MULTI_BRANCH_CROSS_ATTENTION
from .branches import AttentionBranch
from .ops import attention, list_backends, multi_branch_cross_attention, select_backend, use_backend
from .probe import KernelProbeError, probe
from .registry import BackendNotFoundError, NoCapableBackendError

__all__ = [
    "ATTENTION",
    "MULTI_BRANCH_CROSS_ATTENTION",
    "AttentionBranch",
    "BackendNotFoundError",
    "KernelProbeError",
    "NoCapableBackendError",
    "attention",
    "list_backends",
    "multi_branch_cross_attention",
    "probe",
    "select_backend",
    "use_backend",
]
