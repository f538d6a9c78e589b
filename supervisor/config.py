"""``corral daemon --config-file FILE``: the daemon's flags in a TOML file (dockerd's daemon.json, in TOML).

Keys are the flags' long names (``data-root``, ``hosts``, ...). As dockerd does,
a setting given both as a flag and in the file is an error rather than a silent
choice, and an unknown key is an error that names it. On SIGHUP the daemon
re-reads the file; ``log-level`` and ``services`` apply at once, the others at
the next start (a warning says so).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

# key -> (argparse dest, type, applies on SIGHUP)
KEYS: dict[str, tuple[str, type, bool]] = {
    "data-root": ("data_root", Path, False),
    "exec-root": ("exec_root", Path, False),
    "hosts": ("host", list, False),
    "log-level": ("log_level", str, True),
    "cgroup-parent": ("cgroup_parent", str, False),
    "group": ("group", str, False),
    "services": ("services", Path, True),
    "metrics-addr": ("metrics_addr", str, False),
    "metrics-labels": ("metrics_label", list, False),
    "registry-mirrors": ("registry_mirror", list, False),
    "insecure-registries": ("insecure_registry", list, False),
    "live-restore": ("live_restore", bool, True),
}
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The config file is unreadable, malformed, or conflicts with a flag; the message says which."""


def parse_config(text: str, *, path: str = "config file") -> dict[str, Any]:
    """TOML text -> {argparse dest: value}, checked.

    Raises:
        ConfigError: not TOML, an unknown key, or a value of the wrong type.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        dest, kind, _ = KEYS[key]
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key} must be a list of strings")
        elif kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: {key} must be true or false")
        elif not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string")
        if key == "log-level" and value not in LOG_LEVELS:
            raise ConfigError(f"{path}: log-level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        out[dest] = kind(value) if kind is Path else value
    return out


def apply_config(args: argparse.Namespace, given: set[str], config: dict[str, Any], *, path: str) -> None:
    """Set the file's values on ``args``; ``given`` holds the dests set on the command line.

    Raises:
        ConfigError: a setting is both a flag and in the file (dockerd's rule).
    """
    both = sorted(key for key, (dest, _, _) in KEYS.items() if dest in config and dest in given)
    if both:
        raise ConfigError(f"{path}: the following directives are specified both as a flag and in the "
                          f"configuration file: {', '.join(both)}")
    for dest, value in config.items():
        setattr(args, dest, value)


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests the command line set explicitly (argparse's defaults suppressed)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:          # noqa: SLF001 - mirroring our own parser
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            elif isinstance(action, argparse._AppendAction):   # noqa: SLF001
                kwargs["action"] = "append"
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(argv)
    return set(vars(known))


def read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse_config(text, path=str(path))
