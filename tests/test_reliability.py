"""The reliability suite's scenarios (bench/reliability.py), small: the fast subset CI runs.

The full run (100,000 messages, 8 x 20 jobs, a 200-job soak) and its figures are in
bench/results/reliability-cpu-*.md; these check the same properties at a size CI can afford.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import attacks  # bench/ is not a package: found through sys.path
import reliability

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def daemon(weights_file: Path, folder: Path) -> Iterator[reliability.Daemon]:
    """One daemon for the scenarios that do not kill it (the weights it finds are
    `weights_file`'s); a queue of 4 makes the crowd wait."""
    with reliability.running(folder, "--max-queue", "4", "--heartbeat-timeout", "3") as d:
        yield d


def test_every_fuzzed_message_is_answered_and_the_daemon_lives(daemon):
    figures = attacks.fuzz(daemon, 2000, seed=1)
    assert figures["replies"] == figures["messages"] == 2000
    assert figures["daemon_alive"] and figures["answers_info_after"]
    assert figures["tracebacks_in_log"] == figures["errors_in_log"] == 0
    assert "internal" not in figures["replies_by_code"]


def test_a_crowd_of_batches_loses_nothing_and_runs_nothing_twice(daemon, folder):
    figures = reliability.crowd(daemon, folder, clients=3, jobs=3)
    assert figures["batches_exit_0"] == 3
    assert figures["outputs_written"] == 9 and figures["lost"] == 0
    assert figures["jobs_run_twice"] == 0 and figures["jobs_accepted"] >= 9


def test_a_soak_of_new_styles_and_sizes_runs_through(daemon):
    figures = reliability.soak(daemon, jobs=12)
    assert figures["jobs"] == 12 and figures["rss_max_mb"] > 0


def test_hijack_attempts_leak_nothing(daemon):
    figures = reliability.hijack(daemon, attempts=2, owner={}, thief={}, give_token=False)
    assert figures["leaked"] == 0 and figures["refused"] == figures["attempts"] == 10
    assert figures["owner_got_its_result"]


def test_with_curve_even_the_token_is_not_enough_for_another_key(folder, weights_file):
    (folder / "curve").mkdir()
    figures = reliability.hijack_curve(folder / "curve", attempts=2)
    assert figures["leaked"] == 0 and figures["refused"] == figures["attempts"] == 10
    assert figures["owner_got_its_result"]


def test_a_killed_daemon_loses_no_finished_output(folder, weights_file):
    (folder / "kill").mkdir()

    def start() -> reliability.Daemon:
        return reliability.start_daemon(folder / "kill")

    figures = reliability.kill_and_resume(start(), start, folder / "kill", count=6)
    assert figures["written_before_the_kill"] >= 2
    # At once, in one line: the connection closed and nothing listens (on main: 31 s, saying
    # "nothing for 10 s").
    assert figures["first_batch_seconds_to_exit_after_the_kill"] < 5.0
    assert figures["first_batch_exit"] == 3
    assert figures["first_batch_said"].startswith("brushwork: error: the daemon at tcp://")
    assert figures["first_batch_said"].endswith(
        "went away (its connection closed and nothing listens there now)"
    )
    assert figures["finished_outputs_kept_byte_identical"] == figures["written_before_the_kill"]
    assert figures["partial_files_after_the_kill"] == figures["temp_files_left"] == 0
    assert figures["rerun_exit"] == 0
    assert figures["rerun_skipped"] == figures["written_before_the_kill"]
    assert figures["outputs_complete_after_rerun"] == 6


def test_the_attack_rounds_run_small(small_daemon, tmp_path, weights_file):
    """bench/reliability.py's `binds`, `hostile` and `bigimage` rounds, small."""
    binds = attacks.bind_forms(weights_file)
    assert binds["serve_semicolon_exit"] == 2 and "follows the ';'" in binds["serve_semicolon_said"]
    assert binds["loopback"] + binds["need_keys"] + binds["refused"] == binds["forms_tried"]
    queue = attacks.queue_memory(small_daemon, jobs=2, issue_jobs=1)
    assert queue["replies"] == {"too_large": 3}  # 100 frames; 16 frames of 1.6 MB > 4 MiB
    assert queue["seconds_to_cancel_running"] < 2.0
    frames = attacks.half_sent(small_daemon, connections=2, wait=15.0, frames=5)
    assert frames["oversized"]["dropped"] == frames["stalled_half_sent"]["dropped"] == 2
    assert frames["unending_message"]["dropped_once_it_stopped"]
    settings = attacks.hostile_settings(small_daemon)
    assert settings["one_layer_80000_times"]["reply"] == settings["500_layers_falloff_8"]["reply"]
    assert settings["one_layer_80000_times"]["reply"] == "bad_settings"
    assert settings["worker_free_after"] == attacks.TINY.iterations
    echo = attacks.echoed(small_daemon, requests=3)
    assert echo["longest_reply_message"] < 300 and echo["startup_line_in_log"]
    big = attacks.big_image(small_daemon, tmp_path, weights_file, side=4200)
    assert [big[k]["exit"] for k in ("in_process", "through_daemon", "batch")] == [0, 0, 0]
    assert big["output"] == "64x64"
