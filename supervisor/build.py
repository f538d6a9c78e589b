"""``docker build`` on the Engine API: a Dockerfile's steps, each one an image, with a cache.

The classic builder's model (moby ``builder/dockerfile``): every instruction
after FROM makes an image on top of the previous one; instructions that only
change the config make a config-only image (history ``empty_layer``), COPY,
ADD and WORKDIR a layer of the files they write, and RUN a container that
runs to completion and whose upper dir is committed. The file work is
``runtime.build_context`` and ``ImageStore.commit``, in worker threads; RUN
goes through ``Engine.container_create/start/logs/wait/remove``, so a RUN
step is a container like any other (events, cgroup, logs).

Rules:

1. The cache maps (parent image, the instruction after substitution, and for
   COPY/ADD what it copies) to the image the step made
   (``runtime.build_context.BuildCache``, read once per build). What a COPY/ADD
   copies is, from the context, the digest of its sources' entries in the
   context index (``build_context`` rule 4: names, kinds, modes, owners,
   content); from a stage or image (``--from``), that image's id, which fixes
   every byte of it. A hit whose image is gone (rmi) is dropped and the step
   runs. ``no_cache`` skips lookups (the results are still recorded, as Docker's).
2. A RUN step sees the stage's ARG values as environment variables and they
   are part of its cache key; they are not kept in the image (Docker).
3. A failing RUN (non-zero exit, or a command that cannot start) ends the
   build with an error naming the step and the code; its container is removed
   whatever happens, and so are the context and the views.
4. Output items are Docker's JSON messages: ``{"stream": text}`` for the
   ``Step N/M :`` lines, `` ---> Using cache``, `` ---> <id>``, the RUN output;
   ``{"aux": {"ID": id}}`` last. Events: ``tag`` per tag and ``build`` on the image,
   journaled in one transaction.
5. All stages up to ``target`` (the last by default) are built in order, as the
   classic builder does; ``--label`` is one more LABEL step at the end.
6. The context is indexed, never unpacked whole: a tar upload is read once
   from its spool; a directory of this host, which a local client may name
   instead of uploading it (``LocalContext``), is walked with its
   ``.dockerignore``, its files' digests remembered between builds
   (``BuildCache.file_hashes``). Only a COPY/ADD that misses the cache puts
   its sources on disk (``ContextIndex.materialize``). Both ways index a
   context alike, so one's cache serves the other.

Rejected: running RUN steps in a private mount namespace with an overlay of our
own (what BuildKit's runc worker does): the Engine's containers already give
cgroup, namespaces, logs and cleanup, and a build step is visible in ``ps``
and ``events`` like any container.
Rejected: a local context by path alone (as ``image.import`` takes one). The
client also sends the directory's (st_dev, st_ino): a daemon in another mount
namespace that sees another directory at that path says so
(``ContextUnavailable``) and the client uploads a tar instead.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from protocols.container_config import InvalidContainerConfig, resolve_user
from protocols.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    arg_definitions,
    command,
    expand,
    healthcheck,
    key_values,
    parse_dockerfile,
    parse_dockerignore,
    parse_instruction,
    words,
)
from protocols.oci_image import ContainerConfig, ImageFormatError, parse_reference
from runtime import build_context
from runtime.build_context import (
    BUILD_CACHE_FILE,
    BuildCache,
    BuildContextError,
    ContextIndex,
    ContextNotVisible,
    cache_key,
)
from runtime.errors import HostError
from runtime.images import ImageError, ImageNotFound

from .commit import runtime_layer_paths
from .errors import CorralError, InvalidRequest, StartFailed

if TYPE_CHECKING:
    from .engine import Engine

DEFAULT_SHELL = ("/bin/sh", "-c")
# Docker's predefined ARGs: usable without an ARG line, never reported unused.
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                             "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})


class BuildFailed(CorralError):
    """A step failed: the message names the step and why (exit code, missing file, ...)."""

    code = "BAD_REQUEST"


class ContextUnavailable(InvalidRequest):
    """The context directory a client named is not the one the daemon sees there (rule 6);
    ``details`` say so, so the client knows to upload the context as a tar instead."""

    @property
    def details(self) -> dict[str, Any]:
        return {"reason": CONTEXT_UNAVAILABLE}


CONTEXT_UNAVAILABLE = "context_unavailable"      # ContextUnavailable's details["reason"]


@dataclass(frozen=True)
class LocalContext:
    """``image.build``'s ``context`` param: a directory of this host instead of an upload (rule 6).

    Attributes:
        path: absolute, as the client named it.
        device, inode: ``st_dev``/``st_ino`` the client saw there.
        keep: paths (relative to the context) sent whatever ``.dockerignore`` says: the Dockerfile.
    """

    path: str
    device: int
    inode: int
    keep: frozenset[str] = frozenset()

    @classmethod
    def from_param(cls, doc: Any) -> LocalContext:
        """``{"path": str, "device": int, "inode": int, "keep": [str]}`` -> a value.

        Raises:
            InvalidRequest: a field missing or of the wrong type (the message names it).
        """
        if not isinstance(doc, dict):
            raise InvalidRequest("image.build: context must be a map {path, device, inode, keep}")
        path, device, inode, keep = doc.get("path"), doc.get("device"), doc.get("inode"), doc.get("keep", [])
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidRequest(f"image.build: context.path must be an absolute path, not {path!r}")
        for name, value in (("device", device), ("inode", inode)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequest(f"image.build: context.{name} must be a non-negative integer, not {value!r}")
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise InvalidRequest("image.build: context.keep must be a list of paths")
        return cls(path, device, inode, frozenset(keep))


@dataclass
class _State:
    """Where a stage is: its image so far and what the builder keeps beside the config."""

    image_id: str | None                     # None: FROM scratch, nothing made yet
    config: ContainerConfig
    shell: tuple[str, ...] = DEFAULT_SHELL
    args: dict[str, str] = field(default_factory=dict)   # ARGs declared in the stage, with values
    cmd_set: bool = False
    author: str = ""

    def env(self) -> dict[str, str]:
        """What ``$VAR`` sees: the ARGs, then ENV over them (Docker's precedence)."""
        out = dict(self.args)
        for item in self.config.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out


def _short(image_id: str) -> str:
    return image_id.partition(":")[2][:12]


class Builder:
    """One build: its options, its scratch directory, its stages' results."""

    def __init__(self, engine: Engine, dockerfile: Dockerfile, context: ContextIndex, scratch: Path, *,
                 build_args: dict[str, str], no_cache: bool, labels: dict[str, str]) -> None:
        self.engine = engine
        self.df = dockerfile
        self.escape = dockerfile.escape
        self.context = context
        self.scratch = scratch
        self.build_args = build_args
        self.used_args: set[str] = set()
        self.no_cache = no_cache
        self.labels = labels
        self.cache = BuildCache(engine.data_root / BUILD_CACHE_FILE)
        self._entries: dict[str, str] | None = None   # the cache's entries, read once (rule 1)
        self.stages: dict[str, _State] = {}      # by index ("0") and by name
        self._views = 0

    # -- the plan

    async def run(self, target: str | None):
        last = self.df.stage_index(target) if target else len(self.df.stages) - 1
        stages = self.df.stages[:last + 1]
        label_step = None
        if self.labels:
            text = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}".replace("$", "\\$")
                                       for k, v in sorted(self.labels.items()))
            label_step = parse_instruction(text, stages[-1].source.line)
        total = sum(1 + len(s.instructions) for s in stages) + (1 if label_step else 0)
        meta: dict[str, str] = {}
        for inst in self.df.meta_args:
            for name, default in arg_definitions(inst, meta, escape=self.escape):
                meta[name] = self._arg_value(name, default)
        step = 0
        state = None
        for stage in stages:
            step += 1
            yield _out(f"Step {step}/{total} : {stage.source.text}\n")
            state = await self._from(stage.base, meta, stage.source)
            yield _out(f" ---> {_short(state.image_id) if state.image_id else 'scratch'}\n")
            base = await self._image_of(state.image_id) if state.image_id else None
            triggers = list((base.config.extra.get("OnBuild") or []) if base else [])
            if triggers:
                # The child does not inherit its parent's triggers (Docker clears them).
                state.config = replace(state.config, extra={k: v for k, v in state.config.extra.items()
                                                            if k != "OnBuild"})
                yield _out(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
                for text in triggers:
                    trigger = parse_instruction(text, stage.source.line, escape=self.escape)
                    async with aclosing(self._step(trigger, state, f"ONBUILD trigger {text!r}")) as items:
                        async for item in items:
                            yield item
            instructions = list(stage.instructions)
            if label_step is not None and stage is stages[-1]:
                instructions.append(label_step)
            for inst in instructions:
                step += 1
                where = f"Step {step}/{total} : {inst.text}"
                yield _out(where + "\n")
                async with aclosing(self._step(inst, state, where)) as items:
                    async for item in items:
                        yield item
            self.stages[str(stage.index)] = state
            if stage.name:
                self.stages[stage.name] = state
        assert state is not None
        if state.image_id is None:                # FROM scratch and nothing else: an empty image
            state.image_id = (await self._commit(None, None, state, "FROM scratch", key=None)).id
        unused = sorted(set(self.build_args) - self.used_args - PREDEFINED_ARGS)
        if unused:
            yield _out(f"[Warning] One or more build-args {unused} were not consumed\n")
        yield {"aux": {"ID": state.image_id}}

    def _arg_value(self, name: str, default: str | None) -> str | None:
        if name in self.build_args:
            self.used_args.add(name)
            return self.build_args[name]
        return default

    async def _from(self, raw_base: str, meta: dict[str, str], inst: Instruction) -> _State:
        base = expand(raw_base, {k: v for k, v in meta.items() if v is not None}, escape=self.escape)
        if not base:
            raise BuildFailed(f"Dockerfile:{inst.line}: FROM {raw_base}: the base name is empty")
        if base.lower() == "scratch":
            return _State(None, ContainerConfig())
        previous = self.stages.get(base.lower())
        if previous is not None and not base.isdigit():
            return replace(previous, args={}, cmd_set=False)
        try:
            image = await trio.to_thread.run_sync(self.engine.images.get, base)
        except ImageNotFound:
            raise BuildFailed(f"Dockerfile:{inst.line}: FROM {base}: no such image (corral build does not pull; "
                              "pull or load it first)") from None
        except ImageError as exc:
            raise BuildFailed(f"Dockerfile:{inst.line}: FROM {base}: {exc}") from None
        return _State(image.id, image.config)

    async def _image_of(self, image_id: str):
        return await trio.to_thread.run_sync(self.engine.images.get, image_id)

    # -- one step

    async def _step(self, inst: Instruction, state: _State, where: str):
        try:
            async with aclosing(self._dispatch(inst, state)) as items:
                async for item in items:
                    yield item
        except DockerfileError as exc:
            raise BuildFailed(str(exc)) from None
        except BuildFailed as exc:
            if str(exc).startswith("Dockerfile:"):
                raise
            raise BuildFailed(f"{where}: {exc}") from None
        except BuildContextError as exc:
            raise BuildFailed(f"{where}: {inst.keyword} failed: {exc}") from None
        except (ImageError, HostError, OSError) as exc:
            raise BuildFailed(f"{where}: {exc}") from None
        yield _out(f" ---> {_short(state.image_id)}\n")

    async def _dispatch(self, inst: Instruction, state: _State):
        k = inst.keyword
        env = state.env()
        c = state.config
        if k == "RUN":
            async with aclosing(self._run(inst, state)) as items:
                async for item in items:
                    yield item
            return
        if k in ("COPY", "ADD"):
            async with aclosing(self._copy(inst, state, env)) as items:
                async for item in items:
                    yield item
            return
        if k == "WORKDIR":
            path = expand(inst.args, env, escape=self.escape) if inst.args else "/"
            workdir = posixpath.normpath(posixpath.join("/", c.working_dir or "/", path))
            async with aclosing(self._workdir(workdir, state)) as items:
                async for item in items:
                    yield item
            return
        text = inst.text
        if k == "ARG":
            for name, default in arg_definitions(inst, env, escape=self.escape):
                value = self._arg_value(name, default)
                if value is None and name in PREDEFINED_ARGS:
                    continue
                state.args[name] = value if value is not None else ""
            text = "ARG " + json.dumps(sorted(state.args.items()))
        elif k == "ENV":
            pairs = key_values(inst, env, escape=self.escape)
            names = {name for name, _ in pairs}
            kept = [e for e in c.env if e.partition("=")[0] not in names]
            state.config = replace(c, env=tuple(kept + [f"{n}={v}" for n, v in pairs]))
            text = "ENV " + json.dumps(pairs)
        elif k == "LABEL":
            pairs = key_values(inst, env, escape=self.escape)
            state.config = replace(c, labels={**c.labels, **dict(pairs)})
            text = "LABEL " + json.dumps(pairs)
        elif k in ("CMD", "ENTRYPOINT"):
            argv = command(inst, state.shell)
            if k == "CMD":
                state.config = replace(c, cmd=argv)
                state.cmd_set = True
            else:
                # Docker: a new ENTRYPOINT drops an inherited CMD, not one set in this stage.
                state.config = replace(c, entrypoint=argv, cmd=c.cmd if state.cmd_set else None)
            text = f"{k} {json.dumps(list(argv))}"
        elif k == "EXPOSE":
            ports = [p if "/" in p else f"{p}/tcp" for p in words(inst, env, escape=self.escape)]
            state.config = replace(c, exposed_ports=tuple(sorted({*c.exposed_ports, *ports})))
            text = "EXPOSE " + json.dumps(ports)
        elif k == "VOLUME":
            paths = words(inst, env, escape=self.escape)
            state.config = replace(c, volumes=tuple(sorted({*c.volumes, *paths})))
            text = "VOLUME " + json.dumps(paths)
        elif k in ("USER", "STOPSIGNAL", "MAINTAINER"):
            value = expand(inst.args, env, escape=self.escape) if k != "MAINTAINER" else inst.args
            if k == "USER":
                state.config = replace(c, user=value)
            elif k == "STOPSIGNAL":
                state.config = replace(c, stop_signal=value)
            else:
                state.author = value
            text = f"{k} {value}"
        elif k == "HEALTHCHECK":
            state.config = replace(c, extra={**c.extra, "Healthcheck": healthcheck(inst)})
        elif k == "SHELL":
            state.shell = tuple(inst.exec_form or ())
            state.config = replace(c, extra={**c.extra, "Shell": list(state.shell)})
        elif k == "ONBUILD":
            assert inst.trigger is not None
            state.config = replace(c, extra={**c.extra, "OnBuild": [*(c.extra.get("OnBuild") or []),
                                                                    inst.trigger.text]})
        else:
            raise BuildFailed(f"Dockerfile:{inst.line}: {k} is not supported")
        async with aclosing(self._config_only(state, text)) as items:
            async for item in items:
                yield item

    # -- the kinds of steps

    async def _cached(self, key: str):
        """The image a cache entry names, None on a miss; an entry whose image is gone is dropped (rule 1)."""
        if self.no_cache:
            return None
        if self._entries is None:
            self._entries = await trio.to_thread.run_sync(self.cache.load)
        image_id = self._entries.get(key)
        if image_id is None:
            return None
        try:
            return await self._image_of(image_id)
        except (ImageNotFound, ImageError):
            self._entries.pop(key, None)
            await trio.to_thread.run_sync(self.cache.drop, key)
            return None

    def _hit(self, state: _State, image) -> dict[str, Any]:
        state.image_id = image.id
        state.config = image.config
        return _out(" ---> Using cache\n")

    async def _commit(self, layer: Path | None, whiteouts: bool | None, state: _State, created_by: str, *,
                      key: str | None):
        def work():
            return self.engine.images.commit(
                state.image_id, layer, config=state.config, author=state.author,
                whiteouts=bool(whiteouts), exclude=runtime_layer_paths() if whiteouts else frozenset(),
                history={"created_by": created_by, **({"author": state.author} if state.author else {})})

        image = await trio.to_thread.run_sync(work)
        if key is not None:
            await trio.to_thread.run_sync(self.cache.put, key, image.id)
            if self._entries is not None:
                self._entries[key] = image.id
        state.image_id = image.id
        state.config = image.config
        return image

    async def _config_only(self, state: _State, text: str):
        key = cache_key(state.image_id, text)
        hit = await self._cached(key)
        if hit is not None:
            yield self._hit(state, hit)
            return
        await self._commit(None, None, state, f"/bin/sh -c #(nop) {text}", key=key)

    def _view_dir(self) -> Path:
        self._views += 1
        return self.scratch / f"view-{self._views}"

    async def _layers(self, image_id: str | None) -> list[Path]:
        if image_id is None:
            return []
        return (await self._image_of(image_id)).rootfs_layers()

    async def _workdir(self, workdir: str, state: _State):
        state.config = replace(state.config, working_dir=workdir)
        text = f"WORKDIR {workdir}"
        key = cache_key(state.image_id, text)
        hit = await self._cached(key)
        if hit is not None:
            yield self._hit(state, hit)
            return
        layers = await self._layers(state.image_id)
        layer = self.scratch / f"layer-{secrets.token_hex(6)}"

        def make() -> bool:
            layer.mkdir()
            with build_context.open_image_view(layers, self._view_dir()) as view:
                return build_context.ensure_directory(layer, view, workdir)

        try:
            made = await trio.to_thread.run_sync(make)
            await self._commit(layer if made else None, False, state, f"/bin/sh -c #(nop) {text}", key=key)
        finally:
            await trio.to_thread.run_sync(build_context.remove_tree, layer)

    async def _copy(self, inst: Instruction, state: _State, env: dict[str, str]):
        args = words(inst, env, escape=self.escape)
        sources, dest = args[:-1], args[-1]
        if not dest.startswith("/"):
            trailing = dest.endswith("/") or dest in (".", "./")
            dest = posixpath.join(state.config.working_dir or "/", dest)
            if trailing and not dest.endswith("/"):
                dest += "/"
        from_flag = inst.flags.get("from")
        from_image = None
        if from_flag is not None:
            source_state = self.stages.get(from_flag.lower())
            if source_state is not None:
                from_image = source_state.image_id
            else:
                try:
                    from_image = (await self._image_of(from_flag)).id
                except (ImageNotFound, ImageError):
                    raise BuildFailed(f"Dockerfile:{inst.line}: {inst.keyword} --from={from_flag}: no such stage "
                                      "or image") from None
        owner_text = inst.flags.get("chown")
        mode_text = inst.flags.get("chmod")
        mode = None
        if mode_text:
            try:
                mode = int(mode_text, 8)
            except ValueError:
                raise BuildFailed(f"Dockerfile:{inst.line}: --chmod={mode_text}: not an octal mode") from None
        text = f"{inst.keyword} {json.dumps([inst.flags, sources, dest], sort_keys=True)}"
        entries: list[list[str]] = []
        if from_flag is None:
            def find() -> tuple[list[list[str]], str]:
                found = self.context.resolve_sources(sources)
                return found, self.context.digest(found)

            entries, digest = await trio.to_thread.run_sync(find)
            content = f"context {digest}"
        else:
            # The image id fixes every byte of the stage, so it stands for what is copied (rule 1).
            content = f"stage {from_image or 'scratch'}"
        key = cache_key(state.image_id, text, content)
        hit = await self._cached(key)
        if hit is not None:
            yield self._hit(state, hit)
            return
        layers = await self._layers(state.image_id)
        from_layers = await self._layers(from_image) if from_flag is not None else None
        layer = self.scratch / f"layer-{secrets.token_hex(6)}"
        several = len(sources) > 1 or any(ch in s for s in sources for ch in "*?[")

        def copy_from(root: Path, found: list[list[str]]) -> None:
            layer.mkdir()
            with build_context.open_image_view(layers, self._view_dir()) as view:
                owner = None
                if owner_text:
                    owner = _owner(owner_text, build_context.read_file(view, "/etc/passwd"),
                                   build_context.read_file(view, "/etc/group"), inst)
                build_context.copy_sources(root, found, dest, layer, view, owner=owner, mode=mode,
                                           extract_archives=inst.keyword == "ADD", several=several)

        def copy() -> None:
            if from_layers is None:
                # Only now, on a miss, do the sources reach the disk (rule 6).
                copy_from(self.context.materialize(entries, self.scratch / "context"), entries)
                return
            with build_context.open_image_view(from_layers, self._view_dir()) as root:
                copy_from(root, build_context.resolve_sources(root, sources))

        try:
            await trio.to_thread.run_sync(copy)
            await self._commit(layer, False, state, f"/bin/sh -c #(nop) {inst.keyword} {content} in {dest}",
                               key=key)
        finally:
            await trio.to_thread.run_sync(build_context.remove_tree, layer)

    async def _run(self, inst: Instruction, state: _State):
        argv = list(command(inst, state.shell))
        args_env = [f"{k}={v}" for k, v in sorted(state.args.items())]
        text = f"RUN {json.dumps(args_env)} {json.dumps(argv)}"
        key = cache_key(state.image_id, text)
        hit = await self._cached(key)
        if hit is not None:
            yield self._hit(state, hit)
            return
        if state.image_id is None:
            raise BuildFailed(f"Dockerfile:{inst.line}: RUN in an empty image (FROM scratch): nothing to run")
        # ARGs go in as environment (rule 2); the image's own ENV is merged by create.
        body = {"Image": state.image_id, "Entrypoint": [], "Cmd": argv, "Env": args_env,
                "WorkingDir": state.config.working_dir, "User": state.config.user,
                "Healthcheck": {"Test": ["NONE"]}, "Labels": {"corral.build": "run"}}
        engine = self.engine
        created = await engine.container_create(body)
        cid = created["Id"]
        try:
            yield _out(f" ---> Running in {cid[:12]}\n")
            try:
                await engine.container_start(cid)
            except StartFailed as exc:
                raise BuildFailed(f"The command '{' '.join(argv)}' could not be run: {exc} "
                                  f"(exit code {exc.exit_code})") from None
            async with aclosing(engine.container_logs(cid, follow=True)) as batches:
                async for batch in batches:
                    text_out = "".join(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                                       for _, data in batch)
                    if text_out:
                        yield _out(text_out)
            status = (await engine.container_wait(cid))["StatusCode"]
            if status != 0:
                raise BuildFailed(f"The command '{' '.join(argv)}' returned a non-zero code: {status}")
            upper = Path(engine.container_inspect(cid)["GraphDriver"]["Data"]["UpperDir"])
            await self._commit(upper, True, state, " ".join(argv), key=key)
        finally:
            with trio.CancelScope(shield=True):
                await engine.container_remove(cid, force=True, volumes=True)
        yield _out(f"Removing intermediate container {cid[:12]}\n")


def _out(text: str) -> dict[str, Any]:
    return {"stream": text}


def _owner(text: str, passwd: str, group: str, inst: Instruction) -> tuple[int, int]:
    """``--chown=user[:group]`` against the image's files; a user alone gives its number as the group too."""
    user, sep, _ = text.partition(":")
    try:
        uid, gid, _ = resolve_user(text if sep else user, passwd, group)
    except InvalidContainerConfig as exc:
        raise BuildFailed(f"Dockerfile:{inst.line}: --chown={text}: {exc}") from None
    if not sep:
        gid = uid if user.isdigit() else gid
    return uid, gid


async def build_image(engine: Engine, transfer: str | None, dockerfile: str, *, context: Any = None,
                      tags: list[str] | None = None, build_args: dict[str, str] | None = None,
                      target: str | None = None, no_cache: bool = False, labels: dict[str, str] | None = None):
    """docker build (POST /build): the context built by ``dockerfile``; yields output items.

    Args:
        transfer: an upload (``transfer.write``) holding the context as a tar, with
            ``.dockerignore`` applied by the client; or None with ``context``.
        context: a directory of this host instead (``LocalContext.from_param``), whose
            ``.dockerignore`` the daemon applies.
        dockerfile: the Dockerfile's text.
        tags: ``name[:tag]`` to give the result.

    Raises:
        InvalidRequest: a Dockerfile error (``Dockerfile:<line>: ...``), a bad tag, context
            or ``.dockerignore``; ContextUnavailable: ``context`` is not the client's directory;
        BuildFailed: a step failed (the message names it).
    """
    tags = list(tags or [])
    for tag in tags:
        try:
            parse_reference(tag)
        except ImageFormatError as exc:
            raise InvalidRequest(f"invalid tag {tag!r}: {exc}") from None
    if (transfer is None) == (context is None):
        raise InvalidRequest("image.build: send the context either as an upload (transfer) or as a directory "
                             "of the daemon's host (context), one of the two")
    local = LocalContext.from_param(context) if context is not None else None
    try:
        df = parse_dockerfile(dockerfile)
        if target:
            df.stage_index(target)
    except DockerfileError as exc:
        raise InvalidRequest(str(exc)) from None
    index = await _open_context(engine, transfer, local)
    scratch = engine.images.tmp / f"build-{secrets.token_hex(8)}"
    try:
        await trio.to_thread.run_sync(lambda: scratch.mkdir(parents=True, mode=0o700))
        builder = Builder(engine, df, index, scratch, build_args=dict(build_args or {}), no_cache=no_cache,
                          labels=dict(labels or {}))
        image_id = None
        try:
            async with aclosing(builder.run(target)) as items:
                async for item in items:
                    if "aux" in item:
                        image_id = item["aux"]["ID"]
                    yield item
        except DockerfileError as exc:
            raise BuildFailed(str(exc)) from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(index.close)
            await trio.to_thread.run_sync(build_context.remove_tree, scratch)
    assert image_id is not None
    yield _out(f"Successfully built {_short(image_id)}\n")
    familiar = [parse_reference(tag).familiar for tag in tags]
    done: list[str] = []

    def tag_all() -> None:
        for tag, name in zip(tags, familiar):
            engine.images.tag(image_id, tag)
            done.append(name)

    try:
        await trio.to_thread.run_sync(tag_all)
    except ImageError as exc:
        if done:
            await engine.bus.publish_many([("image", "tag", image_id, {"name": name}) for name in done])
        raise InvalidRequest(str(exc)) from None
    # One journal transaction (one flush) for the tag events and the build event.
    await engine.bus.publish_many([*(("image", "tag", image_id, {"name": name}) for name in done),
                                   ("image", "build", image_id, {"name": familiar[0] if familiar else image_id})])
    for name in done:
        yield _out(f"Successfully tagged {name}\n")


async def _open_context(engine: Engine, transfer: str | None, local: LocalContext | None) -> ContextIndex:
    """The context's index (rule 6): the upload's tar read once, or the local directory walked."""
    if local is None:
        assert transfer is not None
        source = engine.files.take_upload(transfer)
        try:
            return await trio.to_thread.run_sync(
                lambda: build_context.index_tar(source, spool_dir=engine.files.spool_dir))
        except BuildContextError as exc:
            raise InvalidRequest(str(exc)) from None

    def walk() -> ContextIndex:
        hashes = BuildCache(engine.data_root / BUILD_CACHE_FILE).file_hashes(local.path)
        return build_context.index_directory(local.path, parse_ignore=parse_dockerignore,
                                             identity=(local.device, local.inode), keep=local.keep, hashes=hashes)

    try:
        return await trio.to_thread.run_sync(walk)
    except ContextNotVisible as exc:
        raise ContextUnavailable(str(exc)) from None
    except DockerfileError as exc:
        raise InvalidRequest(f"{local.path}/.dockerignore: {exc}") from None
    except BuildContextError as exc:
        raise InvalidRequest(str(exc)) from None


__all__ = ["CONTEXT_UNAVAILABLE", "BuildFailed", "Builder", "ContextUnavailable", "LocalContext", "build_image"]
