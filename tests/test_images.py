"""Image files: bit depths, alpha, errors, limits, output paths and modes."""

import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image, ImageCms, ImageOps

from brushwork import images
from brushwork.errors import BrushworkError
from brushwork.pixels import quantize


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


# --- Orientation, colour profiles, output formats (issue 12) ------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow_does(tmp_path, orientation):
    arr = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    picture = Image.fromarray(arr)
    exif = picture.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    picture.save(path, exif=exif, quality=100, subsampling=0)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored))
    loaded = images.load(path)
    assert loaded.shape == expected.shape
    assert np.array_equal(loaded, expected)
    if orientation in (5, 6, 7, 8):
        assert loaded.shape[:2] == (10, 6)  # stored landscape, seen portrait


def test_orientation_also_turns_16_bit_png(tmp_path):
    arr = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 1000
    assert np.array_equal(images.orient(arr, 6), np.rot90(arr, -1))
    assert images.orient(arr, 6).dtype == np.uint16


def _wide_gamut_profile() -> bytes:
    """A minimal ICC v2 display profile: Adobe RGB (1998) primaries (D50), gamma 2.2."""

    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))

    gamma = b"curv\0\0\0\0" + struct.pack(">IH2x", 1, round(2.2 * 256))
    name = b"wide gamut test"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(name) + 1) + name + b"\0" + bytes(8 + 67)
    tags = [
        (b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.6097, 0.3111, 0.0195)), (b"gXYZ", xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", gamma), (b"gTRC", gamma), (b"bTRC", gamma),
        (b"cprt", b"text\0\0\0\0none\0"),
    ]  # fmt: skip
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = struct.pack(">I4sI4s4s4s12s4s", size, b"", 0x02100000, b"mntr", b"RGB ", b"XYZ ",
                         bytes(12), b"acsp")  # fmt: skip
    header += bytes(24) + struct.pack(">3i", 63190, 65536, 54061)  # D50 illuminant
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def test_an_embedded_profile_is_converted_to_srgb(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    wide = _wide_gamut_profile()
    Image.fromarray(arr).save(tmp_path / "wide.png", icc_profile=wide)
    Image.fromarray(arr).save(tmp_path / "wide.tif", icc_profile=wide)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    source = ImageCms.ImageCmsProfile(io.BytesIO(wide))
    expected = np.asarray(ImageCms.profileToProfile(Image.fromarray(arr), source, srgb))
    assert np.abs(expected.astype(int) - arr).max() > 10  # a real change of colours
    for name in ("wide.png", "wide.tif"):  # pypng's pixels and Pillow's
        assert np.array_equal(images.load(tmp_path / name), expected), name
    Image.fromarray(arr).save(tmp_path / "srgb.png", icc_profile=srgb.tobytes())
    assert np.array_equal(images.load(tmp_path / "srgb.png"), arr)  # already sRGB: untouched


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.tif", "out.webp"])
def test_outputs_embed_srgb(tmp_path, name):
    images.save(tmp_path / name, np.full((4, 4, 3), 0.5, np.float32))
    with Image.open(tmp_path / name) as saved:
        assert saved.info["icc_profile"] == images.srgb_profile()


def test_jpeg_defaults_to_quality_95_without_chroma_subsampling(tmp_path):
    from PIL import JpegImagePlugin

    image = np.random.default_rng(3).random((32, 32, 3), dtype=np.float32)
    images.save(tmp_path / "default.jpg", image)
    images.save(tmp_path / "q60.jpg", image, jpeg_quality=60)
    Image.fromarray(quantize(image, "u8")).save(tmp_path / "ref.jpg", quality=95)
    with Image.open(tmp_path / "default.jpg") as a, Image.open(tmp_path / "ref.jpg") as ref:
        assert a.quantization == ref.quantization
        assert JpegImagePlugin.get_sampling(a) == 0  # 4:4:4
    assert (tmp_path / "q60.jpg").stat().st_size < (tmp_path / "default.jpg").stat().st_size


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_tiff_keeps_16_bits(tmp_path, channels):
    arr = np.random.default_rng(4).integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    images.save(tmp_path / "out.tif", images.to_float(arr), bit_depth=16)
    back = images.load(tmp_path / "out.tif")
    assert back.dtype == np.uint16 and np.array_equal(back, arr)


def test_16_bit_grey_png_with_significant_bits_stays_16_bit(tmp_path):
    grey = np.array([[0, 4095], [2048, 1]], np.uint16)  # 12 significant bits
    with open(tmp_path / "g.png", "wb") as f:
        png.Writer(2, 2, greyscale=True, bitdepth=16).write(f, grey << 4)
    data = (tmp_path / "g.png").read_bytes()  # add sBIT = 12 after IHDR: asDirect rescales
    chunks = list(png.Reader(bytes=data).chunks())
    chunks.insert(1, (b"sBIT", bytes([12])))
    with open(tmp_path / "g.png", "wb") as f:
        png.write_chunks(f, chunks)
    back = images.load(tmp_path / "g.png")
    assert back.dtype == np.uint16 and back.shape == (2, 2, 1)
    assert back[0, 1, 0] == 65535 and back[0, 0, 0] == 0


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims width x height and holds one byte of pixel data: what a header says
    is all a loader may trust before deciding to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
    )


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 20000, 20000)
    with pytest.raises(BrushworkError) as e:
        images.load(bomb)
    assert str(e.value) == (
        f"{bomb}: 20000x20000 = 400.0 Mpx is over the limit of 134.2 Mpx for an image file "
        "(set BRUSHWORK_MAX_IMAGE_PIXELS to raise it, if you trust this file)"
    )
    # Every format, and the limit is the user's to set: a real 300x200 JPEG under a 0.05 Mpx one.
    Image.new("RGB", (300, 200)).save(tmp_path / "a.jpg")
    monkeypatch.setenv("BRUSHWORK_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(
        BrushworkError, match=r"a\.jpg: 300x200 = 0\.060 Mpx is over the limit of 0\.050 Mpx"
    ):
        images.load(tmp_path / "a.jpg")
    monkeypatch.setenv("BRUSHWORK_MAX_IMAGE_PIXELS", "60000")
    assert images.load(tmp_path / "a.jpg").shape == (200, 300, 3)
    monkeypatch.setenv("BRUSHWORK_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(BrushworkError, match="BRUSHWORK_MAX_IMAGE_PIXELS='lots'"):
        images.load(tmp_path / "a.jpg")


def _large_files(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    """The same 600x400 picture as files of each kind images.load decodes its own way, with
    the upright pixels each should give and their bit depth."""
    yy, xx = np.mgrid[0:400, 0:600]
    rgb = np.stack([xx * 255 // 600, yy * 255 // 400, (xx + yy) * 255 // 1000], -1)
    rgb = rgb.astype(np.uint8)
    Image.fromarray(rgb).save(folder / "8.png")
    palette = Image.fromarray(rgb).quantize(64)
    palette.save(folder / "palette.png")
    Image.fromarray(rgb).save(folder / "a.jpg", quality=98)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the upright image is 400 wide
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(folder / "turned.jpg", exif=exif)
    rgb16 = rgb.astype(np.uint16) * 257
    with open(folder / "16.png", "wb") as f:
        png.Writer(600, 400, bitdepth=16, greyscale=False).write(f, rgb16.reshape(400, -1))
    images.save(folder / "16.tif", rgb16 / 65535, bit_depth=16)
    Image.fromarray(rgb).save(folder / "a.webp", lossless=True)
    return {
        "8.png": (rgb, 8), "palette.png": (np.asarray(palette.convert("RGB")), 8),
        "a.jpg": (rgb, 8), "turned.jpg": (rgb, 8),
        "16.png": (rgb16, 16), "16.tif": (rgb16, 16), "a.webp": (rgb, 8),
    }  # fmt: skip


def test_a_large_file_is_decoded_at_the_size_the_job_needs(tmp_path, monkeypatch):
    """Files over REDUCE_ABOVE_PIXELS (here 1,000 px) come back at exactly the size `fit`
    asks for when it is at most a sixth of each side, in their bit depth, and close to the
    whole image resized; smaller asks, and smaller files, come back whole."""
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1000)
    for name, (expected, bits) in _large_files(tmp_path).items():
        fitted = images.load(tmp_path / name, fit=lambda h, w: (h // 10, w // 10))
        assert fitted.shape == (40, 60, 3), name
        assert fitted.dtype == (np.uint16 if bits == 16 else np.uint8), name
        whole = Image.fromarray(expected.astype(np.float32).mean(axis=2)).resize((60, 40))
        grey = images.to_float(fitted).mean(axis=2) * (65535 if bits == 16 else 255)
        assert np.abs(grey - np.asarray(whole)).mean() < 3 * (257 if bits == 16 else 1), name
        assert images.load(tmp_path / name, fit=lambda h, w: (h // 2, w // 2)).shape[0] == 400
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1 << 24)
    assert images.load(tmp_path / "8.png", fit=lambda h, w: (40, 60)).shape == (400, 600, 3)


def test_a_large_file_needed_whole_is_refused_when_memory_is_short(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (600, 400)).save(path)
    monkeypatch.setattr(images, "REDUCE_ABOVE_PIXELS", 1000)
    monkeypatch.setattr(images, "_available_memory", lambda: 10_000_000)  # 10 MB
    with pytest.raises(BrushworkError) as e:
        images.load(path)  # 600 x 400 x 3 samples x 8 B = 5.8 MB: over half of 10 MB
    assert str(e.value) == (
        f"{path}: decoding 600x400 px whole would take about 6 MB, more than half of the 10 MB"
        " available now: ask for a smaller size (--size), convert it to JPEG or 8-bit PNG"
        " (decoded reduced), or set BRUSHWORK_MAX_IMAGE_PIXELS=240000 to decode it anyway"
    )
    assert images.load(path, fit=lambda h, w: (40, 60)).shape == (40, 60, 3)  # reduced: fits
    monkeypatch.setenv("BRUSHWORK_MAX_IMAGE_PIXELS", "240000")
    assert images.load(path).shape == (400, 600, 3)


def test_output_paths_are_checked_before_any_work(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("")
    (tmp_path / "dir.png").mkdir()
    cases = [
        (a_file / "x.png", f"{a_file} is a file, not a folder"),
        (a_file / "deeper" / "x.png", f"{a_file} is a file, not a folder"),
        (tmp_path / "missing" / "x.png", f"folder {tmp_path / 'missing'} does not exist"),
        (tmp_path / "dir.png", "is a folder; give a file name"),
        (Path("/proc/x.png"), "cannot write in /proc ("),  # unwritable even for root
    ]
    for path, message in cases:
        with pytest.raises(BrushworkError) as e:
            images.check_output_path(path)
        assert message in str(e.value) and str(e.value).startswith(str(path))
    images.check_output_path(tmp_path / "fine.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "notes.txt"]  # no probe left


@pytest.mark.parametrize("given", ["../evil", "png/../../x", "", ".", "p ng", "exe"])
def test_a_format_that_is_not_an_image_format_is_refused(given):
    with pytest.raises(BrushworkError) as e:
        images.output_suffix(given)
    assert str(e.value) == f"--format {given!r}: not an image format (use png, jpg, tif, webp...)"


def test_output_suffix_takes_a_name_with_or_without_dot():
    assert images.output_suffix("PNG") == images.output_suffix(".png") == ".png"


def test_outputs_follow_the_umask_and_keep_a_replaced_files_mode(tmp_path):
    image = np.zeros((2, 2, 3), np.float32)
    old = os.umask(0o022)
    try:
        images.save(tmp_path / "a.png", image)
        os.umask(0o007)
        images.save(tmp_path / "b.jpg", image)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.jpg").stat().st_mode) == 0o660
    os.chmod(tmp_path / "a.png", 0o640)  # the user made it private: a rerun keeps it so
    images.save(tmp_path / "a.png", image)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o640
