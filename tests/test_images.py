"""Image files: bit depths, alpha, errors."""

import numpy as np
import png
import pytest
from PIL import Image

from brushwork import images
from brushwork.errors import BrushworkError


def test_8_bit_rgba_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    images.save(tmp_path / "a.png", arr.astype(np.float32) / 255)
    back = images.load(tmp_path / "a.png")
    assert back.dtype == np.uint8 and np.array_equal(back, arr)


def test_16_bit_png_keeps_all_bits(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    png.from_array(arr.reshape(4, 18), "RGB;16").save(str(tmp_path / "in.png"))
    back = images.load(tmp_path / "in.png")
    assert back.dtype == np.uint16 and np.array_equal(back, arr)
    images.save(tmp_path / "out.png", images.to_float(back), bit_depth=16)
    assert np.array_equal(images.load(tmp_path / "out.png"), arr)


def test_float_tiff_reads_as_float(tmp_path):
    arr = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    back = images.load(tmp_path / "f.tif")
    assert back.dtype == np.float32 and np.allclose(back[..., 0], arr)


def test_palette_image_becomes_rgb(tmp_path):
    Image.new("P", (3, 2), 1).save(tmp_path / "p.gif")
    assert images.load(tmp_path / "p.gif").shape == (2, 3, 3)


def test_split_alpha_of_grey_alpha():
    rgb, alpha = images.split_alpha(images.to_float(np.full((2, 2, 2), 255, np.uint8)))
    assert rgb.shape == (2, 2, 3) and alpha.shape == (2, 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not an image", "not a readable image"),
     (b"\x89PNG\r\n\x1a\n truncated", "not a readable image")],
)  # fmt: skip
def test_unreadable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BrushworkError, match=message) as e:
        images.load(path)
    assert "\n" not in str(e.value)


def test_save_refuses_unknown_format_and_missing_folder(tmp_path):
    img = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(BrushworkError, match="unknown image format"):
        images.save(tmp_path / "a.xyz", img)
    with pytest.raises(BrushworkError, match="does not exist"):
        images.save(tmp_path / "nope" / "a.png", img)


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        images.to_float(np.full((2, 2, 3), np.nan, np.float32))
