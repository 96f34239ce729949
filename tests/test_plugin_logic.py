"""The GIMP plug-in's decisions (plugin/brushwork/brushwork_logic.py), tested outside GIMP."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from brushwork.client import Client, NoDaemon
from brushwork.errors import BrushworkError
from brushwork.settings import CONTENT_POWER, LOW_RATIOS, STYLE_POWER, Settings
from plugin_helpers import plugin_module

REPO = Path(__file__).resolve().parents[1]


logic = plugin_module("brushwork_logic")
DEFAULTS = Settings()


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


# --- Argument mapping -------------------------------------------------------------------------


def test_strength_50_is_the_daemon_default():
    assert DEFAULTS.at_strength(50) == DEFAULTS
    built = logic.build_settings(
        strength=50, size=0, quality="normal", preserve_colors="none", seed=0
    )
    assert (built.content_weight, built.style_weight) == (1.0, DEFAULTS.style_weight)


def test_strength_0_is_content_alone_100_style_alone_and_the_ratio_grows_smoothly():
    assert DEFAULTS.at_strength(0).style_weight == 0
    assert DEFAULTS.at_strength(100).content_weight == 0

    def ratio(strength: float) -> float:
        s = DEFAULTS.at_strength(strength)
        return s.style_weight / s.content_weight / (DEFAULTS.style_weight / DEFAULTS.content_weight)

    ratios = [ratio(s / 4) for s in range(1, 400)]
    assert ratios == sorted(ratios) and len(set(ratios)) == len(ratios)
    # no step where the two halves meet
    assert ratio(50 - 1e-4) == pytest.approx(1, rel=1e-3) == ratio(50 + 1e-4)
    # below 50 the measured points, geometric between them from 10 up, linear below 10
    assert [ratio(s) for s in range(0, 51, 10)] == pytest.approx(LOW_RATIOS)
    assert ratio(25) == pytest.approx((LOW_RATIOS[2] * LOW_RATIOS[3]) ** 0.5)
    assert ratio(5) == pytest.approx(LOW_RATIOS[1] / 2)
    # from 50 up the two powers
    assert ratio(90) == pytest.approx(1.8**STYLE_POWER / 0.2**CONTENT_POWER)


@pytest.mark.parametrize("strength", [-1, 100.5, float("nan")])
def test_strength_out_of_range_is_refused(strength):
    with pytest.raises(ValueError, match="strength"):
        logic.build_settings(
            strength=strength, size=0, quality="normal", preserve_colors="none", seed=0
        )


def test_quality_normal_is_the_default_and_the_others_order_by_work():
    assert DEFAULTS.at_quality("normal") == DEFAULTS
    draft, normal, high = (DEFAULTS.at_quality(q) for q in logic.QUALITIES)
    assert draft.iterations < normal.iterations < high.iterations
    assert draft.scales == 1 <= normal.scales <= high.scales


def test_unknown_quality_is_one_clear_error():
    with pytest.raises(ValueError, match="quality must be one of draft, normal, high"):
        DEFAULTS.at_quality("ultra")


def test_settings_take_the_arguments_and_keep_every_other_default():
    s = logic.build_settings(
        strength=75, size=384, quality="draft", preserve_colors="luminance", seed=7
    )
    draft = DEFAULTS.at_quality("draft")
    expected = DEFAULTS.replace(
        size=384,
        iterations=draft.iterations,
        scales=draft.scales,
        content_weight=DEFAULTS.content_weight * 0.5**CONTENT_POWER,
        style_weight=DEFAULTS.style_weight * 1.5**STYLE_POWER,
        preserve_colors="luminance",
        seed=7,
    )
    assert s == expected


def test_negative_seed_means_random_and_size_0_keeps_the_layer_size():
    s = logic.build_settings(strength=50, size=0, quality="normal", preserve_colors="none", seed=-1)
    assert s.seed is None and s.size == 0


def test_tile_forces_tiling_and_too_small_tiles_are_refused():
    common = dict(strength=50, size=0, quality="normal", preserve_colors="none", seed=0)
    assert logic.build_settings(**common, tile=512).tile == 512
    assert logic.build_settings(**common).tile == 0
    with pytest.raises(ValueError, match="tile must be 0"):
        logic.build_settings(**common, tile=10)


def test_bad_preserve_colors_is_refused_by_settings():
    with pytest.raises(ValueError, match="preserve_colors must be one of"):
        logic.build_settings(strength=50, size=0, quality="high", preserve_colors="x", seed=0)


# --- Geometry and pixel formats ---------------------------------------------------------------


def test_selection_box_comes_from_mask_intersect_in_layer_coordinates():
    box = logic.selection_box((True, 5, 6, 30, 20))
    assert box == logic.Box(5, 6, 30, 20)
    assert box.moved(100, -3) == logic.Box(105, 3, 30, 20)


@pytest.mark.parametrize("intersect", [(False, 0, 0, 0, 0), (True, 3, 3, 0, 10)])
def test_selection_outside_the_layer_is_an_error(intersect):
    with pytest.raises(BrushworkError, match="selection does not touch"):
        logic.selection_box(intersect)


@pytest.mark.parametrize(
    ("high", "alpha", "expected"),
    [
        (False, True, ("R'G'B'A u8", "u8", 4)),
        (False, False, ("R'G'B' u8", "u8", 3)),
        (True, True, ("R'G'B'A float", "f32", 4)),
        (True, False, ("R'G'B' float", "f32", 3)),
    ],
)
def test_wire_format_reads_high_bit_depth_as_float(high, alpha, expected):
    assert logic.wire_format(high, alpha) == expected


def test_babl_format_of_every_wire_image_and_refusals():
    assert logic.babl_format("u16", 4) == "R'G'B'A u16"
    assert logic.babl_format("f32", 1) == "Y' float"
    with pytest.raises(ValueError, match="no babl format"):
        logic.babl_format("f64", 3)


@pytest.mark.parametrize(
    ("given", "label"),
    [
        ("/home/a/styles/starry_night.jpg", "starry_night"),
        (r"C:\Users\a\Pictures\wave.v2.png", "wave.v2"),
        ("Untitled", "Untitled"),
        (".hidden", ".hidden"),
        ("", "style"),
    ],
)
def test_style_label(given, label):
    assert logic.style_label(given) == label
    assert logic.layer_name(given) == f"{label} style"
    assert logic.layer_name(given, 42) == f"{label} style, seed 42"  # to repeat a favourite


# --- Config -------------------------------------------------------------------------------------


def test_missing_config_gives_defaults_without_autostart(tmp_path):
    config = logic.read_config(tmp_path / "brushwork.json")
    assert config.endpoint == "tcp://127.0.0.1:5580"
    assert config.daemon_command == () and not config.can_autostart


def test_config_as_the_installer_writes_it(tmp_path):
    path = tmp_path / "brushwork.json"
    command = ["/opt/bw/bin/brushwork", "serve", "--bind", "tcp://127.0.0.1:6000"]
    path.write_text(json.dumps({"endpoint": "tcp://127.0.0.1:6000", "daemon_command": command}))
    config = logic.read_config(path)
    assert config.endpoint == "tcp://127.0.0.1:6000"
    assert config.daemon_command == tuple(command) and config.can_autostart
    assert config.path == str(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read the plug-in config"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"endpont": "tcp://x:1"}', "unknown key 'endpont'"),
        ('{"autostart": "yes"}', "bad value for 'autostart'"),
        ('{"start_timeout": true}', "bad value for 'start_timeout'"),
        ('{"daemon_command": "brushwork serve"}', "bad value for 'daemon_command'"),
        ('{"daemon_command": ["brushwork", ""]}', "list of non-empty strings"),
    ],
)
def test_broken_config_is_one_line_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "brushwork.json"
    path.write_text(text)
    with pytest.raises(BrushworkError, match=problem) as e:
        logic.read_config(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# --- Autostart ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quick_hello(monkeypatch):
    """Nobody listens on the test ports: the first hello need not wait the full 2 s."""
    monkeypatch.setattr(logic, "HELLO_TIMEOUT", 0.3)


def config_for(tmp_path, endpoint, command, **extra):
    return logic.PluginConfig(
        path=str(tmp_path / "brushwork.json"),
        endpoint=endpoint,
        daemon_command=tuple(command),
        daemon_log=str(tmp_path / "log" / "daemon.log"),
        **extra,
    )


def real_ping(client):
    return lambda timeout: client.hello(timeout=timeout)


def test_no_daemon_and_autostart_off_names_the_endpoint_and_the_config(tmp_path):
    endpoint = free_endpoint()
    config = config_for(tmp_path, endpoint, ["brushwork", "serve"], autostart=False)
    with Client(endpoint) as client, pytest.raises(BrushworkError) as e:
        logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon)
    assert f"no daemon at {endpoint}" in str(e.value)
    assert f"autostart is off in {config.path}" in str(e.value)


def test_autostart_only_starts_the_configured_endpoint(tmp_path):
    endpoint, other = free_endpoint(), free_endpoint()
    config = config_for(tmp_path, endpoint, ["brushwork", "serve"])
    with Client(other) as client, pytest.raises(BrushworkError, match="autostart only starts"):
        logic.ensure_daemon(other, config, real_ping(client), NoDaemon)


def test_a_missing_daemon_command_is_a_clear_error(tmp_path):
    endpoint = free_endpoint()
    config = config_for(tmp_path, endpoint, [str(tmp_path / "nope" / "brushwork"), "serve"])
    with Client(endpoint) as client, pytest.raises(BrushworkError) as e:
        logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon)
    assert str(e.value).startswith("could not start the daemon (")
    assert "No such file or directory" in str(e.value)


def test_a_daemon_that_dies_while_starting_reports_its_last_log_line(tmp_path):
    endpoint = free_endpoint()
    script = "import sys; print('starting'); print('error: weights missing'); sys.exit(3)"
    config = config_for(tmp_path, endpoint, [sys.executable, "-c", script])
    with Client(endpoint) as client, pytest.raises(BrushworkError) as e:
        logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon)
    assert "exited with status 3 " in str(e.value)
    assert " s after it was started: error: weights missing" in str(e.value)
    assert config.daemon_log in str(e.value)


def test_a_daemon_that_never_answers_is_stopped_after_the_timeout(tmp_path):
    endpoint = free_endpoint()
    config = config_for(
        tmp_path,
        endpoint,
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_timeout=1.5,
    )
    waits = []
    with Client(endpoint) as client, pytest.raises(BrushworkError) as e:
        logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon, on_wait=waits.append)
    # The seconds really waited, and the progress told about them while it waited.
    waited = float(str(e.value).split("did not answer in ")[1].split(" s (start_timeout)")[0])
    assert 1.5 <= waited < 3
    assert waits[0] < 0.5 and 0.5 < waits[-1] <= waited + 0.05 and waits == sorted(waits)
    assert logic.starting_text(12.3) == ("Starting the Brushwork daemon (loading VGG16) ... 12 s")
    pid = int(str(e.value).rsplit("pid ", 1)[1].split(")")[0])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: the test process is its parent and has not reaped it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


@pytest.mark.weights
def test_autostart_spawns_the_real_daemon_detached_and_it_serves(tmp_path, weights_file):
    endpoint = free_endpoint()
    command = [
        sys.executable,
        "-m",
        "brushwork",
        "serve",
        "--bind",
        endpoint,
        "--weights",
        str(weights_file),
        "--log-file",
        str(tmp_path / "serve.log"),
    ]
    config = config_for(tmp_path, endpoint, command)
    with Client(endpoint) as client:
        process = logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon)
        try:
            assert process is not None
            # Own session: GIMP killing the plug-in's process group does not take it down.
            assert os.getsid(process.pid) == process.pid != os.getsid(0)
            assert client.hello().protocol == 1
            # The next call finds it up and starts nothing.
            assert logic.ensure_daemon(endpoint, config, real_ping(client), NoDaemon) is None
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0  # SIGTERM: the daemon stops cleanly
    assert Path(config.daemon_log).stat().st_size > 0  # its output went to the log file


# --- Live preview, bundled paintings, missing modules (issue 12) ----------------------------


def test_with_alpha_puts_rgb_under_the_sources_alpha():
    rgb = bytes([1, 2, 3, 4, 5, 6])  # two u8 pixels
    rgba = bytes([9, 9, 9, 100, 9, 9, 9, 200])
    assert logic.with_alpha(rgb, rgba, 1) == bytes([1, 2, 3, 100, 4, 5, 6, 200])
    floats = struct.pack("<6f", 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    source = struct.pack("<8f", 0, 0, 0, 0.25, 0, 0, 0, 0.75)
    mixed = struct.unpack("<8f", logic.with_alpha(floats, source, 4))
    assert mixed == pytest.approx((0.1, 0.2, 0.3, 0.25, 0.4, 0.5, 0.6, 0.75))


def test_previews_are_asked_for_about_40_times_no_larger_than_the_box():
    assert logic.preview_options(200, 96, 64) == {"preview_every": 5, "preview_size": 96}
    assert logic.preview_options(10, 4000, 3000) == {"preview_every": 1, "preview_size": 512}
    assert logic.preview_options(200, 8, 4)["preview_size"] == 16  # the protocol's minimum


def test_every_bundled_painting_is_shipped_and_credited():
    readme = (REPO / "README.md").read_text()
    for value, label in logic.PAINTINGS:
        path = Path(logic.painting_path(str(REPO / "plugin" / "brushwork"), value))
        assert path.is_file() and path.stat().st_size < 150_000, path
        assert label.split(" (")[0] in readme, f"{label} is not credited in the README"
    with pytest.raises(ValueError, match="no bundled painting"):
        logic.painting_path("x", "mona-lisa")


def test_a_missing_zmq_gives_a_command_that_works_on_that_system():
    error = ImportError("No module named 'zmq'", name="zmq")
    lib = "/p/plug-ins/brushwork/lib"
    message = logic.missing_module_message(error, "/usr/bin/python3", lib, has_pip=True)
    assert message.startswith("GIMP's Python (/usr/bin/python3) cannot import pyzmq")
    assert f"/usr/bin/python3 -m pip install --target {lib} 'pyzmq>=25'" in message
    # Debian's and Ubuntu's system Python has no pip: the distribution's package
    debian = logic.missing_module_message(error, "/usr/bin/python3", lib, has_pip=False, apt=True)
    assert "with: sudo apt-get install python3-zmq (or run Brushwork's install/install.sh" in debian
    neither = logic.missing_module_message(error, "/opt/py", lib, has_pip=False, apt=False)
    assert "pip" not in neither and "install/install.sh again" in neither
    other = logic.missing_module_message(ImportError("x", name="brushwork.client"), "py", "lib")
    assert "install/install.sh --plugin-only" in other and "\n" not in other


# --- Variations and the preview pane (issue 30) -------------------------------------------------


def test_a_given_seed_repeats_and_counts_up_for_variations():
    assert logic.variation_seeds(7, 1) == [7]
    assert logic.variation_seeds(7, 3) == [7, 8, 9]
    assert logic.variation_seeds(logic.MAX_SEED, 2) == [logic.MAX_SEED, 0]


def test_seed_minus_one_draws_new_seeds_every_time():
    drawn = logic.variation_seeds(-1, 4) + logic.variation_seeds(-1, 4)
    assert len(set(drawn)) == 8 and all(0 <= s <= logic.MAX_SEED for s in drawn)


@pytest.mark.parametrize("count", [0, logic.MAX_VARIATIONS + 1])
def test_variations_out_of_range_are_refused(count):
    with pytest.raises(ValueError, match="variations must be between 1 and"):
        logic.variation_seeds(0, count)


def test_the_pane_runs_the_draft_at_the_pane_size_with_the_dialogs_look():
    pane = logic.pane_settings(strength=70, preserve_colors="luminance", seed=3)
    full = logic.build_settings(
        strength=70, size=0, quality="draft", preserve_colors="luminance", seed=3
    )
    assert pane == full.replace(size=0)  # the layer goes out already at the pane's size
    assert pane.iterations < DEFAULTS.iterations and pane.scales == 1
    assert logic.pane_scale(1600, 1200) == logic.PANE_SIDE / 1600
    assert logic.pane_scale(100, 80) == 1.0  # never enlarged
