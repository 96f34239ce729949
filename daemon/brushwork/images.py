"""Image files <-> numpy arrays (H, W, C), keeping bit depth and alpha.

Pillow reads almost everything but truncates 16-bit RGB(A) PNG and TIFF to 8 bits, so PNG
pixels go through pypng and 16-bit TIFF through tifffile, which keep all 16 bits. Every file
comes out upright (its EXIF orientation applied) and in sRGB (an embedded colour profile
converted with Pillow's ImageCms, for 8-bit images); outputs are sRGB and say so (an embedded
sRGB profile).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
import zlib
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms, UnidentifiedImageError

from brushwork.errors import BadInput
from brushwork.pixels import quantize

Image.MAX_IMAGE_PIXELS = None  # max_image_pixels() applies instead: Pillow's only warns below 2x
# Image files larger than this are refused before they are decoded: a 388 KB PNG can claim
# 20000x20000 px and take 7 GB to decode. 2**27 (134 Mpx) admits a 100 MP camera's photo.
MAX_IMAGE_PIXELS = 1 << 27
ENV_MAX_IMAGE_PIXELS = "BRUSHWORK_MAX_IMAGE_PIXELS"
# Files of more pixels than this are decoded at the size the job needs when that is at most
# 1 / (2 REDUCE_GAP) of each side: JPEG at a reduced DCT scale, 16-bit PNG row by row, anything
# else reduced by whole blocks as soon as it is decoded; then resized to that size. A PNG of
# 11580x11580 px for a 64 px job peaked at 4.47 GB RSS decoded whole (pypng's rows, their copy,
# two float copies); reduced, at 1.06 GB.
REDUCE_ABOVE_PIXELS = 1 << 24
# A file that must be decoded whole (it is needed whole, or cannot be decoded reduced) is
# refused when its pixels and a float copy would take more than this share of the memory
# available now (unless BRUSHWORK_MAX_IMAGE_PIXELS is set: the user trusts the file).
DECODE_MEMORY_SHARE = 0.5
DECODE_BYTES_PER_SAMPLE = 8  # the decoded sample (<= 4 B) and its float32 copy
# A reduced decode keeps at least this many times the size the job needs, then resizes with
# antialiasing (Pillow's reducing_gap): for a 300 px job from a 17.6 Mpx photograph, 0.9/255
# from resizing the whole decoded image at the 99th percentile (2.4 at most); blocks keeping
# 1x aliased, 41/255.
REDUCE_GAP = 3

Fit = Callable[[int, int], tuple[int, int]]  # an image's (H, W) -> the (H, W) a job needs
DEFAULT_JPEG_QUALITY = 95  # Pillow's 75 shows blocks in the fine texture a style paints
_ORIENTATION = 0x0112  # the EXIF tag
_TIFF = (".tif", ".tiff")


def max_image_pixels() -> int:
    """The pixel limit for image files: $BRUSHWORK_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS."""
    text = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"{ENV_MAX_IMAGE_PIXELS}={text!r}: expected a number of pixels")
    return int(text)


def load(path: str | os.PathLike, fit: Fit | None = None) -> np.ndarray:
    """Read an image as (H, W, C) uint8, uint16 or float32 (C = 1..4), upright and in sRGB.
    Files over max_image_pixels() are refused from their header, before any pixel is decoded.

    `fit` gives, for the upright image's (H, W), the size the caller will resize it to: a
    file over REDUCE_ABOVE_PIXELS that is at least 2 x REDUCE_GAP times that on each side is
    decoded reduced and comes back at exactly that size; one that must be decoded whole is
    refused when that would not fit in memory (see DECODE_MEMORY_SHARE), with a line that says
    how to go on."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    limit = max_image_pixels()
    try:
        with Image.open(path) as img:  # lazy: the header and metadata only
            width, height = img.size
            if width * height > limit:
                raise BadInput(
                    f"{path}: {width}x{height} = {_mpx(width * height)} is over the limit of"
                    f" {_mpx(limit)} for an image file (set {ENV_MAX_IMAGE_PIXELS} to raise it,"
                    " if you trust this file)"
                )
            orientation = img.getexif().get(_ORIENTATION, 1)
            profile = img.info.get("icc_profile")
            turned = orientation in (5, 6, 7, 8)  # stored sideways
            upright = (width, height) if turned else (height, width)
            target = fit(*upright) if fit else upright
            if width * height > REDUCE_ABOVE_PIXELS:
                if all(REDUCE_GAP * 2 * t <= u for t, u in zip(target, upright, strict=True)):
                    stored = target[::-1] if turned else target
                    arr = orient(_load_reduced(path, img, stored, profile), orientation)
                    return _resized(arr, target)
                _check_memory(path, img)
            if _is_png(path):
                arr = _load_png(path)
            elif img.format == "TIFF" and max(_tiff_bits(img)) > 8 and img.mode != "F":
                arr = _load_tiff(path)
            else:
                img.load()
                arr = _from_pil(to_srgb(img, profile))
                profile = None  # converted
    except (UnidentifiedImageError, png.Error, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{path}: not a readable image ({_one_line(e)})") from None
    if profile and arr.dtype == np.uint8 and arr.shape[2] in (3, 4):  # PNG pixels from pypng
        mode = "RGBA" if arr.shape[2] == 4 else "RGB"
        arr = np.asarray(to_srgb(Image.fromarray(arr, mode), profile))
    return orient(arr, orientation)


def _load_reduced(
    path: Path, img: Image.Image, target: tuple[int, int], profile: bytes | None
) -> np.ndarray:
    """The file's pixels (as stored, in sRGB) reduced by whole blocks to at least REDUCE_GAP
    times `target` (H, W), holding at most one decoded copy of them (none for JPEG, 16-bit
    PNG)."""
    height, width = REDUCE_GAP * target[0], REDUCE_GAP * target[1]
    if img.format == "PNG" and _png_bits(path) > 8:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        bits = info["bitdepth"]  # not only 16: an sBIT chunk can make it e.g. 12
        if not info.get("interlace"):  # rows stream: never all of them at once
            dtype = np.uint16 if bits > 8 else np.uint8
            stretch = np.iinfo(dtype).max / (2**bits - 1)  # as _load_png
            return _box_reduce(rows, (h, w, info["planes"]), (height, width), dtype, stretch)
        _check_memory(path, img, 4)  # pypng deinterlaces the raw rows into a copy
        arr = _load_png(path)
    elif img.format == "TIFF" and max(_tiff_bits(img)) > 8 and img.mode != "F":
        _check_memory(path, img, max(_tiff_bits(img)) // 8)
        arr = _load_tiff(path)
    else:
        if img.format == "JPEG":
            img.draft(img.mode, (width, height))  # the decoder's own 1/2 .. 1/8 scales
        else:
            _check_memory(path, img, 4 if img.mode in ("I", "F") else 1)
        img.load()
        if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):  # palette, CMYK...
            has_alpha = "A" in img.getbands() or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
        factor = _factor((img.height, img.width), (height, width))
        return _from_pil(to_srgb(img.reduce(factor) if factor > 1 else img, profile))
    return _box_reduce(arr.reshape(arr.shape[0], -1), arr.shape, (height, width), arr.dtype)


def _factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The block side that keeps `size` at least `target` on each side."""
    return max(1, min(size[0] // target[0], size[1] // target[1]))


def _box_reduce(
    rows: Iterable,
    shape: tuple[int, int, int],
    target: tuple[int, int],
    dtype: np.dtype,
    stretch: float = 1.0,
) -> np.ndarray:
    """The mean of each block of an image given row by row (W * C samples each; `stretch`
    scales them, e.g. 12-bit samples to 16), blocks as large as keep it at least `target`,
    the last ones partial; in `dtype`. Only one row of blocks is held at a time."""
    h, w, c = shape
    factor = _factor((h, w), target)
    starts = np.arange(0, w, factor)
    widths = np.diff(np.append(starts, w))[:, None]
    out, block = [], []
    for row in rows:
        block.append(np.asarray(row).reshape(w, c))
        if len(block) == factor or len(out) * factor + len(block) == h:
            sums = np.add.reduceat(np.sum(block, axis=0, dtype=np.float64), starts, axis=0)
            out.append(sums * (stretch / (widths * len(block))))
            block = []
    arr = np.stack(out)
    if np.issubdtype(dtype, np.floating):
        return arr.astype(np.float32)
    return np.clip(np.rint(arr), 0, np.iinfo(dtype).max).astype(dtype)


def _resized(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`arr` at exactly `size` (H, W): bicubic with antialiasing, each channel in float."""
    if arr.shape[:2] == size:
        return arr
    channels = [
        Image.fromarray(arr[..., i].astype(np.float32), "F").resize(
            size[::-1], Image.Resampling.BICUBIC
        )
        for i in range(arr.shape[2])
    ]
    out = np.stack([np.asarray(c) for c in channels], axis=2)
    if arr.dtype == np.float32:
        return np.clip(out, 0.0, 1.0)
    return np.clip(np.rint(out), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)


def _check_memory(path: Path, img: Image.Image, per_sample: int = DECODE_BYTES_PER_SAMPLE) -> None:
    """Refuse to decode a large file whole (`per_sample` bytes a sample) when that would not
    fit in the memory available now, unless the user raised the file limit (trusts it)."""
    if os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip():
        return
    samples = img.width * img.height * max(3, len(img.getbands()))
    need, free = samples * per_sample, _available_memory()
    if need > DECODE_MEMORY_SHARE * free:
        raise BadInput(
            f"{path}: decoding {img.width}x{img.height} px whole would take about"
            f" {need / 1e6:,.0f} MB, more than half of the {free / 1e6:,.0f} MB available now:"
            " ask for a smaller size (--size), convert it to JPEG or 8-bit PNG (decoded"
            f" reduced), or set {ENV_MAX_IMAGE_PIXELS}={img.width * img.height} to decode it"
            " anyway"
        )


def _available_memory() -> int:
    """Bytes the OS can still give this process (Linux's MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line[:13] == "MemAvailable:")
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _png_bits(path: Path) -> int:
    with open(path, "rb") as f:
        return f.read(25)[24]  # IHDR's bit depth


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as they should be seen, for an EXIF orientation (1-8; a phone photo held
    upright is stored sideways with 6). Same result as PIL.ImageOps.exif_transpose."""
    turns = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    turn = turns.get(orientation)
    return arr if turn is None else np.ascontiguousarray(turn(arr))


def to_srgb(img: Image.Image, profile: bytes | None) -> Image.Image:
    """`img` converted from its embedded ICC profile to sRGB (RGB, RGBA and CMYK images).

    Grey, 16-bit and float images keep their numbers: Pillow's colour management works on
    8-bit colour only.
    """
    if not profile or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (OSError, ImageCms.PyCMSError):
        return img  # a broken profile: the pixels are still the best guess
    if "sRGB" in ImageCms.getProfileDescription(source):
        return img
    mode = "RGBA" if img.mode == "RGBA" else "RGB"
    return ImageCms.profileToProfile(img, source, _srgb(), outputMode=mode)


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def srgb_profile() -> bytes:
    """The ICC profile outputs embed."""
    return _srgb().tobytes()


def _is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _load_png(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    bits = info["bitdepth"]  # not only 8 or 16: an sBIT chunk can make it e.g. 12
    dtype = np.uint16 if bits > 8 else np.uint8
    arr = np.vstack([np.asarray(row, dtype=dtype) for row in rows])
    arr = arr.reshape(height, width, info["planes"])
    if bits not in (8, 16):  # stretch to the full range of the dtype
        full = 65535 if bits > 8 else 255
        arr = (arr.astype(np.uint32) * full // (2**bits - 1)).astype(dtype)
    return arr


def _tiff_bits(img: Image.Image) -> tuple[int, ...]:
    bits = img.tag_v2.get(258, (8,))  # BitsPerSample
    return bits if isinstance(bits, tuple) else (bits,)


def _load_tiff(path: Path) -> np.ndarray:
    arr = tifffile.imread(path, key=0)
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"unsupported TIFF sample type {arr.dtype}")
    return arr[..., None] if arr.ndim == 2 else arr


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


def save(
    path: str | os.PathLike,
    image: np.ndarray,
    bit_depth: int = 8,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> None:
    """Write float (H, W, 3|4) in [0, 1] atomically, with an sRGB profile; 16 bits where the
    format has them (PNG, TIFF), else 8."""
    path = Path(path)
    ext = path.suffix.lower()
    check_output_path(path)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, image, ext, bit_depth if ext in (".png", *_TIFF) else 8, jpeg_quality)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(f, image: np.ndarray, ext: str, bit_depth: int, jpeg_quality: int) -> None:
    arr = quantize(image, "u16" if bit_depth == 16 else "u8")
    if ext in _TIFF:
        photometric = "rgb" if arr.shape[2] >= 3 else "minisblack"
        alpha = ["unassalpha"] if arr.shape[2] in (2, 4) else None
        buffer = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare fd
        tifffile.imwrite(
            buffer, arr, photometric=photometric, extrasamples=alpha, compression="zlib",
            iccprofile=srgb_profile(),
        )  # fmt: skip
        f.write(buffer.getvalue())
    elif bit_depth == 16:  # PNG: Pillow has no 16-bit colour mode
        h, w, c = arr.shape
        buffer = io.BytesIO()
        writer = png.Writer(w, h, greyscale=c < 3, alpha=c in (2, 4), bitdepth=16)
        writer.write(buffer, arr.reshape(h, w * c))
        chunks = list(png.Reader(bytes=buffer.getvalue()).chunks())
        chunks.insert(1, (b"iCCP", b"sRGB\0\0" + zlib.compress(srgb_profile())))  # after IHDR
        png.write_chunks(f, chunks)
    else:
        options = {"icc_profile": srgb_profile()}
        if ext in (".jpg", ".jpeg"):
            arr = arr[..., :3]  # JPEG has no alpha
            # 4:4:4: the style's colour detail is what 4:2:0 would smear.
            options.update(quality=jpeg_quality, subsampling=0)
        channels = arr.shape[2]
        picture = Image.fromarray(arr[..., 0] if channels == 1 else arr)
        picture.save(f, format=Image.registered_extensions()[ext], **options)


def _create_beside(path: Path) -> tuple[int, str]:
    """A new temporary file next to `path`, for an atomic replace. Its mode is what a plain
    open() would give (0666 less the umask), or the mode of the file it will replace: not
    mkstemp's 0600, which would make every output private whatever the user's umask."""
    mode = 0o666
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode) & 0o777
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if mode != 0o666:
            os.fchmod(fd, mode)
        return fd, str(tmp)


def check_output_path(path: Path) -> None:
    """A known image format that this user can write there, or a one-line BadInput:
    checked before a job runs, not found out after it."""
    if path.suffix.lower() not in Image.registered_extensions():
        raise BadInput(f"{path}: unknown image format {path.suffix!r} (use .png, .jpg, .tif...)")
    if path.is_dir():
        raise BadInput(f"{path}: is a folder; give a file name (e.g. {path / 'out.png'})")
    folder = path.parent
    if not folder.is_dir():
        above = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
        if above.exists() and not above.is_dir():
            raise BadInput(f"{path}: {above} is a file, not a folder")
        raise BadInput(f"{path}: folder {folder} does not exist")
    try:  # the only sure test of writing there (permissions, read-only mounts, /proc)
        fd, probe = _create_beside(path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInput(f"{path}: cannot write in {folder} ({e.strerror})") from None


def output_suffix(image_format: str) -> str:
    """'.png' for 'png' or '.png'; a one-line BadInput unless it names a known image
    format (not a path: `--format ../x` must not write outside the output folder)."""
    name = image_format.lower().removeprefix(".")
    if not name.isalnum() or f".{name}" not in Image.registered_extensions():
        raise BadInput(
            f"--format {image_format!r}: not an image format (use png, jpg, tif, webp...)"
        )
    return f".{name}"


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.{1 if pixels >= 1e6 else 3}f} Mpx"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
