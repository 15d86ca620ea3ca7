"""A configurable prompt policy, applied before any model work."""

from __future__ import annotations

import re


class PromptPolicy:
    """Refuses prompts matching any blocked pattern (case-insensitive regular expressions)."""

    def __init__(self, blocked_patterns: list[str]):
        self.patterns = [re.compile(pattern, re.IGNORECASE) for pattern in blocked_patterns]

    def refusal(self, prompt: str) -> str | None:
        for pattern in self.patterns:
            if pattern.search(prompt):
                return f"the prompt matches the server's blocked pattern {pattern.pattern!r}"
        return None
