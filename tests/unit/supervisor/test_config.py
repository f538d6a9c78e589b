"""--config-file: TOML keys as the flags' names, conflicts and unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import ConfigError, apply_config, given_dests, parse_config
from supervisor.daemon import parser


def test_keys_map_to_flags() -> None:
    config = parse_config('data-root = "/srv/corral"\nhosts = ["unix:///run/a.sock"]\nlog-level = "debug"\n'
                          'services = "/etc/corral/compose.yaml"\nmetrics-addr = "none"\n')
    args = parser().parse_args([])
    apply_config(args, set(), config, path="f")
    assert args.data_root == Path("/srv/corral") and args.host == ["unix:///run/a.sock"]
    assert args.log_level == "debug" and args.services == Path("/etc/corral/compose.yaml")
    assert args.metrics_addr == "none"


@pytest.mark.parametrize(("text", "message"), [
    ("data-root = ", "invalid TOML"),
    ('bogus = "x"', "unknown key 'bogus'"),
    ("hosts = \"unix:///a\"", "hosts must be a list of strings"),
    ("data-root = 3", "data-root must be a string"),
    ('log-level = "loud"', "log-level must be one of"),
])
def test_bad_files_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_a_setting_in_both_places_is_an_error() -> None:
    p = parser()
    argv = ["--data-root", "/a", "--cgroup-parent", "x", "-H", "unix:///s"]
    given = given_dests(p, argv)
    assert {"data_root", "cgroup_parent", "host"} <= given and "log_level" not in given
    with pytest.raises(ConfigError, match="both as a flag and in the configuration file: data-root, hosts"):
        apply_config(p.parse_args(argv), given, parse_config('data-root = "/b"\nhosts = ["unix:///t"]'), path="f")
