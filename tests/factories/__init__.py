"""Tiny random models written in the real file formats the pack and ComfyUI read."""
