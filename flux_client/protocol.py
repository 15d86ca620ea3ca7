"""Request bodies and event meanings of the public API, shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from flux_client.progress import JobUpdate
from flux_client.sse import ServerEvent

DEFAULT_MODEL = "flux-2-klein-4b"
MAX_INPUT_IMAGES = 4  # BFL's input_image .. input_image_4
FINAL_EVENTS = ("done", "error")  # their data is the job JSON as GET /v1/jobs/{id} shows it

UPLOAD_ID = re.compile(r"^upload_[0-9a-f]{32}\Z")  # what POST /v1/uploads answers

ImageInput = str | Path | bytes  # a file path, the file's bytes, an http(s) URL or an upload id


def input_image_field(index: int) -> str:
    """BFL's names: input_image, input_image_2, input_image_3, input_image_4."""
    return "input_image" if index == 0 else f"input_image_{index + 1}"


def is_url(image: ImageInput) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def read_image_file(image: str | Path) -> bytes:
    """The bytes of an input image file; FileNotFoundError naming the path when there is no such file."""
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"input image {path} does not exist (or is not a file); check the path.")
    return path.read_bytes()


def encode_image(image: ImageInput) -> str:
    """bytes or a file path -> base64 text; an http(s) URL (the server fetches public URLs) or an upload id
    (from POST /v1/uploads) passes as is."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    if is_url(image) or (isinstance(image, str) and UPLOAD_ID.match(image)):
        return image
    return base64.b64encode(read_image_file(image)).decode()


def upload_file(image: str | Path | bytes) -> dict:
    """The multipart `files` of POST /v1/uploads for a file path or bytes."""
    if isinstance(image, bytes):
        return {"file": ("image", image, "application/octet-stream")}
    if is_url(image):
        raise ValueError(f"upload takes a file path or bytes, not a URL ({image}); pass URLs to submit(images=...).")
    return {"file": (Path(image).name, read_image_file(image), "application/octet-stream")}


def submit_body(
    prompt: str,
    *,
    num_images: int = 1,
    aspect_ratio: str | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    loras: list[tuple[str, float]] | None = None,
    output_format: str | None = None,
    images: list[ImageInput] | None = None,
    deadline_s: float | None = None,
) -> dict:
    """The JSON of POST /v1/{model}; fields left None are left to the server's defaults. deadline_s: refused at
    once (429, saying what would fit) when the server's ETA is longer."""
    if images and len(images) > MAX_INPUT_IMAGES:
        raise ValueError(f"at most {MAX_INPUT_IMAGES} input images per request; got {len(images)}.")
    optional = {
        "aspect_ratio": aspect_ratio,
        "width": width,
        "height": height,
        "steps": steps,
        "seed": seed,
        "output_format": output_format,
        "deadline_s": deadline_s,
    }
    body = {"prompt": prompt, "num_images": num_images, **{k: v for k, v in optional.items() if v is not None}}
    if loras:
        body["loras"] = [{"id": lora_id, "scale": scale} for lora_id, scale in loras]
    for index, image in enumerate(images or []):
        body[input_image_field(index)] = encode_image(image)
    return body


def history_params(limit: int, cursor: str | None) -> dict:
    return {"limit": limit, **({"cursor": cursor} if cursor else {})}


def meaning(job_id: str, event: ServerEvent) -> JobUpdate | dict | None:
    """An events-stream event as a progress update (with its preview, when it brings one), the final job JSON
    (done/error), or None (others)."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.name in FINAL_EVENTS and "status" in data:
        return data
    if event.name == "queued":
        return JobUpdate(job_id, stage="queued", queue_position=data.get("queue_position"))
    if event.name == "progress":
        step, total = data.get("step"), data.get("total")
        return JobUpdate(job_id, stage="denoising", step=step, total=total, preview=data.get("preview"))
    return None


def image_name(url: str) -> str:
    """'…/v1/images/JOB/0.png?exp=…&sig=…' -> '0.png'."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
