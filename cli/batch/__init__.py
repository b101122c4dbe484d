"""``python -m lmm_edit batch``: one workflow over a manifest of (image, instruction) items, resumable.

manifest.py reads the items, workflow.py finds the image/instruction nodes of the workflow,
inputs.py reads each item's files on the driver, worker.py runs items in one ComfyUI session,
local_runner.py / ray_runner.py spread them, store.py writes results.jsonl and the images,
metrics.py / metric_models.py score the edits, summary.py sums them up, command.py wires it all.
"""
