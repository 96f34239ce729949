"""Image files <-> numpy arrays (H, W, C), keeping bit depth and alpha.

Pillow reads almost everything but truncates 16-bit RGB(A) PNG to 8 bits, so PNG files go
through pypng, which keeps all 16 bits.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import png
from PIL import Image, UnidentifiedImageError

from brushwork.errors import BrushworkError
from brushwork.pixels import quantize

Image.MAX_IMAGE_PIXELS = None  # our own pixel limits apply (daemon); Pillow's would refuse 8k x 8k


def load(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, C) uint8, uint16 or float32 (C = 1..4)."""
    path = Path(path)
    if not path.is_file():
        raise BrushworkError(f"{path}: no such file")
    try:
        if _is_png(path):
            return _load_png(path)
        with Image.open(path) as img:
            img.load()
            return _from_pil(img)
    except (UnidentifiedImageError, png.Error, OSError, SyntaxError, ValueError) as e:
        raise BrushworkError(f"{path}: not a readable image ({_one_line(e)})") from None


def _is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _load_png(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    planes = info["planes"]
    arr = np.vstack([np.asarray(row, dtype=dtype) for row in rows])
    arr = arr.reshape(height, width, planes)
    if info["bitdepth"] not in (8, 16):  # 1, 2, 4-bit greyscale: stretch to 8 bits
        arr = (arr.astype(np.uint16) * 255 // (2 ** info["bitdepth"] - 1)).astype(np.uint8)
    return arr


def _from_pil(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img).astype(np.uint16)
    elif img.mode == "I":
        arr = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    elif img.mode in ("RGB", "RGBA", "L", "LA"):
        arr = np.asarray(img)
    else:  # palette, CMYK, YCbCr, 1-bit...: Pillow's conversion is exact enough at 8 bits
        target = "RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"
        arr = np.asarray(img.convert(target))
    return arr[..., None] if arr.ndim == 2 else arr


def to_float(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] from uint8, uint16 or float input; (H, W) gets C = 1."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or not 1 <= image.shape[2] <= 4:
        raise ValueError(f"image must be HxW or HxWxC with C in 1..4, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: {image.shape[1]}x{image.shape[0]}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype in (np.float16, np.float32, np.float64):
        out = image.astype(np.float32)
        if not np.isfinite(out).all():
            raise ValueError("image has NaN or infinite values")
        return np.clip(out, 0.0, 1.0)
    raise ValueError(f"unsupported pixel type {image.dtype}; use uint8, uint16 or float32")


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Float RGB (H, W, 3) and alpha (H, W) or None; grey becomes RGB."""
    colour_channels = 1 if image.shape[2] in (1, 2) else 3
    colour = image[..., :colour_channels]
    alpha = image[..., colour_channels] if image.shape[2] in (2, 4) else None
    if colour_channels == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour), alpha


def save(path: str | os.PathLike, image: np.ndarray, bit_depth: int = 8) -> None:
    """Write float (H, W, 3|4) in [0, 1] atomically; 16-bit only for PNG."""
    path = Path(path)
    ext = path.suffix.lower()
    if bit_depth == 16 and ext != ".png":
        bit_depth = 8  # Pillow cannot write 16-bit colour in other formats; say so in --help
    check_output_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=ext)
    try:
        with os.fdopen(fd, "wb") as f:
            if bit_depth == 16:
                arr = quantize(image, "u16")
                h, w, c = arr.shape
                writer = png.Writer(w, h, greyscale=False, alpha=c == 4, bitdepth=16)
                writer.write(f, arr.reshape(h, w * c))
            else:
                arr = quantize(image, "u8")
                if arr.shape[2] == 4 and ext in (".jpg", ".jpeg"):
                    arr = arr[..., :3]  # JPEG has no alpha
                Image.fromarray(arr).save(f, format=Image.registered_extensions()[ext])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_path(path: Path) -> None:
    """A known image format in an existing folder, or a one-line BrushworkError."""
    if path.suffix.lower() not in Image.registered_extensions():
        raise BrushworkError(
            f"{path}: unknown image format {path.suffix!r} (use .png, .jpg, .tif...)"
        )
    if not path.parent.is_dir():
        raise BrushworkError(f"{path}: folder {path.parent} does not exist")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
