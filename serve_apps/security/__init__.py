"""Who may do what and how much: API keys, per-key limits, the outbound network guard, URL signing, safety and prompt moderation."""
