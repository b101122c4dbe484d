"""Tiny random models written in the real file formats the pack and ComfyUI read.

Used by the self-check of ``python -m lmm_edit edit`` (when real weights are absent), by the
benchmarks and by the tests; part of the installed pack, so an install without ``tests/`` runs them.
"""
