"""Model workers as plain classes: registry, emulated checkpoints, text encoder, denoiser.

Nothing here knows about Ray or HTTP, so everything is testable in-process.
"""
