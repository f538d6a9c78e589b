"""--config-file on a real daemon: settings from TOML, a flag clash refused, SIGHUP applies log-level."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root


def test_config_file_sets_the_daemon_up(tmp_path: Path, cgroup_parent: str) -> None:
    sock = tmp_path / "custom.sock"
    config = tmp_path / "corral.toml"
    common = (f'data-root = "{tmp_path / "data"}"\nexec-root = "{tmp_path / "run"}"\nhosts = ["unix://{sock}"]\n'
              f'cgroup-parent = "{cgroup_parent}"\nmetrics-addr = "none"\n')
    config.write_text(common + 'log-level = "info"\n')
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen([*corral_command(), "daemon", "--config-file", str(config)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        ps = lambda: subprocess.run([*corral_command(), "-H", f"unix://{sock}", "ps"], capture_output=True,  # noqa: E731
                                    timeout=30, stdin=subprocess.DEVNULL).returncode == 0
        wait_for(lambda: sock.exists() and ps(), timeout=30, what="the daemon on the configured socket")
        assert (tmp_path / "data/state.db").exists()
        config.write_text(common + 'log-level = "debug"\ngroup = "wheel"\n')
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload: log-level is now debug" in log.read_text(), timeout=10,
                 what="the log level to change")
        assert "config reload: group changed; it applies at the next start" in log.read_text()
        assert ps()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_a_flag_and_the_file_setting_the_same_thing_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "corral.toml"
    config.write_text('data-root = "/b"\n')
    out = subprocess.run([*corral_command(), "daemon", "--config-file", str(config), "--data-root", str(tmp_path)],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "specified both as a flag and in the configuration file: data-root" in out.stderr
