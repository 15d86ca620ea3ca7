"""A small Qwen-style byte-level BPE tokenizer, trained locally so nothing is downloaded.

It speaks the same chat template contract as Qwen3's (`enable_thinking=False` adds an empty
think block), which is what `Flux2KleinPipeline._get_qwen3_prompt_embeds` relies on.
"""

from __future__ import annotations

import itertools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2TokenizerFast

PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "grey", "brown", "cyan"]
SHAPES = ["circle", "square", "triangle", "star", "cat", "dog", "house", "tree", "car", "mountain", "portrait"]
BACKGROUNDS = ["background", "sky", "field", "room", "street", "beach", "forest", "sunset"]
STYLES = ["photo", "painting", "sketch", "watercolor", "cinematic", "minimal", "detailed", "studio light"]


def training_corpus() -> list[str]:
    """Deterministic sentences covering prompt-like English, including the synthetic world's words."""
    sentences = [
        f"a {style} of a {colour} {shape} on a {background_colour} {background}"
        for style, colour, shape, background_colour, background in itertools.product(
            STYLES, COLOURS, SHAPES, COLOURS[:4], BACKGROUNDS
        )
    ]
    sentences += ["the quick brown fox jumps over the lazy dog 0123456789 , . ! ? : ; ' \" ( ) -"]
    return sentences


def train_tokenizer(vocab_size: int = 1024) -> Qwen2TokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token="<|im_end|>",
        unk_token=None,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )
