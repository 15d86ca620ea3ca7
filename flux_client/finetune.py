"""Fine-tuning's request bodies and answers (BFL's finetune API), shared by the clients and the CLI (no I/O but
reading the training files; stdlib only, so the CLI's --help stays fast)."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from flux_client.progress import READY, JobUpdate

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # what the server trains on
CAPTION_SUFFIX = ".txt"  # a same-stem caption: a.png + a.txt
TRAINING = "training"
PERCENT = 100

TrainingFiles = str | Path | Iterable[str | Path]  # a folder, or the files themselves


def is_training_file(path: Path) -> bool:
    """An image or a caption, and not a hidden file (.DS_Store, ._a.png from macOS)."""
    return not path.name.startswith(".") and path.suffix.lower() in (*IMAGE_SUFFIXES, CAPTION_SUFFIX)


def training_files(folder_or_files: TrainingFiles) -> list[Path]:
    """A folder's images and .txt captions (its other files and subfolders left out), or the files given, each
    checked; ValueError naming the problem, before anything is sent."""
    if isinstance(folder_or_files, (str, Path)) and Path(folder_or_files).is_dir():
        folder = Path(folder_or_files)
        paths = sorted(path for path in folder.iterdir() if path.is_file() and is_training_file(path))
        where = f"the folder {folder}"
    elif isinstance(folder_or_files, (str, Path)):
        raise ValueError(f"{folder_or_files}: no such folder; give a folder of images (and .txt captions).")
    else:
        paths = [Path(path) for path in folder_or_files]
        where = "the files given"
        for path in paths:
            if not path.is_file():
                raise ValueError(f"{path}: no such file.")
            if not is_training_file(path):
                raise ValueError(f"{path}: neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a caption (.txt).")
    names = [path.name for path in paths]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise ValueError(f"two files named {duplicate!r}: the ZIP holds names alone; rename one.")
    if not any(path.suffix.lower() in IMAGE_SUFFIXES for path in paths):
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {where}.")
    return paths


def training_zip(folder_or_files: TrainingFiles) -> bytes:
    """The ZIP, in memory, of the training files (by name alone: no folders in it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in training_files(folder_or_files):
            archive.writestr(path.name, path.read_bytes())
    return buffer.getvalue()


def finetune_body(folder_or_files: TrainingFiles, finetune_comment: str, **settings) -> dict:
    """The JSON of POST /v1/finetune: file_data (base64 of the ZIP) and the settings given (None: the server's
    default)."""
    file_data = base64.b64encode(training_zip(folder_or_files)).decode()
    given = {name: value for name, value in settings.items() if value is not None}
    return {"file_data": file_data, "finetune_comment": finetune_comment, **given}


def finetuned_body(body: dict, finetune_id: str, strength: float | None) -> dict:
    """POST /v1/{model}-finetuned's JSON: the model's usual body plus the finetune (strength None: its best)."""
    extra = {} if strength is None else {"finetune_strength": strength}
    return {**body, "finetune_id": finetune_id, **extra}


def parse_finetune(text: str) -> tuple[str, float | None]:
    """'ID:1.5' -> ('ID', 1.5); 'ID' -> ('ID', None): the finetune's measured default strength."""
    finetune_id, colon, strength = text.rpartition(":")
    if not colon:
        finetune_id, strength = text, ""
    if not finetune_id:
        raise ValueError(f"finetune {text!r} has no id; write ID or ID:STRENGTH, e.g. ID:1.2")
    if not strength:
        return finetune_id, None
    try:
        return finetune_id, float(strength)
    except ValueError:
        raise ValueError(
            f"finetune {text!r}: the strength after ':' must be a number, e.g. {finetune_id}:1.2"
        ) from None


def finetune_update(result: dict) -> JobUpdate:
    """A get_result answer of a finetune as a progress update: step/total are percent of its training."""
    fraction = 1.0 if result["status"] == READY else result.get("progress") or 0.0
    stage = (result.get("details") or {}).get("stage") or TRAINING
    return JobUpdate(result["id"], status=result["status"], stage=stage, step=round(fraction * PERCENT), total=PERCENT)


def failed_finetune(result: dict) -> dict:
    """A get_result answer that did not end Ready, in the shape JobFailed reads (the error is in its details)."""
    return {**result, "error": (result.get("details") or {}).get("error")}
