"""What a manifest costs: encoding an image with it against without it, and hashing weights at a replica's start.

    python -m bench.manifest_bench [--side 1024] [--repeats 15]

Encoding alternates the two (with, without) so a busy machine slows both alike and reports the median of the paired
ratios, per format, for a real picture (docs/studio.png) at `side` x `side`. Hashing reports file_sha256's speed on
a 256 MB file of random bytes (read from the page cache: the load has just read the weights), so the start cost of a
real checkpoint is its size over that speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from deployments.contracts import OUTPUT_FORMATS
from deployments.digests import file_sha256
from deployments.images import encode_image

PICTURE = Path(__file__).parent.parent / "docs" / "studio.png"
MANIFEST_BYTES = 1200  # a typical manifest: a sentence of prompt, two references, one LoRA
HASHED_BYTES = 256 * 1024 * 1024


def encode_ratios(side: int, repeats: int) -> None:
    image = Image.open(PICTURE).convert("RGB").resize((side, side))
    manifest = '{"prompt":"' + "x" * MANIFEST_BYTES + '"}'
    print(f"encode {side}x{side}, median of {repeats} paired runs (with / without the manifest)")
    for output_format in OUTPUT_FORMATS:
        ratios, plain_s = [], []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            encode_image(image, output_format)
            without = time.perf_counter() - started
            started = time.perf_counter()
            encode_image(image, output_format, manifest=manifest)
            ratios.append((time.perf_counter() - started) / without)
            plain_s.append(without)
        ratios, plain_s = ratios[1:], plain_s[1:]  # the first pair warms up
        print(
            f"  {output_format:5} without {statistics.median(plain_s) * 1000:7.1f} ms   ratio {statistics.median(ratios):.3f}"
        )


def hash_speed() -> None:
    with tempfile.NamedTemporaryFile(delete=False) as file:
        file.write(os.urandom(HASHED_BYTES))
    try:
        Path(file.name).read_bytes()  # into the page cache, as a just-loaded checkpoint is
        started = time.perf_counter()
        file_sha256(file.name)
        seconds = time.perf_counter() - started
    finally:
        os.unlink(file.name)
    speed = HASHED_BYTES / seconds / 2**30
    print(f"sha256 of weights: {speed:.2f} GiB/s, so a 16 GiB checkpoint takes about {16 / speed:.0f} s (in a thread)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    options = parser.parse_args(argv)
    encode_ratios(options.side, options.repeats)
    hash_speed()


if __name__ == "__main__":
    main()
