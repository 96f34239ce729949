"""RawImage (wire pixels) <-> numpy arrays, for the daemon and the CLI's remote path."""

from __future__ import annotations

import numpy as np

from brushwork.protocol import RawImage

# Wire dtypes are little-endian whatever the machine.
NUMPY_DTYPES = {"u8": np.dtype("<u1"), "u16": np.dtype("<u2"), "f32": np.dtype("<f4")}
_NAMES = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16", np.dtype(np.float32): "f32"}
_FULL_SCALE = {"u8": 255.0, "u16": 65535.0}


def to_array(image: RawImage) -> np.ndarray:
    """(H, W, C) read-only view of the image's bytes: no copy."""
    flat = np.frombuffer(image.data, dtype=NUMPY_DTYPES[image.dtype])
    return flat.reshape(image.height, image.width, image.channels)


def from_array(array: np.ndarray) -> RawImage:
    """An (H, W) or (H, W, C) uint8, uint16 or float32 array as a RawImage (copied if needed)."""
    name = _NAMES.get(array.dtype.newbyteorder("="))
    if name is None:
        raise ValueError(f"unsupported pixel type {array.dtype}; use uint8, uint16 or float32")
    if array.ndim == 2:
        array = array[..., None]
    data = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[name])
    return RawImage(array.shape[1], array.shape[0], array.shape[2], name, data.data.cast("B"))


def quantize(image: np.ndarray, dtype: str) -> np.ndarray:
    """Float in [0, 1] (clipped) as `dtype` ("u8", "u16": rounded; "f32": as is)."""
    clipped = np.clip(image, 0.0, 1.0)
    if dtype == "f32":
        return clipped.astype(np.float32, copy=False)
    return np.round(clipped * _FULL_SCALE[dtype]).astype(NUMPY_DTYPES[dtype])


def from_float(image: np.ndarray, dtype: str) -> RawImage:
    """Float (H, W, C) in [0, 1] quantized (rounded) to `dtype`."""
    return from_array(quantize(image, dtype))
