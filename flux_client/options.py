"""Option values shared by the CLI and the Telegram bot."""

from __future__ import annotations

DEFAULT_LORA_SCALE = 1.0


def parse_lora(text: str) -> tuple[str, float]:
    """'mystyle:0.8' -> ('mystyle', 0.8); 'mystyle' -> ('mystyle', 1.0)."""
    lora_id, colon, scale = text.rpartition(":")
    if not colon:
        lora_id, scale = text, ""
    if not lora_id:
        raise ValueError(f"LoRA {text!r} has no id; write ID or ID:SCALE, e.g. mystyle:0.8")
    if not scale:
        return lora_id, DEFAULT_LORA_SCALE
    try:
        return lora_id, float(scale)
    except ValueError:
        raise ValueError(f"LoRA {text!r}: the scale after ':' must be a number, e.g. {lora_id}:0.8") from None
