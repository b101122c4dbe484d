"""The token status LMMEdit_LMMEncode sends to its node: the badge web/js/lmm_edit.js draws (green or amber).

ok: the LMM wrote its image tokens ([MM] tokens for a VLM) in order by itself, as trained (green).
forced: it did not, and force_image_tokens appended them (amber).
out_of_order: it did not, and they are used as written; the edit may be poor (amber).
"""

from __future__ import annotations

from ..loaders.instruction import LMMInstruction

UI_TEXT_KEY = "lmm_edit_text"  # status lines, shown in a read-only text box on the node
UI_STATUS_KEY = "lmm_edit_status"  # one of TOKEN_STATUSES, shown as the node's badge
TOKEN_STATUSES = ("ok", "forced", "out_of_order")


def token_status(result: LMMInstruction) -> str:
    if result.forced:
        return "forced"
    return "ok" if result.image_tokens_in_order else "out_of_order"


def encode_ui(result: LMMInstruction, lines: list[str]) -> dict[str, list[str]]:
    """The node's ui message: its text lines and its token status."""
    return {UI_TEXT_KEY: ["\n".join(lines)], UI_STATUS_KEY: [token_status(result)]}
