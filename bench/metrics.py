"""bench/metrics.py: what a Prometheus scrape of corral costs, with 1, 100 and 1,000 containers.

Issue 5's targets: under 1 ms of daemon time per container per scrape, and the
daemon's event loop never blocked for more than 50 ms by a scrape.

One private daemon (its own data root, exec root, cgroup parent and metrics
port) runs ``sleep`` containers; at each count the bench

- scrapes ``--scrapes`` times in a row and records each scrape's wall time and
  response size, and the daemon's CPU time (all its threads: utime + stime
  from /proc/PID/stat) over those scrapes, minus what it spent idle over an
  equal time just before: that difference, per scrape, per container, is the
  "daemon time per container per scrape";
- meanwhile pings the daemon over its RPC socket (``system.version``) every
  5 ms from another connection and records the slowest answer during the
  scrapes and during the idle interval. A scrape that blocked the event loop
  shows as a slow ping (the scrape itself runs on a worker thread).

There is no cAdvisor in Debian to run side by side; the figures stand against
the targets. Results: bench/results/metrics.md and .json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import run as rt  # noqa: E402  (bench/run.py: rootfs, cgroup clean-up, environment)
from run import BenchError  # noqa: E402
from daemon import (  # noqa: E402
    CorralDaemon,
    _remove_all,
    _start_many,
    clean_up,
    log,
    rpc,
)

PER_CONTAINER_TARGET_MS = 1.0
LOOP_BLOCK_TARGET_MS = 50.0
PING_INTERVAL_S = 0.005
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def scrape(port: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        size = len(response.read())
    return time.perf_counter() - t0, size


def late_wakeups(port: int, over_s: float = LOOP_BLOCK_TARGET_MS / 1000) -> int:
    """The daemon's own count of loop-lag samples above ``over_s`` (corral_event_loop_lag_seconds)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        text = response.read().decode()
    buckets = {float(s.labels["le"]): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "corral_event_loop_lag_seconds_bucket"}
    if not buckets:
        return 0
    return int(buckets[float("inf")] - buckets.get(over_s, 0))


class Pinger:
    """``system.version`` over the RPC socket every 5 ms on its own thread; the slowest
    answer between ``mark()`` calls."""

    def __init__(self, sock: Path) -> None:
        self._sock = sock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._worst = 0.0
        self._count = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Pinger":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def mark(self) -> tuple[float, int]:
        """(slowest ping in seconds, pings) since the last mark."""
        with self._lock:
            out = (self._worst, self._count)
            self._worst, self._count = 0.0, 0
        return out

    def _run(self) -> None:
        import trio

        from supervisor.client import connect

        async def main() -> None:
            async with connect(self._sock) as client:
                while not self._stop.is_set():
                    t0 = time.perf_counter()
                    await client.call("system.version")
                    took = time.perf_counter() - t0
                    with self._lock:
                        self._worst = max(self._worst, took)
                        self._count += 1
                    await trio.sleep(PING_INTERVAL_S)

        trio.run(main)


def measure(daemon: CorralDaemon, port: int, pinger: Pinger, count: int, scrapes: int) -> dict[str, Any]:
    pid = daemon.proc.pid
    for _ in range(2):
        scrape(port)                                  # warm: namespaces opened, device names cached
    # Idle: the same wall time the scrapes will take, estimated from one scrape.
    one_s, _ = scrape(port)
    idle_s = max(1.0, one_s * scrapes)
    pinger.mark()
    c0 = cpu_seconds(pid)
    time.sleep(idle_s)
    idle_cpu_per_s = (cpu_seconds(pid) - c0) / idle_s
    idle_ping, idle_pings = pinger.mark()

    walls, sizes = [], []
    late0 = late_wakeups(port)
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    for _ in range(scrapes):
        wall, size = scrape(port)
        walls.append(wall)
        sizes.append(size)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - c0 - idle_cpu_per_s * elapsed
    busy_ping, busy_pings = pinger.mark()
    late = late_wakeups(port) - late0
    walls.sort()
    per_scrape_ms = max(0.0, cpu) / scrapes * 1000
    return {
        "containers": count,
        "scrapes": scrapes,
        "wall_median_ms": round(walls[len(walls) // 2] * 1000, 2),
        "wall_max_ms": round(walls[-1] * 1000, 2),
        "bytes": sizes[-1],
        "daemon_cpu_per_scrape_ms": round(per_scrape_ms, 2),
        "daemon_cpu_per_container_ms": round(per_scrape_ms / max(count, 1), 4),
        "slowest_ping_idle_ms": round(idle_ping * 1000, 2),
        "slowest_ping_scraping_ms": round(busy_ping * 1000, 2),
        "pings": busy_pings + idle_pings,
        "loop_lag_over_50ms": late,
    }


def render_markdown(result: dict) -> str:
    rows = result["rows"]
    worst_per_container = max((r["daemon_cpu_per_container_ms"] for r in rows if r["containers"] >= 100),
                              default=None)
    worst_ping = max(r["slowest_ping_scraping_ms"] for r in rows)
    late = sum(r["loop_lag_over_50ms"] for r in rows)
    verdict = lambda ok: "MET" if ok else "MISS"   # noqa: E731
    lines = [
        "# corral /metrics: scrape cost (issue 5's bench)",
        "",
        f"Date {result['date']}; `bench/metrics.py {result['config']}`. See bench/README.md, section "
        "\"bench/metrics.py\". No cAdvisor in Debian to run beside it: the figures stand against the targets.",
        "",
        "| target | result | detail |",
        "| --- | --- | --- |",
        f"| under {PER_CONTAINER_TARGET_MS:g} ms of daemon time per container per scrape (100+ containers) | "
        f"{verdict(worst_per_container is not None and worst_per_container < PER_CONTAINER_TARGET_MS)} | "
        f"worst {worst_per_container} ms |",
        f"| event loop never blocked more than {LOOP_BLOCK_TARGET_MS:g} ms by a scrape | "
        f"{verdict(worst_ping < LOOP_BLOCK_TARGET_MS and late == 0)} | slowest RPC ping while scraping "
        f"{worst_ping} ms; the daemon's own loop-lag samples over 50 ms while scraping: {late} |",
        "",
        "| containers | scrapes | wall median ms | wall max ms | response bytes | daemon CPU ms / scrape | "
        "daemon CPU ms / container / scrape | slowest ping idle ms | slowest ping scraping ms | "
        "loop-lag samples > 50 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['containers']} | {r['scrapes']} | {r['wall_median_ms']} | {r['wall_max_ms']} | "
                     f"{r['bytes']} | {r['daemon_cpu_per_scrape_ms']} | {r['daemon_cpu_per_container_ms']} | "
                     f"{r['slowest_ping_idle_ms']} | {r['slowest_ping_scraping_ms']} | {r['loop_lag_over_50ms']} |")
    lines += ["", "Environment:", ""]
    lines += [f"- {k}: {v}" for k, v in result["environment"].items()]
    if result["problems"]:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in result["problems"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--counts", default="1,100,1000", help="running containers at each step (default 1,100,1000)")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes counted at each step (default 20)")
    ap.add_argument("--results", type=Path, default=BENCH / "results", help="where metrics.json/.md go")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/metrics.py: needs root", file=sys.stderr)
        return 1
    counts = sorted({int(c) for c in args.counts.split(",")})
    tmp = Path(tempfile.mkdtemp(prefix="corral-bm-"))
    cgroup_parent = f"corral-bench-{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    port = _free_port()
    daemon = CorralDaemon(tmp, "corral-a", cgroup_parent, rt._corral_command(), env,
                          extra_args=("--metrics-addr", f"127.0.0.1:{port}"))
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    failed = None
    load_before = rt._loadavg()
    try:
        log(f"bench: temp dir {tmp}, cgroup parent {cgroup_parent}, metrics port {port}")
        daemon.start()
        with Pinger(daemon.socket) as pinger:
            running = 0
            for count in counts:
                log(f"bench: starting containers {running}..{count}")
                rpc(daemon.socket, _start_many, count - running, 16, running)
                running = count
                time.sleep(2)                          # let the starts settle
                rows.append(measure(daemon, port, pinger, count, args.scrapes))
                log(f"bench: {rows[-1]}")
        rpc(daemon.socket, _remove_all, 16)
    except BenchError as exc:
        failed = str(exc)
    finally:
        daemon.stop(problems)
        clean_up(tmp, cgroup_parent, problems)
    if failed:
        print(f"bench/metrics.py: {failed}", file=sys.stderr)
        return 1
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": f"--counts {args.counts} --scrapes {args.scrapes}",
        "rows": rows,
        "environment": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                        "load average (1/5/15 min) before / after": f"{load_before} / {rt._loadavg()}"},
        "problems": problems,
    }
    md = render_markdown(result)
    rt.write_results(args.results, "metrics", result, md)
    print(md)
    return 0 if not problems else 1


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
