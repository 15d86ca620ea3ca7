"""Offline training programs: the LoRA trainer (`flux-lora`), the shapes-world model and its
scorer, and what they share: the flow-matching objective (`flow_matching`) and the step loop with
its step hook (`loop`).

Serving never imports this package (`.importlinter` holds the arrows); it may import
`deployments` and `lora` for the registry, the weights loader and the adapter file format.
"""
