"""Command-line tools: the headless edit (a real ComfyUI run in process) and converters."""
