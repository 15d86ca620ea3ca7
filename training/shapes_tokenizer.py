"""Teach the shapes model's tokenizer and frozen text encoder the words it was never built with.

The shipped tokenizer learned its merges from English only, so a Russian caption falls apart
into two byte tokens per letter and overflows the 32-token text window. We append merges
learned on the new sentences, starting from how the current tokenizer already splits them,
until every new word is one token. Appended merges never fire on text the old ones already
merge fully, so every existing token id and every English caption keeps its tokens, and the
trained transformer keeps what it knows. The encoder's embedding table grows by the new ids
with seeded random rows at the old rows' scale, as the encoder was built.

A real Qwen3 encoder already places "красный" near "red"; this tiny random one cannot, so
`tie_translations` gives each Russian word the input row of its English word, a stand-in
for that multilingual knowledge. What stays for the transformer to learn is Russian word
order and grammar (cases, no articles), which is what the EN/RU scores then measure.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen3ForCausalLM

from training.shapes_edits import all_edits
from training.shapes_language import LANGUAGES, caption, english_words, plain_e
from training.shapes_world import all_scenes

TOKENIZER_FILENAME = "tokenizer.json"


def new_sentences() -> list[str]:
    """Every sentence the multi-task model is trained on besides the English captions, both spellings of ё."""
    sentences = [caption(scene, "ru") for scene in all_scenes()]
    sentences += [edit.instruction(language) for edit in all_edits() for language in LANGUAGES]
    return sorted(set(sentences) | {plain_e(sentence) for sentence in sentences})


def _words_as_tokens(tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> dict[str, list[str]]:
    """Each pre-tokenized word of the sentences, as the tokenizer splits it today."""
    backend = tokenizer.backend_tokenizer
    words: dict[str, list[str]] = {}
    for sentence in sentences:
        normalized = backend.normalizer.normalize_str(sentence) if backend.normalizer else sentence
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized):
            words.setdefault(word, [token.value for token in backend.model.tokenize(word)])
    return words


def learn_merges(words: dict[str, list[str]]) -> list[tuple[str, str]]:
    """BPE from the current split: merge the most frequent adjacent pair until every word is one token."""
    merges = []
    while True:
        pairs = Counter(pair for tokens in words.values() for pair in zip(tokens, tokens[1:]))
        if not pairs:
            return merges
        best = max(sorted(pairs), key=pairs.__getitem__)
        merges.append(best)
        for word, tokens in words.items():
            merged, index = [], 0
            while index < len(tokens):
                if tuple(tokens[index : index + 2]) == best:
                    merged.append(tokens[index] + tokens[index + 1])
                    index += 2
                else:
                    merged.append(tokens[index])
                    index += 1
            words[word] = merged


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> PreTrainedTokenizerBase:
    """The tokenizer with merges appended so each word of `sentences` is one token; old ids unchanged."""
    merges = learn_merges(_words_as_tokens(tokenizer, sentences))
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        path = Path(folder) / TOKENIZER_FILENAME
        spec = json.loads(path.read_text())
        vocab = spec["model"]["vocab"]
        for first, second in merges:
            vocab.setdefault(first + second, len(vocab))
        spec["model"]["merges"] += [[first, second] for first, second in merges]
        path.write_text(json.dumps(spec, ensure_ascii=False))
        return AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def extend_embeddings(text_encoder: Qwen3ForCausalLM, vocab_size: int, seed: int) -> None:
    """Grow the encoder's input table to `vocab_size`; new rows random at the old rows' scale, the rest untouched."""
    table = text_encoder.get_input_embeddings().weight
    old_size = table.shape[0]
    if vocab_size <= old_size:
        return
    text_encoder.resize_token_embeddings(vocab_size, mean_resizing=False)
    table = text_encoder.get_input_embeddings().weight
    rows = torch.randn(vocab_size - old_size, table.shape[1], generator=torch.Generator().manual_seed(seed))
    table[old_size:] = (rows * table[:old_size].float().std()).to(table.dtype)


def _single_token(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """The id of `word` after a space, or at the start of a prompt, where it is one token."""
    for form in (f" {word}", word):
        ids = tokenizer(form, add_special_tokens=False).input_ids
        if len(ids) == 1:
            return ids[0]
    return None


@torch.no_grad()
def tie_translations(text_encoder: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerBase) -> int:
    """Copy each Russian word's English row into its own rows (both its forms); returns rows tied."""
    table = text_encoder.get_input_embeddings().weight
    tied = 0
    for russian, english in english_words().items():
        english_id = _single_token(tokenizer, english)
        for form in (f" {russian}", russian):
            ids = tokenizer(form, add_special_tokens=False).input_ids
            if english_id is not None and len(ids) == 1:
                table[ids[0]] = table[english_id]
                tied += 1
    return tied
