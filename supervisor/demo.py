"""``make run``: corral's main job for now, a demo container through ``corral runtime``.

Builds a busybox bundle under /tmp, runs a web server container detached with a
memory and pids limit, shows its state, stats and processes, then an OOM kill,
and removes everything it made. Grows into the daemon with the supervisor issue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protocols.runtime_spec import default_spec_document
from runtime.images import BUSYBOX, make_busybox_rootfs



def corral(*args: str, check: bool = True, detached: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "supervisor.cli", "runtime", *args]
    print("$ corral runtime " + " ".join(args), flush=True)
    # A detached container inherits the command's stdio: never hand it our pipes.
    stdio = subprocess.DEVNULL if detached else subprocess.PIPE
    out = subprocess.run(cmd, text=True, stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio)
    sys.stdout.write(out.stdout or "")
    sys.stderr.write(out.stderr or "")
    if check and out.returncode != 0:
        raise SystemExit(f"demo: corral runtime {args[0]} failed with exit status {out.returncode}")
    return out


def make_bundle(path: Path, args: list[str], *, memory_bytes: int, pids: int) -> None:
    rootfs = path / "rootfs"
    if not rootfs.exists():
        make_busybox_rootfs(rootfs)
        (rootfs / "www").mkdir()
        (rootfs / "www/index.html").write_text("hello from a corral container\n")
    config = default_spec_document(args=tuple(args), terminal=False)
    config["hostname"] = "corral-demo"
    config["linux"]["cgroupsPath"] = f"corral-demo/{path.name}"
    config["linux"]["resources"].update({"memory": {"limit": memory_bytes, "swap": memory_bytes},
                                         "pids": {"limit": pids}})
    (path / "config.json").write_text(json.dumps(config, indent=2))


def main() -> int:
    if os.geteuid() != 0:
        print("demo: corral runtime needs root (namespaces, cgroups, mounts)", file=sys.stderr)
        return 1
    if not BUSYBOX.exists():
        print("demo: /bin/busybox is missing: run `make setup` (Debian package busybox-static)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    root = str(work / "state")
    try:
        web = work / "web"
        web.mkdir()
        make_bundle(web, ["httpd", "-f", "-h", "/www", "-p", "8080"], memory_bytes=64 << 20, pids=32)
        corral("--root", root, "run", "-d", "-b", str(web), "web", detached=True)
        time.sleep(0.3)
        corral("--root", root, "list")
        corral("--root", root, "ps", "web")
        state = json.loads(corral("--root", root, "state", "web").stdout)
        stats = json.loads(corral("--root", root, "events", "--stats", "web").stdout)["data"]
        print(f"web: pid {state['pid']}, memory {stats['memory']['usage']['usage']} of "
              f"{stats['memory']['usage']['limit']} bytes, {stats['pids']['current']} of {stats['pids']['limit']} pids")
        fetch = subprocess.run(["nsenter", "-t", str(state["pid"]), "-n", "-m", "wget", "-qO-", "http://127.0.0.1:8080/"],
                               capture_output=True, text=True, timeout=10)
        print(f"GET / inside web's namespaces -> {fetch.stdout.strip() or fetch.stderr.strip()}")
        corral("--root", root, "pause", "web")
        print("web is", json.loads(corral("--root", root, "state", "web").stdout)["status"])
        corral("--root", root, "resume", "web")
        corral("--root", root, "kill", "web", "KILL")
        corral("--root", root, "delete", "web")

        hog = work / "hog"
        hog.mkdir()
        make_bundle(hog, ["sh", "-c", "echo allocating 256 MiB in a 32 MiB container; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived"],
                    memory_bytes=32 << 20, pids=16)
        out = corral("--root", root, "run", "-b", str(hog), "hog", check=False)
        print(f"hog exited with status {out.returncode} (137 = SIGKILL by the OOM killer)")
        return 0
    finally:
        for entry in ("web", "hog"):
            subprocess.run([sys.executable, "-m", "supervisor.cli", "runtime", "--root", root, "delete", "-f", entry],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        from runtime.cgroups import open_cgroup
        open_cgroup("corral-demo").remove()     # the parent the demo's cgroups were made in


if __name__ == "__main__":
    sys.exit(main())
