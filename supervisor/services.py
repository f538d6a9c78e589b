"""The services file: a Compose project that the daemon keeps as its file says.

``up`` brings the project's containers to the file: services in dependency
layers (a layer starts in parallel), a container recreated when its service's
config hash changed, started when it is not running, and containers of
services no longer in the file stopped and removed. ``down`` removes them all.
Containers carry Compose's labels (project, service, config-hash), so what
runs is found from the Engine alone: no state of our own to drift.

Conditions: ``service_started`` holds once the dependency's layer started;
``service_healthy`` waits until the dependency's health check says healthy
(supervisor/health.py) and fails the dependents when it says unhealthy, the
dependency stops, or it has no health check (Compose's errors);
``service_completed_successfully`` waits for the dependency to exit 0 and
fails the dependents otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from protocols.compose import (
    ComposeError, ComposeProject, Service, normalize_project_name, parse_compose, referenced_env_files, start_order,
)

from .engine import Engine
from .errors import CorralError, InvalidRequest

log = logging.getLogger("corral.services")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HASH_LABEL = "com.docker.compose.config-hash"


class ServiceManager:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = trio.Lock()          # one up/down at a time: SIGHUP and `corral up` may race

    async def containers_of(self, project: str) -> dict[str, dict[str, Any]]:
        """service name -> the container summary of that service in ``project``."""
        return {c["Labels"][SERVICE_LABEL]: c for c in await self.engine.container_list(all=True)
                if c["Labels"].get(PROJECT_LABEL) == project and SERVICE_LABEL in c["Labels"]}

    async def up(self, project: ComposeProject) -> list[str]:
        """Make the running containers match ``project``; returns what was done, one line each."""
        async with self._lock:
            done: list[str] = []
            for volume in project.volumes.values():
                if not volume.get("External"):
                    await self.engine.volume_create(volume["Name"], labels=volume.get("Labels"))
            existing = await self.containers_of(project.name)
            for name, summary in existing.items():
                if name not in project.services:
                    await self.engine.container_remove(summary["Id"], force=True)
                    done.append(f"removed {name}")
            for layer in start_order(project):
                errors: list[str] = []
                async with trio.open_nursery() as nursery:
                    for name in layer:
                        nursery.start_soon(self._up_one, project, project.services[name], existing.get(name),
                                           done, errors)
                if errors:
                    raise InvalidRequest("; ".join(errors))
            return done

    async def _up_one(self, project: ComposeProject, svc: Service, current: dict[str, Any] | None,
                      done: list[str], errors: list[str]) -> None:
        try:
            await self._wait_for_dependencies(project, svc)
            if current is not None and current["Labels"].get(HASH_LABEL) != svc.config_hash:
                await self.engine.container_remove(current["Id"], force=True)
                done.append(f"recreated {svc.name}")
                current = None
            if current is None:
                created = await self.engine.container_create(svc.create_body, name=svc.container_name)
                cid = created["Id"]
            else:
                cid = current["Id"]
            if await self.engine.container_start(cid):
                done.append(f"started {svc.name}")
        except CorralError as exc:
            log.warning("service %s: %s", svc.name, exc)
            errors.append(f"service {svc.name}: {exc}")

    async def _wait_for_dependencies(self, project: ComposeProject, svc: Service) -> None:
        for dependency, condition in svc.depends_on.items():
            name = project.services[dependency].container_name
            if condition == "service_healthy":
                await self.engine.health.wait_healthy(name)
                continue
            if condition != "service_completed_successfully":
                continue                  # started: its layer came first
            result = await self.engine.container_wait(name)
            if result["StatusCode"] != 0:
                raise InvalidRequest(f"dependency {dependency} exited with status {result['StatusCode']}, "
                                     f"not 0 (service_completed_successfully)")

    async def down(self, project_name: str) -> list[str]:
        async with self._lock:
            done = []
            for name, summary in (await self.containers_of(project_name)).items():
                await self.engine.container_remove(summary["Id"], force=True)
                done.append(f"removed {name}")
            return done


def parse_project(text: str, *, base_dir: str, env_files: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None, project: str | None = None) -> ComposeProject:
    """A services file's text -> its project; the project name defaults to its directory's."""
    try:
        return parse_compose(text, project=project or normalize_project_name(os.path.basename(base_dir)),
                             base_dir=base_dir, env_files=env_files or {}, environ=environ or {})
    except ComposeError as exc:
        raise InvalidRequest(f"services file: {exc}") from None


def read_project(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """Read a services file and the env files it names (blocking: a worker thread, or the CLI).

    Returns the keyword arguments of ``parse_project``, ready to send over RPC.

    Raises:
        InvalidRequest: a file cannot be read, or the file is malformed (named).
    """
    path = path.resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read services file {path}: {exc.strerror}") from None
    base_dir = str(path.parent)
    try:
        wanted = referenced_env_files(text, base_dir=base_dir, environ=environ)
    except ComposeError as exc:
        raise InvalidRequest(f"services file {path}: {exc}") from None
    env_files = {}
    for name in wanted:
        try:
            env_files[name] = Path(name).read_text()
        except OSError as exc:
            raise InvalidRequest(f"services file {path}: env_file {name}: {exc.strerror}") from None
    return {"text": text, "base_dir": base_dir, "env_files": env_files, "environ": dict(environ)}
