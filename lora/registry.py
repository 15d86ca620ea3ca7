"""Registered adapters: id -> source and metadata, checked once against every served model.

Registration fetches the adapter, reads its tensors and metadata, and records which served
models it fits and why it does not fit the others, so a request is refused (422) before any
GPU work with the adapter's name, what it was made for and what the request targets.
"""

from __future__ import annotations

import re
import time

from lora.adapter_file import AdapterMismatch, inspect_adapter
from lora.compat import check_compatible
from lora.sources import AdapterSources

ADAPTER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
FORBIDDEN_TAG_PAIRS = ({"person", "nsfw"},)
# what policy reads: the tags a file declares stay, whatever its registrant sends
SAFETY_TAGS = frozenset().union(*FORBIDDEN_TAG_PAIRS)


class AdapterError(ValueError):
    """A LoRA that cannot be registered or used as asked; the message says what to change."""


def declared_tags(adapter_id: str, metadata: dict) -> set[str]:
    """The tags the adapter file declares, lower-case (policy compares lower-case names)."""
    tags = metadata.get("tags", [])
    tags = [tags] if isinstance(tags, str) else tags
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise AdapterError(
            f"LoRA {adapter_id!r} declares tags that are not a list of strings ({tags!r}); write them in its "
            'metadata as a JSON list such as ["style", "person"] (lora.adapter_file.write_metadata).'
        )
    return normal_tags(tags)


def normal_tags(tags: list[str]) -> set[str]:
    return {tag.strip().lower() for tag in tags if tag.strip()}


def registered_tags(adapter_id: str, given: list[str] | None, metadata: dict) -> list[str]:
    """The registrant's tags, or the file's when none are given; the file's safety tags (person, nsfw)
    are kept either way, so registering with `tags: []` never lifts the policy a file asked for."""
    declared = declared_tags(adapter_id, metadata)
    if given is None:
        return sorted(declared)
    return sorted(normal_tags(given) | (declared & SAFETY_TAGS))


def taken(adapter_id: str) -> AdapterError:
    """The refusal of an id another key registered (also raised by the store when two keys register one
    new id at the same moment and the other was first)."""
    return AdapterError(
        f"LoRA id {adapter_id!r} is registered by another API key; only that key can change it. "
        "Register your adapter under another id."
    )


class AdapterRegistry:
    def __init__(
        self,
        store,
        model_shapes,
        sources: AdapterSources,
    ):
        """`store` keeps the registrations (serve_apps.store's AdaptersRepository); `model_shapes()` returns
        {served model: {module: (in, out)}} of its transformer."""
        self.store = store
        self.model_shapes = model_shapes
        self.sources = sources

    def register(
        self,
        adapter_id: str,
        source: str,
        trigger_word: str | None = None,
        license: str | None = None,
        tags: list[str] | None = None,
        owner_key_id: str | None = None,
        is_admin: bool = False,
        private: bool = False,
    ) -> dict:
        """Register (or, by its owner or an admin, update) an adapter; another key's id is refused. A private one
        (a finetune's) exists only for its owner: other keys neither see nor use it."""
        if not ADAPTER_ID_PATTERN.match(adapter_id):
            raise AdapterError(f"LoRA id {adapter_id!r} must be 1-64 letters, digits, '.', '_' or '-'.")
        existing = self.store.load_lora(adapter_id)
        if existing is not None and existing.get("owner_key_id") != owner_key_id and not is_admin:
            raise taken(adapter_id)
        try:
            info = inspect_adapter(self.sources.fetch(source))
        except (ValueError, OSError) as error:
            raise AdapterError(str(error)) from None
        fits, refusals = [], {}
        for model, shapes in self.model_shapes().items():
            try:
                check_compatible(adapter_id, info, model, shapes)
                fits.append(model)
            except AdapterMismatch as mismatch:
                refusals[model] = str(mismatch)
        if not fits:
            raise AdapterError(f"LoRA {adapter_id!r} fits none of the served models: " + " ".join(refusals.values()))
        metadata = info.metadata
        record = {
            "id": adapter_id,
            "source": source,
            "base_model": metadata.get("base_model") or fits[0],
            "trigger_word": trigger_word or metadata.get("trigger_word"),
            "license": license or metadata.get("license"),
            "tags": registered_tags(adapter_id, tags, metadata),
            "rank": info.rank,
            "fits": fits,
            "refusals": refusals,
            "registered_at": time.time(),
            "owner_key_id": existing["owner_key_id"] if existing and is_admin else owner_key_id,
            "private": private,
        }
        self.store.save_lora(record)  # raises taken() when another key registered this id since the check above
        return record

    def registered(self, key_id: str | None = None) -> list[dict]:
        """Every registration `key_id` may see (others' private ones left out), by id."""
        return [record for record in self.store.list_loras() if visible(record, key_id)]

    def resolve(self, model: str, requested: list[tuple[str, float]], key_id: str | None = None) -> list[dict]:
        """The records of a request's adapters, or AdapterError naming the one that cannot be used."""
        records = []
        for adapter_id, _scale in requested:
            record = self.store.load_lora(adapter_id) if ADAPTER_ID_PATTERN.match(adapter_id) else None
            if record is None or not visible(record, key_id):
                raise AdapterError(
                    f"No LoRA {adapter_id!r} is registered; see GET /v1/loras or POST /v1/loras to add it."
                )
            if model not in record["fits"]:
                raise AdapterError(record["refusals"].get(model, f"LoRA {adapter_id!r} does not fit {model}."))
            records.append(record)
        tags = [set(record["tags"]) for record in records]
        for pair in FORBIDDEN_TAG_PAIRS:
            if any(pair & a and pair & b and (pair & a) != (pair & b) for a in tags for b in tags) or any(
                pair <= t for t in tags
            ):
                raise AdapterError(
                    f"Combining an adapter tagged {' with one tagged '.join(sorted(pair))} is refused by policy."
                )
        return records


def visible(record: dict, key_id: str | None) -> bool:
    """Public registrations are every key's; a private one is its owner's alone."""
    return not record.get("private") or record.get("owner_key_id") == key_id


def trigger_warnings(prompt: str, records: list[dict]) -> list[str]:
    return [
        f"the prompt lacks {record['trigger_word']!r}, the trigger word of LoRA {record['id']!r}; it may have little effect"
        for record in records
        if record.get("trigger_word") and record["trigger_word"].lower() not in prompt.lower()
    ]


def add_trigger_words(prompt: str, records: list[dict]) -> str:
    missing = [
        r["trigger_word"] for r in records if r.get("trigger_word") and r["trigger_word"].lower() not in prompt.lower()
    ]
    return ", ".join([*missing, prompt]) if missing else prompt
