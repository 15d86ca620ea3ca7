"""Offline training programs: the LoRA trainer (`flux-lora`), the shapes-world model and its
scorer, and the flow-matching code they share.

Serving never imports this package (`.importlinter` holds the arrows); it may import
`deployments` and `lora` for the registry, the weights loader and the adapter file format.
"""
