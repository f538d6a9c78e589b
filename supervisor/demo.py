"""``make run``: corral's main job on a fresh machine.

Runs the daemon in the foreground supervising ``examples/compose.yaml`` (a
busybox httpd, a worker that crashes now and then and is restarted, a
memory-limited cache), with the busybox image bootstrapped from the host's
busybox-static, and says how to watch it. Ctrl-C (or SIGTERM) stops the
daemon, which stops every container gracefully first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.images import BUSYBOX, ImageStore

REPO = Path(__file__).resolve().parents[1]
SOCKET = Path("/run/corral/corral.sock")
DATA_ROOT = Path("/var/lib/corral")        # the daemon's default


def corral(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def main() -> int:
    if os.geteuid() != 0:
        print("make run: the daemon needs root (namespaces, cgroups, mounts)", file=sys.stderr)
        return 1
    if not BUSYBOX.exists():
        print(f"make run: {BUSYBOX} is missing: run `make setup` (Debian package busybox-static)", file=sys.stderr)
        return 1
    services = REPO / "examples/compose.yaml"
    images = ImageStore(DATA_ROOT)      # the store locks its index: safe beside a daemon
    if not any("busybox:latest" in i.repo_tags for i in images.list()):
        print("make run: bootstrapping busybox:latest from the host's busybox-static", flush=True)
        images.bootstrap_busybox()
    daemon = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "daemon", "--services", str(services)],
                              stdin=subprocess.DEVNULL)
    # Ctrl-C reaches the daemon too (same process group); it decides when we are done.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, _f: daemon.send_signal(signal.SIGTERM) if s == signal.SIGTERM else None)
    deadline = time.monotonic() + 30
    while corral("ps").returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            print("make run: the daemon did not come up (see its log above)", file=sys.stderr)
            daemon.kill()
            return 1
        time.sleep(0.2)
    print(f"""
corral is supervising {services.relative_to(REPO)} (daemon pid {daemon.pid}, socket {SOCKET}).

  watch the containers:  .venv/bin/corral ps -a
  watch every event:     .venv/bin/corral events --since 0
  one container:         .venv/bin/corral inspect corral-demo-worker-1
  its output:            .venv/bin/corral logs -f -t corral-demo-worker-1
  live resource use:     .venv/bin/corral stats
  metrics (Prometheus):  curl -s 127.0.0.1:9323/metrics | grep corral-demo
  reload after editing:  kill -HUP {daemon.pid}

Ctrl-C stops the daemon and, gracefully, every container.
""", flush=True)
    return daemon.wait()


if __name__ == "__main__":
    sys.exit(main())
