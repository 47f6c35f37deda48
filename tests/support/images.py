"""Small JPEG and PNG frames made with Pillow, for the page and MJPEG tests (not a test
module)."""

from __future__ import annotations

import io

from PIL import Image


def frame(width: int = 320, height: int = 180, shade: int = 0, fmt: str = "JPEG") -> bytes:
    """An image of `width` x `height`: a colour from `shade` with a bar across it."""
    colour = ((shade * 53) % 256, (shade * 97) % 256, (shade * 151) % 256)
    img = Image.new("RGB", (width, height), colour)
    img.paste((255, 255, 255), (0, height // 3, width * ((shade % 10) + 1) // 10, height // 2))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image."""
    with Image.open(io.BytesIO(data)) as img:
        return img.size
