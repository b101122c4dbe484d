"""The layer classes the pack's model modules are built from: an ``operations`` namespace, as ComfyUI's models.

Every model module of ``loaders/`` (LLaMA decoder, CLIP vision tower, Q-Former, BIM, IP-Adapter projections,
the IAA) takes ``operations=`` and builds its ``Linear``, ``Conv2d``, ``LayerNorm`` and ``Embedding`` layers
through it. The default is ``torch.nn`` itself, so ``loaders/`` imports no ComfyUI and runs anywhere. The nodes
pass ComfyUI's ``comfy.ops.disable_weight_init`` (or ``manual_cast``): the same layers with ComfyUI's hooks for
per-layer weight casting and partial loading (comfyanonymous/ComfyUI ``comfy/ops.py``), the way
``comfy/ldm`` models are built.
"""

from __future__ import annotations

from torch import nn

DEFAULT_OPERATIONS = nn  # provides Linear, Conv2d, LayerNorm, Embedding: what the modules build
