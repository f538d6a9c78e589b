#!/usr/bin/env python3
"""Container logs side by side: corral's json-file capture against dockerd's, issue 6's bench.

Two parts, one run, results in ``bench/results/logs.json`` and ``logs.md``:

(1) **A container writing a lot, nobody reading.** ``sh -c 'yes WORD | head -c
    SIZE'`` (WORD is 99 characters: 100-byte lines; ``--size``, default 1 GB)
    with its stdout captured into the engine's json-file log, against the same
    command with ``> /dev/null`` inside the container. Timed from create to the
    end of ``wait`` over each engine's own API from this warm process (corral:
    the RPC client; docker: the HTTP API, ``docker run -d`` + ``docker wait``
    without CLI start-up). Rounds are interleaved (``--rounds``); every
    container must exit 0, and corral's log must hold exactly SIZE/100 entries
    (newlines counted in the files, rotated ones included). Target (issue 6):
    corral's logged/null ratio close to 1, and next to docker's ratio.
(2) **``logs --tail 10`` of a 1,000,000-line log** (``--lines``). One container
    per engine runs ``seq 1 N``; then ``corral logs --tail 10`` and ``docker logs
    --tail 10`` as whole CLI processes (interleaved, ``--tail-runs``), each
    output checked against the last ten numbers. Also corral's call alone, over
    RPC from this warm process (no interpreter start-up). Target: well under a
    second.

Every process and daemon is started by the bench and stopped by PID;
containers are removed, cgroups under the bench's ``corral-bench-<uuid>``
parent removed, the temp dir deleted (``bench/daemon.py``'s helpers do it).
Exit 1 only when a run failed, a check came back wrong or clean-up left
something behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import daemon as bd  # bench/daemon.py: the private daemons and their clean-up
import run as rt

WORD = "0123456789" * 9 + "012345678"         # `yes WORD` prints 100-byte lines
BenchError = rt.BenchError
TAIL = 10


def log(msg: str) -> None:
    bd.log(msg)


def producer(size: int, *, to_null: bool) -> list[str]:
    return ["sh", "-c", f"yes {WORD} | head -c {size}" + (" > /dev/null" if to_null else "")]


# --- corral over its RPC client -------------------------------------------------------------


async def _corral_run(client, cmd: list[str], name: str) -> tuple[str, int, float]:
    """create + start + wait, timed; the container is kept (its log is checked, then removed)."""
    t0 = time.perf_counter()
    cid = (await client.call("container.create", body={"Image": "busybox", "Cmd": cmd, "HostConfig": {}},
                             name=name))["Id"]
    await client.call("container.start", id=cid)
    code = int((await client.call("container.wait", id=cid))["StatusCode"])
    return cid, code, time.perf_counter() - t0


async def _corral_remove(client, cid: str) -> None:
    await client.call("container.remove", id=cid, force=True, volumes=True)


async def _corral_inspect(client, cid: str) -> dict:
    return await client.call("container.inspect", id=cid)


async def _corral_tail(client, cid: str, n: int) -> tuple[list[bytes], float]:
    t0 = time.perf_counter()
    lines: list[bytes] = []
    async with client.stream("container.logs", id=cid, tail=n) as batches:
        async for batch in batches:
            lines.extend(text for _, text in batch)
    return lines, time.perf_counter() - t0


def count_entries(log_path: str) -> int:
    """Newlines in the json-file log and its rotated copies (one per entry), read in 8 MiB blocks."""
    total = 0
    path = Path(log_path)
    for f in [*path.parent.glob(path.name + ".*"), path]:
        with open(f, "rb") as fh:
            while block := fh.read(8 << 20):
                total += block.count(b"\n")
    return total


# --- docker over its HTTP API ---------------------------------------------------------------


def docker_run(docker: bd.DockerDaemon, cmd: list[str]) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    cid = docker._ok(201, "POST", "/containers/create",
                     {"Image": bd.DOCKER_IMAGE, "Cmd": cmd, "HostConfig": {"NetworkMode": "none"}})["Id"]
    docker._ok(204, "POST", f"/containers/{cid}/start")
    code = int(docker._ok(200, "POST", f"/containers/{cid}/wait")["StatusCode"])
    return cid, code, time.perf_counter() - t0


def docker_remove(docker: bd.DockerDaemon, cid: str) -> None:
    docker._ok(204, "DELETE", f"/containers/{cid}?force=1")


# --- the parts ------------------------------------------------------------------------------


def part_write(corral: bd.CorralDaemon, docker: bd.DockerDaemon | None, size: int, rounds: int) -> dict[str, Any]:
    paths = ["corral-log", "corral-null"] + (["docker-log", "docker-null"] if docker is not None else [])
    samples: dict[str, list[float]] = {p: [] for p in paths}
    expected_entries = size // (len(WORD) + 1)
    serial = 0
    for rnd in range(rounds):
        k = rnd % len(paths)
        for p in paths[k:] + paths[:k]:
            serial += 1
            cmd = producer(size, to_null=p.endswith("null"))
            if p.startswith("corral"):
                cid, code, seconds = bd.rpc(corral.socket, _corral_run, cmd, f"w-{serial}")
                try:
                    if code == 0 and p == "corral-log":
                        entries = count_entries(bd.rpc(corral.socket, _corral_inspect, cid)["LogPath"])
                        if entries != expected_entries:
                            raise BenchError(f"(1) corral log of round {rnd + 1} holds {entries} entries, "
                                             f"expected {expected_entries}")
                finally:
                    bd.rpc(corral.socket, _corral_remove, cid)
            else:
                assert docker is not None
                cid, code, seconds = docker_run(docker, cmd)
                docker_remove(docker, cid)
            if code != 0:
                raise BenchError(f"(1) {p} round {rnd + 1} exited {code}")
            samples[p].append(seconds)
            log(f"  (1) round {rnd + 1}/{rounds} {p}: {seconds:.2f} s ({size / seconds / 1e6:.0f} MB/s)")
    med = {p: statistics.median(v) for p, v in samples.items()}
    ratios = {"corral log/null": med["corral-log"] / med["corral-null"]}
    if docker is not None:
        ratios["docker log/null"] = med["docker-log"] / med["docker-null"]
        ratios["docker-log/corral-log"] = med["docker-log"] / med["corral-log"]
    return {"size_bytes": size, "line_bytes": len(WORD) + 1, "rounds": rounds,
            "median_s": med, "min_s": {p: min(v) for p, v in samples.items()},
            "mb_per_s": {p: size / m / 1e6 for p, m in med.items()}, "ratios": ratios,
            "samples_s": {p: [round(s, 3) for s in v] for p, v in samples.items()}}


def part_tail(corral: bd.CorralDaemon, docker: bd.DockerDaemon | None, lines: int, runs: int,
              env: dict[str, str]) -> dict[str, Any]:
    expected = "".join(f"{i}\n" for i in range(lines - TAIL + 1, lines + 1))
    cmd = ["seq", "1", str(lines)]
    log(f"(2) corral: a container printing {lines} lines")
    ccid, code, _ = bd.rpc(corral.socket, _corral_run, cmd, "tail-src")
    if code != 0:
        raise BenchError(f"(2) corral seq exited {code}")
    dcid = None
    if docker is not None:
        log(f"(2) docker: a container printing {lines} lines")
        dcid, code, _ = docker_run(docker, cmd)
        if code != 0:
            raise BenchError(f"(2) docker seq exited {code}")
    argv = {"corral": [*corral.corral, *corral.host, "logs", "--tail", str(TAIL), ccid]}
    if docker is not None:
        argv["docker"] = [docker.cli_path, *docker.host, "logs", "--tail", str(TAIL), dcid]
    samples: dict[str, list[float]] = {p: [] for p in [*argv, "corral-rpc"]}
    for rnd in range(runs + 1):                 # the first round warms caches and is not counted
        for p, times in samples.items():
            if p == "corral-rpc":
                got, seconds = bd.rpc(corral.socket, _corral_tail, ccid, TAIL)
                text = b"".join(got).decode()
            else:
                t0 = time.perf_counter()
                out = subprocess.run(argv[p], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                                     env=env if p == "corral" else docker.env, check=False)
                seconds = time.perf_counter() - t0
                if out.returncode != 0:
                    raise BenchError(f"(2) {p} logs --tail exited {out.returncode}: {out.stderr[-500:]}")
                text = out.stdout
            if text != expected:
                raise BenchError(f"(2) {p} logs --tail {TAIL} printed {text[-200:]!r}, expected {expected[-60:]!r}")
            if rnd:
                times.append(seconds)
    bd.rpc(corral.socket, _corral_remove, ccid)
    if docker is not None and dcid is not None:
        docker_remove(docker, dcid)
    med = {p: statistics.median(v) for p, v in samples.items()}
    return {"lines": lines, "tail": TAIL, "runs": runs, "median_ms": {p: m * 1000 for p, m in med.items()},
            "max_ms": {p: max(v) * 1000 for p, v in samples.items()},
            "samples_ms": {p: [round(s * 1000, 1) for s in v] for p, v in samples.items()}}


# --- report -------------------------------------------------------------------------------------


def render_markdown(result: dict[str, Any]) -> str:
    out = ["# Container logs: corral vs docker (bench/logs.py)", "",
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `{result['config']}`", ""]
    w = result.get("write")
    if w:
        out += [f"## (1) {w['size_bytes'] / 1e9:g} GB of {w['line_bytes']}-byte lines to stdout, nobody reading",
                "", ("Create to end of wait, over each engine's API from a warm process; "
                     f"median of {w['rounds']} interleaved rounds."), "",
                "| path | median s | min s | MB/s |", "| --- | ---: | ---: | ---: |"]
        for p, m in w["median_s"].items():
            out.append(f"| {p} | {m:.2f} | {w['min_s'][p]:.2f} | {w['mb_per_s'][p]:.0f} |")
        out += ["", "| ratio | value |", "| --- | ---: |"]
        out += [f"| {k} | {v:.2f} |" for k, v in w["ratios"].items()]
        out.append("")
    t = result.get("tail")
    if t:
        out += [f"## (2) `logs --tail {t['tail']}` of a {t['lines']:,}-line log", "",
                f"Median of {t['runs']} runs (after one warm-up); output checked every time.", "",
                "| path | median ms | max ms |", "| --- | ---: | ---: |"]
        labels = {"corral": "`corral logs --tail 10` (whole CLI process)",
                  "docker": "`docker logs --tail 10` (whole CLI process)",
                  "corral-rpc": "corral: `container.logs` over RPC from a warm process"}
        for p, m in t["median_ms"].items():
            out.append(f"| {labels.get(p, p)} | {m:.1f} | {t['max_ms'][p]:.1f} |")
        out.append("")
    out += ["## Environment", ""] + [f"- {k}: {v}" for k, v in result.get("environment", {}).items()]
    if result.get("skipped"):
        out += ["", "Skipped:"] + [f"- {s}" for s in result["skipped"]]
    if result.get("problems"):
        out += ["", "Problems:"] + [f"- {p}" for p in result["problems"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", type=int, default=1_000_000_000, help="(1) bytes written (default 1 GB)")
    ap.add_argument("--rounds", type=int, default=3, help="(1) interleaved rounds (default 3)")
    ap.add_argument("--lines", type=int, default=1_000_000, help="(2) lines in the log (default 1,000,000)")
    ap.add_argument("--tail-runs", type=int, default=10, help="(2) counted runs (default 10)")
    ap.add_argument("--parts", default="12", help="which parts to run (default 12)")
    ap.add_argument("--no-docker", action="store_true", help="leave dockerd out")
    ap.add_argument("--docker-cli", default="/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
    ap.add_argument("--results", type=Path, default=BENCH / "results", help="where logs.json/.md go")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/logs.py: needs root", file=sys.stderr)
        return 1
    if args.size % (len(WORD) + 1):
        print(f"bench/logs.py: --size must be a multiple of {len(WORD) + 1} (whole lines)", file=sys.stderr)
        return 1

    started = time.monotonic()
    load_before = rt._loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bl-"))
    cgroup_parent = f"corral-bench-{uuid.uuid4().hex[:12]}"
    problems: list[str] = []
    skipped: list[str] = []
    result: dict[str, Any] = {"config": " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                  if k != "results")}
    corral_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    corral_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    daemons: list[Any] = []
    docker = None
    failed = None
    try:
        log(f"bench: temp dir {tmp}, cgroup parent {cgroup_parent}")
        rootfs = rt.make_rootfs(tmp / "rootfs")
        if not args.no_docker:
            if shutil.which("dockerd") is None:
                skipped.append("docker: dockerd is not installed (apt-get install docker.io)")
            else:
                tar = tmp / "rootfs.tar"
                subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
                docker = bd.DockerDaemon(tmp, cgroup_parent, args.docker_cli)
                daemons.append(docker)
                log("bench: starting dockerd")
                try:
                    docker.start(tar)
                except BenchError as exc:
                    skipped.append(f"docker: {exc}")
                    docker.stop(problems)
                    daemons.remove(docker)
                    docker = None
        corral = bd.CorralDaemon(tmp, "corral-a", cgroup_parent, rt._corral_command(), corral_env)
        daemons.append(corral)
        log("bench: starting corral daemon")
        corral.start()
        if "1" in args.parts:
            log(f"(1) {args.size:,} bytes to stdout, {args.rounds} rounds")
            result["write"] = part_write(corral, docker, args.size, args.rounds)
        if "2" in args.parts:
            result["tail"] = part_tail(corral, docker, args.lines, args.tail_runs, corral_env)
    except BenchError as exc:
        failed = str(exc)
    finally:
        for d in reversed(daemons):
            d.stop(problems)
        bd.clean_up(tmp, cgroup_parent, problems)
    if failed:
        print(f"bench/logs.py: {failed}", file=sys.stderr)
        for p in problems:
            print(f"bench/logs.py: {p}", file=sys.stderr)
        return 1
    result["environment"] = bd.environment(docker)
    result["environment"]["load average (1/5/15 min) before / after"] = f"{load_before} / {rt._loadavg()}"
    result["skipped"] = skipped
    result["problems"] = problems
    result["wall_s"] = round(time.monotonic() - started, 1)
    rt.write_results(args.results, "logs", result, render_markdown(result))
    print(render_markdown(result))
    print(f"wrote {args.results / 'logs.json'} and {args.results / 'logs.md'} ({result['wall_s']} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
