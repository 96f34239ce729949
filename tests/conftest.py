"""Shared fixtures live in plugin modules beside this file, one per subsystem."""

pytest_plugins = ["fixtures_weights", "fixtures_daemon", "fixtures_cli", "fixtures_gimp"]
