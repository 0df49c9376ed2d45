"""Send PNG images to the ``segment`` queue and save the PNG masks that come back.

    python examples/segmentation/client.py --broker http://127.0.0.1:8000 [--out masks/]

With no image files given it draws a few test images (bright discs on a noisy background),
and then checks each mask against the disc it drew (intersection over union).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from client_sdk import Client


def disc_image(seed: int, size: int = 96) -> tuple[Image.Image, np.ndarray]:
    """A noisy RGB image with one bright disc, and the disc's true mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(30, size - 30, 2).tolist() + [int(rng.integers(12, 24))]
    truth = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    pixels = rng.normal(60, 20, (size, size, 3)) + truth[:, :, None] * 120
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), truth


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    predicted = mask > 127
    return float((predicted & truth).sum() / max(1, (predicted | truth).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path, help="PNG/JPEG files (default: drawn)")
    parser.add_argument("--broker", default="http://127.0.0.1:8000")
    parser.add_argument("--token")
    parser.add_argument("--out", type=Path, default=Path("masks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with Client(args.broker, token=args.token) as client:
        if args.images:
            for path in args.images:
                mask = client.predict(path, queue="segment", timeout=60, image="pil")
                mask.save(args.out / f"{path.stem}.png")
                print(f"{path} -> {args.out / (path.stem + '.png')}")
            return
        drawn = [disc_image(seed) for seed in range(4)]
        masks = client.map([picture for picture, _ in drawn], queue="segment", timeout=60,
                           image="array")  # fmt: skip
        for seed, ((_, truth), mask) in enumerate(zip(drawn, masks, strict=True)):
            Image.fromarray(mask).save(args.out / f"disc-{seed}.png")
            print(f"disc-{seed}: mask {mask.shape}, IoU with the drawn disc {iou(mask, truth):.3f}")


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
