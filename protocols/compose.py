"""The Compose services file, the subset that fits one host: text -> create bodies and a plan. Pure.

``parse_compose`` turns a ``compose.yaml`` into one Docker create body per
service (Config at the top level, ``HostConfig`` inside, which is what the
Engine takes, see ``container_config``), the named volumes to create, and the
dependencies between services. ``start_order`` layers the services by
``depends_on``; ``diff`` compares two parses by config hash, which is what
``corral up`` and SIGHUP do. The caller reads the files: this module takes the
YAML text, the ``env_file`` contents and the environment as plain values.

Rules:

1. Every key we accept is honoured. A key we cannot honour on one host
   (``ports``, ``networks``, ``build``, ``deploy.replicas`` ...) is an error that
   names its path, never silently dropped: a file that parses here means what
   it says. ``x-*`` extension keys are ignored, at the top level and in a
   service, as the Compose spec allows.
2. Every error is a ``ComposeError`` whose message begins with the path of
   the value at fault (``services.web.volumes[1]: ...``); YAML errors say the
   line and column. No ``yaml`` exception escapes.
3. Interpolation happens first, on every string value of the document (never
   on keys), with Compose's forms: ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
   ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``,
   ``${VAR+alt}``, and ``$$`` for a literal ``$``. A ``$`` followed by anything
   else stays as it is (compose-go's pattern does not match it). An unset
   variable without a default becomes "" with a warning, as Compose does.
4. Where Compose is stricter than PyYAML, we follow Compose: booleans are
   YAML 1.2's ``true``/``false`` only (so ``restart: no`` is the string "no",
   not False), and a key repeated in one mapping is an error.
5. Input is bounded: ``max_bytes`` of text, and a budget of values after
   alias expansion, because ``safe_load`` is safe from code but not from a
   "billion laughs" document whose aliases expand to 10**9 nodes.

Rejected designs:

- Validating with Compose's JSON schema: it needs a jsonschema dependency,
  accepts keys we cannot honour, and its errors name schema paths rather
  than what the user wrote.
- Hashing the YAML text of a service for ``config-hash``: reformatting the
  file or moving ``environment`` from list to mapping would recreate
  containers. We hash the create body we built instead, so only a change the
  container would see (including an ``env_file``'s contents or an
  interpolated variable) recreates it; ``depends_on`` is left out, as
  Compose's own ``ServiceHash`` leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import units
from .container_config import InvalidContainerConfig, parse_bytes, parse_cpus
from .errors import RemoteProtocolError

__all__ = [
    "CONDITIONS",
    "SERVICE_COMPLETED_SUCCESSFULLY",
    "SERVICE_HEALTHY",
    "SERVICE_STARTED",
    "ComposeError",
    "ComposeProject",
    "Plan",
    "Service",
    "diff",
    "interpolate",
    "normalize_project_name",
    "parse_compose",
    "parse_duration_ns",
    "parse_env_file",
    "referenced_env_files",
    "start_order",
]

MAX_BYTES = 1 << 20
# After alias expansion; a large real file has a few thousand values.
MAX_VALUES = 100_000
MAX_DEPTH = 64

SERVICE_STARTED = "service_started"
SERVICE_HEALTHY = "service_healthy"
SERVICE_COMPLETED_SUCCESSFULLY = "service_completed_successfully"
CONDITIONS = frozenset({SERVICE_STARTED, SERVICE_HEALTHY, SERVICE_COMPLETED_SUCCESSFULLY})

# Compose v2's own labels; `docker compose ps` and our reload find containers by them.
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_CONFIG_HASH = "com.docker.compose.config-hash"
LABEL_CONTAINER_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"
LABEL_VOLUME = "com.docker.compose.volume"

_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")               # compose-go's project name
_SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")         # it becomes part of a container name
_CONTAINER_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")     # moby's validContainerNamePattern
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")          # moby's volume name pattern
_VAR_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_ENV_KEY = re.compile(r"^[^\s=]+$")
_BIND_MODES = frozenset({"ro", "rw", "z", "Z", "rprivate", "private", "rslave", "slave", "rshared", "shared"})
_TOP_LEVEL = frozenset({"version", "name", "services", "volumes"})

_SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "restart", "depends_on", "healthcheck",
    "mem_limit", "memswap_limit", "cpus", "pids_limit", "deploy", "volumes", "tmpfs", "labels",
    "stop_signal", "stop_grace_period", "working_dir", "user", "hostname", "container_name",
    "privileged", "read_only",
})


class ComposeError(RemoteProtocolError):
    """A Compose file we cannot honour; the message begins with the path of the value at fault."""


@dataclass(frozen=True)
class Service:
    """One service, ready for the Engine.

    Attributes:
        name: the key under ``services``.
        container_name: ``container_name`` or Compose v2's ``<project>-<service>-1``.
        create_body: Docker's container create body (``HostConfig`` inside); named
            volumes in ``HostConfig.Binds`` carry their full name (``<project>_<vol>``)
            for the Engine to resolve to a directory.
        depends_on: service name -> one of ``CONDITIONS``.
        config_hash: sha256 (hex) of the canonical create body and container name;
            also in ``Labels["com.docker.compose.config-hash"]``.
    """

    name: str
    container_name: str
    create_body: dict[str, Any]
    depends_on: dict[str, str]
    config_hash: str


@dataclass(frozen=True)
class ComposeProject:
    """A parsed Compose file.

    Attributes:
        name: the project name (the file's ``name`` wins over the caller's).
        services: by service name, in file order.
        volumes: by key under the top-level ``volumes``: Docker's volume create
            body (``Name``, ``Driver``, ``Labels``) plus ``External``: True for a
            volume that must already exist and is never created or removed by us.
        warnings: unset variables and the like, once each, for the user to see.
    """

    name: str
    services: dict[str, Service]
    volumes: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """What to do to go from one parse to the next.

    ``create``, ``recreate`` and ``unchanged`` are in start order; ``remove`` is in
    reverse start order of the old project, so dependents stop first.
    """

    create: list[str]
    recreate: list[str]
    remove: list[str]
    unchanged: list[str]


# -- YAML -----------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, repeated keys refused (Rule 4) and a nesting bound.

    The bound is counted while nodes are composed, so a deep document stops at
    MAX_DEPTH levels, whatever the interpreter's recursion limit and stack are
    (a RecursionError is only the last resort).
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposeError(f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                                   f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Checked before SafeConstructor flattens `<<` merges, because a key given
        # explicitly next to a merge legitimately overrides the merged one.
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _load_yaml(text: str, max_bytes: int) -> Any:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ComposeError(f"compose file of {size} bytes exceeds the limit of {max_bytes}")
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ComposeError(f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise ComposeError("invalid YAML: nested too deeply") from None


# -- interpolation ----------------------------------------------------------------------------------

Lookup = Callable[[str], "str | None"]


def interpolate(text: str, lookup: Lookup, *, where: str = "value", warnings: list[str] | None = None) -> str:
    """Substitute variables in one string, by Compose's rules (module Rule 3).

    Args:
        text: the string as written.
        lookup: variable name -> value, or None when unset.
        where: the path named in errors.
        warnings: unset variables are reported here, once each.

    Returns:
        The string with every ``$`` form replaced.

    Raises:
        ComposeError: an invalid ``${...}`` form, or ``${VAR:?msg}`` with VAR unset.
    """
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        following = text[j + 1:j + 2]
        if following == "$":
            out.append("$")
            i = j + 2
        elif following == "{":
            value, i = _braced(text, j, lookup, where, warnings)
            out.append(value)
        elif m := _VAR_NAME.match(text, j + 1):
            out.append(_get(m.group(), lookup, warnings))
            i = m.end()
        else:
            out.append("$")
            i = j + 1


def _braced(text: str, start: int, lookup: Lookup, where: str, warnings: list[str] | None) -> tuple[str, int]:
    """``${...}`` starting at ``text[start]``; returns (value, index after the closing brace)."""
    def invalid() -> ComposeError:
        return ComposeError(f"{where}: invalid interpolation format {text!r}")

    m = _VAR_NAME.match(text, start + 2)
    if not m:
        raise invalid()
    name, k = m.group(), m.end()
    if text[k:k + 1] == "}":
        return _get(name, lookup, warnings), k + 1
    op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if text.startswith(o, k)), None)
    if op is None:
        raise invalid()
    # The argument runs to the matching brace: it may hold ${...} of its own
    # (compose-go v2 nests), and `$$` never opens one.
    depth = 0
    arg_start = p = k + len(op)
    while p < len(text):
        if text.startswith("$$", p):
            p += 2
            continue
        if text.startswith("${", p):
            depth += 1
            p += 2
            continue
        if text[p] == "}":
            if depth == 0:
                break
            depth -= 1
        p += 1
    else:
        raise invalid()
    arg, end = text[arg_start:p], p + 1
    value = lookup(name)
    is_set, non_empty = value is not None, bool(value)
    # `:` makes an empty value count as unset, as in POSIX sh.
    present = non_empty if op.startswith(":") else is_set
    kind = op[-1]
    if kind == "-":
        return (value if present else interpolate(arg, lookup, where=where, warnings=warnings)), end
    if kind == "+":
        return (interpolate(arg, lookup, where=where, warnings=warnings) if present else ""), end
    if not present:   # "?"
        detail = interpolate(arg, lookup, where=where, warnings=warnings)
        raise ComposeError(f"{where}: required variable {name} is missing a value" + (f": {detail}" if detail else ""))
    return value or "", end


def _get(name: str, lookup: Lookup, warnings: list[str] | None) -> str:
    value = lookup(name)
    if value is None:
        if warnings is not None:
            message = f'the "{name}" variable is not set, defaulting to a blank string'
            if message not in warnings:
                warnings.append(message)
        return ""
    return value


class _Walk:
    """Interpolates every string of the document, within the value and depth budget (Rule 5)."""

    def __init__(self, environ: Mapping[str, str], warnings: list[str]) -> None:
        self._lookup = environ.get
        self._warnings = warnings
        self._left = MAX_VALUES

    def __call__(self, value: Any, where: str, depth: int = 0) -> Any:
        self._left -= 1
        if self._left < 0:
            raise ComposeError(f"compose file expands to more than {MAX_VALUES} values (YAML aliases?)")
        if depth > MAX_DEPTH:
            raise ComposeError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, str):
            return interpolate(value, self._lookup, where=where, warnings=self._warnings)
        if isinstance(value, list):
            return [self(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for key, v in value.items():
                if not isinstance(key, str):
                    raise ComposeError(f"{where}: key {key!r} must be a string")
                out[key] = self(v, _join(where, key), depth + 1)
            return out
        return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- env files ---------------------------------------------------------------------------------------


def parse_env_file(text: str, *, lookup: Lookup = lambda _: None, where: str = "env_file",
                   warnings: list[str] | None = None) -> dict[str, str]:
    """An ``env_file``: ``KEY=VALUE`` lines, the dotenv subset Compose documents.

    ``#`` starts a comment line, and in an unquoted value a comment after
    whitespace; ``export`` before a key is ignored; ``'single'`` quotes are
    literal; ``"double"`` quotes take ``\\n``, ``\\t``, ``\\"``, ``\\\\`` escapes.
    Unquoted and double-quoted values are interpolated. A line with a key only
    takes the variable from ``lookup`` and is left out when it is unset.

    Args:
        text: the file's contents.
        lookup: the environment of `corral up`.
        where: the path named in errors (the file's name).
        warnings: unset variables are reported here.

    Returns:
        Keys to values, in file order; a later line overrides an earlier one.

    Raises:
        ComposeError: a line that is not ``KEY=VALUE`` or ``KEY``; an unterminated quote.
    """
    env: dict[str, str] = {}

    # SPEC: a variable inside the file resolves against the environment first,
    # then against lines above it (our reading of compose-go's dotenv lookup).
    def scoped(name: str) -> str | None:
        value = lookup(name)
        return env.get(name) if value is None else value

    for number, line in enumerate(text.splitlines(), start=1):
        here = f"{where}:{number}"
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export"):].lstrip()
        key, sep, raw = line.partition("=")
        key = key.strip()
        if not _ENV_KEY.match(key):
            raise ComposeError(f"{here}: invalid variable name {key!r}")
        if not sep:
            value = lookup(key)
            if value is not None:
                env[key] = value
            continue
        raw = raw.strip()
        if raw[:1] == "'":
            close = raw.find("'", 1)
            if close < 0:
                raise ComposeError(f"{here}: unterminated single quote")
            _only_comment(raw[close + 1:], here)
            env[key] = raw[1:close]
        elif raw[:1] == '"':
            value, rest = _double_quoted(raw, here)
            _only_comment(rest, here)
            env[key] = interpolate(value, scoped, where=here, warnings=warnings)
        else:
            raw = re.split(r"\s#", raw, maxsplit=1)[0].rstrip()
            env[key] = interpolate(raw, scoped, where=here, warnings=warnings)
    return env


def _double_quoted(raw: str, where: str) -> tuple[str, str]:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    out, i = [], 1
    while i < len(raw):
        c = raw[i]
        if c == "\\" and raw[i + 1:i + 2] in escapes:
            out.append(escapes[raw[i + 1]])
            i += 2
        elif c == '"':
            return "".join(out), raw[i + 1:]
        else:
            out.append(c)
            i += 1
    raise ComposeError(f"{where}: unterminated double quote")


def _only_comment(rest: str, where: str) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ComposeError(f"{where}: unexpected {rest!r} after the quoted value")


# -- small parsers ----------------------------------------------------------------------------------


def parse_duration_ns(value: Any, *, where: str = "duration") -> int:
    """A Compose duration (Go's ``time.ParseDuration``, ``units.parse_duration_ns``) in nanoseconds.

    Raises:
        ComposeError: not a duration string.
    """
    if not isinstance(value, str):
        raise ComposeError(f"{where}: must be a duration string like '10s' or '1m30s', got {_kind(value)}")
    try:
        return units.parse_duration_ns(value, where=where)
    except ValueError as exc:
        raise ComposeError(str(exc)) from None


def normalize_project_name(text: str) -> str:
    """A directory name -> a project name: lower-cased, characters outside ``[a-z0-9_-]`` dropped.

    That is what Compose does with the directory it runs in; a ``name`` written
    in the file is checked instead, not rewritten.
    """
    name = re.sub(r"[^a-z0-9_-]", "", text.lower())
    return name.lstrip("_-")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ComposeError(f"{where}: must be a string, got {_kind(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    # Interpolated booleans arrive as text ("privileged: ${PRIV:-false}"); compose-go casts them.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ComposeError(f"{where}: must be true or false, got {_kind(value)}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ComposeError(f"{where}: must be an integer, got {_kind(value)}")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ComposeError(f"{where}: must be a mapping, got {_kind(value)}")
    return value


def _only(spec: dict[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    for key in spec:
        if key not in allowed and not key.startswith("x-"):
            raise ComposeError(f"{where}: unsupported key {key!r}")


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ComposeError(f"{where}: must be a list of strings, got {_kind(value)}")
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _command(value: Any, where: str) -> list[str] | None:
    """``command``/``entrypoint``: a string is split as a POSIX shell would, without running one."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ComposeError(f"{where}: cannot split {value!r}: {exc}") from None
    return _string_list(value, where)


def _scalar_text(value: Any, where: str) -> str | None:
    """A value of ``environment``/``labels`` mapping: numbers and booleans as text, null as None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise ComposeError(f"{where}: must be a string, number, boolean or null, got {_kind(value)}")


def _list_or_dict(value: Any, where: str) -> dict[str, str | None]:
    """Compose's ``list_or_dict``: ["K=V", "K"] or {K: V}; a key without a value maps to None."""
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for key, v in value.items():
            out[key] = _scalar_text(v, _join(where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            key, sep, v = _str(item, f"{where}[{i}]").partition("=")
            if not key:
                raise ComposeError(f"{where}[{i}]: invalid entry {item!r} (use KEY=VALUE)")
            out[key] = v if sep else None
    else:
        raise ComposeError(f"{where}: must be a list or a mapping, got {_kind(value)}")
    return out


def _bytes(value: Any, where: str, *, allow_unlimited: bool = False) -> int:
    if allow_unlimited and value in (-1, "-1"):
        return -1
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ComposeError(f"{where}: must be a size like '512m', got {_kind(value)}")
    try:
        size = parse_bytes(value, field=where)
    except InvalidContainerConfig as exc:
        raise ComposeError(str(exc)) from None
    if size < 0:
        raise ComposeError(f"{where}: must not be negative")
    return size


def _nano_cpus(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ComposeError(f"{where}: must be a number of CPUs, got {_kind(value)}")
    try:
        return parse_cpus(str(value))
    except InvalidContainerConfig:
        raise ComposeError(f"{where}: invalid value {value!r} (use a positive number of CPUs, e.g. 0.5)") from None


def _resolve_path(path: str, base_dir: str, environ: Mapping[str, str], where: str) -> str:
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME")
        if not home:
            raise ComposeError(f"{where}: cannot expand {path!r}: HOME is not set")
        path = home + path[1:]
    return posixpath.normpath(posixpath.join(base_dir, path))


# -- the document -----------------------------------------------------------------------------------


def _document(text: str, *, environ: Mapping[str, str], max_bytes: int, warnings: list[str]) -> dict[str, Any]:
    doc = _load_yaml(text, max_bytes)
    if doc is None:
        raise ComposeError("services: required (the file is empty)")
    doc = _mapping(doc, "compose file")
    try:
        doc = _Walk(environ, warnings)(doc, "")
    except RecursionError:
        raise ComposeError("compose file: nested too deeply") from None
    for key in doc:
        if key not in _TOP_LEVEL and not key.startswith("x-"):
            raise ComposeError(f"compose file: unsupported top-level key {key!r} "
                               "(corral runs services and named volumes only)")
    if "services" not in doc:
        raise ComposeError("services: required")
    services = _mapping(doc["services"], "services")
    for name, spec in services.items():
        if not _SERVICE_NAME.match(name):
            raise ComposeError(f"services.{name}: invalid service name (use letters, digits, '_', '.', '-')")
        _mapping(spec, f"services.{name}")
    return doc


def _env_file_entries(spec: dict[str, Any], where: str, base_dir: str,
                      environ: Mapping[str, str]) -> list[tuple[str, bool, str]]:
    """(resolved path, required, path of the entry) for each ``env_file`` entry."""
    value = spec.get("env_file")
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ComposeError(f"{where}: must be a string or a list, got {_kind(value)}")
    out = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]" if isinstance(value, list) else where
        required = True
        if isinstance(item, dict):   # Compose 2.24's long form
            _only(item, {"path", "required"}, here)
            if "path" not in item:
                raise ComposeError(f"{here}.path: required")
            required = _bool(item.get("required", True), f"{here}.required")
            item = item["path"]
        path = _str(item, here)
        out.append((_resolve_path(path, base_dir, environ, here), required, here))
    return out


def referenced_env_files(text: str, *, base_dir: str, environ: Mapping[str, str] | None = None,
                         max_bytes: int = MAX_BYTES) -> list[str]:
    """The ``env_file`` paths a Compose file names, resolved, for the caller to read first.

    Args:
        text, base_dir, environ, max_bytes: as for ``parse_compose``.

    Returns:
        Absolute paths, each once, in file order: the keys ``parse_compose``
        looks up in ``env_files``.

    Raises:
        ComposeError: the file is too malformed to find them.
    """
    if not posixpath.isabs(base_dir):
        raise ValueError(f"base_dir must be absolute, got {base_dir!r}")
    environ = environ or {}
    doc = _document(text, environ=environ, max_bytes=max_bytes, warnings=[])
    paths: list[str] = []
    for name, spec in doc["services"].items():
        for path, _, _ in _env_file_entries(spec, f"services.{name}.env_file", base_dir, environ):
            if path not in paths:
                paths.append(path)
    return paths


def parse_compose(text: str, *, project: str, base_dir: str, env_files: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None, max_bytes: int = MAX_BYTES) -> ComposeProject:
    """Parse a Compose file into create bodies, volumes and dependencies.

    Args:
        text: the YAML text.
        project: the project name when the file has no ``name`` (see
            ``normalize_project_name`` for one taken from a directory).
        base_dir: absolute directory that relative paths (binds, ``env_file``) are relative to:
            the file's directory.
        env_files: contents of the env files, keyed by resolved absolute path
            (``referenced_env_files`` lists them); a file the caller found missing is
            simply absent.
        environ: variables for interpolation and for ``environment`` keys given
            without a value; default empty.
        max_bytes: a larger text is refused before parsing.

    Returns:
        The project; its ``warnings`` name unset variables.

    Raises:
        ComposeError: the message begins with the path of the value at fault.
        ValueError: ``base_dir`` is not absolute (a caller's bug, not the file's).
    """
    if not posixpath.isabs(base_dir):
        raise ValueError(f"base_dir must be absolute, got {base_dir!r}")
    environ = environ or {}
    env_files = env_files or {}
    warnings: list[str] = []
    doc = _document(text, environ=environ, max_bytes=max_bytes, warnings=warnings)

    if "version" in doc:
        warnings.append("the attribute 'version' is obsolete and is ignored")
    name = _str(doc["name"], "name") if doc.get("name") is not None else project
    if not _PROJECT_NAME.match(name):
        raise ComposeError(f"name: invalid project name {name!r} (use lower-case letters, digits, '_' and '-', "
                           "starting with a letter or digit)")

    volumes = _volumes(doc.get("volumes"), name)
    ctx = _Context(project=name, base_dir=base_dir, environ=environ, env_files=env_files, volumes=volumes,
                   warnings=warnings)
    services = {svc: _service(svc, spec, ctx) for svc, spec in doc["services"].items()}

    owners: dict[str, str] = {}
    for svc in services.values():
        if svc.container_name in owners:
            raise ComposeError(f"services.{svc.name}.container_name: {svc.container_name!r} is also the container "
                               f"name of service {owners[svc.container_name]!r}")
        owners[svc.container_name] = svc.name

    result = ComposeProject(name=name, services=services, volumes=volumes, warnings=warnings)
    start_order(result)   # unknown dependencies and cycles are the file's errors: report them now
    return result


def _volumes(value: Any, project: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    out = {}
    for key, spec in _mapping(value, "volumes").items():
        where = f"volumes.{key}"
        spec = {} if spec is None else _mapping(spec, where)
        _only(spec, {"name", "labels", "external", "driver"}, where)
        if spec.get("driver", "local") != "local":
            raise ComposeError(f"{where}.driver: only the 'local' driver is supported, got {spec['driver']!r}")
        external = _bool(spec.get("external", False), f"{where}.external")
        # Compose prefixes a volume with its project unless it is external or named explicitly.
        if spec.get("name") is not None:
            full = _str(spec["name"], f"{where}.name")
        else:
            full = key if external else f"{project}_{key}"
        if not _VOLUME_NAME.match(full):
            raise ComposeError(f"{where}: invalid volume name {full!r}")
        labels = {k: v or "" for k, v in _list_or_dict(spec.get("labels") or {}, f"{where}.labels").items()}
        labels.update({LABEL_PROJECT: project, LABEL_VOLUME: key})
        out[key] = {"Name": full, "Driver": "local", "Labels": labels, "External": external}
    return out


@dataclass
class _Context:
    project: str
    base_dir: str
    environ: Mapping[str, str]
    env_files: Mapping[str, str]
    volumes: dict[str, dict[str, Any]]
    warnings: list[str]


def _service(name: str, spec: dict[str, Any], ctx: _Context) -> Service:
    where = f"services.{name}"
    _only(spec, _SERVICE_KEYS, where)

    def at(key: str) -> str:
        return f"{where}.{key}"

    if spec.get("image") is None:
        raise ComposeError(f"{at('image')}: required (corral does not build images)")
    body: dict[str, Any] = {"Image": _str(spec["image"], at("image"))}
    host: dict[str, Any] = {}

    for key, field_name in (("command", "Cmd"), ("entrypoint", "Entrypoint")):
        args = _command(spec.get(key), at(key))
        if args is not None:
            body[field_name] = args

    body["Env"] = [f"{k}={v}" for k, v in sorted(_environment(spec, where, ctx).items())]

    for key, field_name in (("working_dir", "WorkingDir"), ("hostname", "Hostname"), ("stop_signal", "StopSignal")):
        if spec.get(key) is not None:
            body[field_name] = _str(spec[key], at(key))
    if spec.get("user") is not None:
        user = spec["user"]
        # `user: 1000` is written unquoted often enough to accept the number.
        body["User"] = str(user) if isinstance(user, int) and not isinstance(user, bool) else _str(user, at("user"))
    if spec.get("stop_grace_period") is not None:
        # SPEC: Docker's StopTimeout is whole seconds; round up, so the grace is
        # never shorter than written (compose-go truncates "1500ms" to 1).
        ns = parse_duration_ns(spec["stop_grace_period"], where=at("stop_grace_period"))
        body["StopTimeout"] = math.ceil(ns / 1e9)
    if spec.get("healthcheck") is not None:
        body["Healthcheck"] = _healthcheck(spec["healthcheck"], at("healthcheck"))

    labels: dict[str, str] = {}
    for key, value in _list_or_dict(spec.get("labels") or {}, at("labels")).items():
        if key.startswith("com.docker.compose."):
            # SPEC: these would corrupt how we find and compare our containers.
            raise ComposeError(f"{at('labels')}: {key!r} is reserved for Compose's own labels")
        labels[key] = value or ""
    labels.update({LABEL_PROJECT: ctx.project, LABEL_SERVICE: name, LABEL_CONTAINER_NUMBER: "1",
                   LABEL_ONEOFF: "False"})
    body["Labels"] = labels

    host["RestartPolicy"] = _restart(spec.get("restart"), at("restart"))
    host.update(_limits(spec, where))
    binds, tmpfs = _mounts(spec.get("volumes"), at("volumes"), ctx)
    for i, entry in enumerate(_tmpfs_list(spec.get("tmpfs"), at("tmpfs"))):
        dest, _, opts = entry.partition(":")
        if not dest.startswith("/"):
            raise ComposeError(f"{at('tmpfs')}[{i}]: {dest!r} is not an absolute path")
        if dest in tmpfs or any(b.split(":")[1] == dest for b in binds):
            raise ComposeError(f"{at('tmpfs')}[{i}]: duplicate mount point {dest}")
        tmpfs[dest] = opts
    if binds:
        host["Binds"] = binds
    if tmpfs:
        host["Tmpfs"] = tmpfs
    for key, field_name in (("privileged", "Privileged"), ("read_only", "ReadonlyRootfs")):
        if spec.get(key) is not None:
            host[field_name] = _bool(spec[key], at(key))
    body["HostConfig"] = host

    container_name = f"{ctx.project}-{name}-1"   # Compose v2's <project>-<service>-<number>
    if spec.get("container_name") is not None:
        container_name = _str(spec["container_name"], at("container_name"))
        if not _CONTAINER_NAME.match(container_name):
            raise ComposeError(f"{at('container_name')}: invalid container name {container_name!r}")
        container_name = container_name.lstrip("/")

    canonical = json.dumps({"container_name": container_name, "create_body": body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    config_hash = hashlib.sha256(canonical.encode()).hexdigest()
    labels[LABEL_CONFIG_HASH] = config_hash
    return Service(name=name, container_name=container_name, create_body=body,
                   depends_on=_depends_on(spec.get("depends_on"), at("depends_on")), config_hash=config_hash)


def _environment(spec: dict[str, Any], where: str, ctx: _Context) -> dict[str, str]:
    """env_file entries in order, then ``environment`` over them (Compose's precedence)."""
    env: dict[str, str] = {}
    for path, required, here in _env_file_entries(spec, f"{where}.env_file", ctx.base_dir, ctx.environ):
        if path not in ctx.env_files:
            if required:
                raise ComposeError(f"{here}: env file {path} not found")
            continue
        env.update(parse_env_file(ctx.env_files[path], lookup=ctx.environ.get, where=path, warnings=ctx.warnings))
    if spec.get("environment") is not None:
        for key, value in _list_or_dict(spec["environment"], f"{where}.environment").items():
            if value is None:
                # A bare key passes the variable through from where `corral up`
                # runs; unset there, it is left out (and an env_file value stays).
                value = ctx.environ.get(key)
                if value is None:
                    continue
            env[key] = value
    return env


def _restart(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {"Name": "no", "MaximumRetryCount": 0}
    text = _str(value, where)
    name, sep, count = text.partition(":")
    if name in ("no", "always", "unless-stopped") and not sep:
        return {"Name": name, "MaximumRetryCount": 0}
    if name == "on-failure":
        if not sep:
            return {"Name": name, "MaximumRetryCount": 0}
        if count.isdigit():
            return {"Name": name, "MaximumRetryCount": int(count)}
    raise ComposeError(f"{where}: invalid restart policy {text!r} (use no, always, on-failure[:N] or unless-stopped)")


def _depends_on(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        names = _string_list(value, where)
        if len(set(names)) != len(names):
            raise ComposeError(f"{where}: lists a service twice")
        return {n: SERVICE_STARTED for n in names}
    out = {}
    for dep, spec in _mapping(value, where).items():
        here = f"{where}.{dep}"
        spec = {} if spec is None else _mapping(spec, here)
        # `restart`/`required` change what a dependent does later; refused until the supervisor honours them.
        _only(spec, {"condition"}, here)
        condition = _str(spec.get("condition", SERVICE_STARTED), f"{here}.condition")
        if condition not in CONDITIONS:
            raise ComposeError(f"{here}.condition: invalid condition {condition!r} "
                               f"(use {', '.join(sorted(CONDITIONS))})")
        out[dep] = condition
    return out


def _healthcheck(value: Any, where: str) -> dict[str, Any]:
    spec = _mapping(value, where)
    _only(spec, {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}, where)
    if spec.get("disable") is not None and _bool(spec["disable"], f"{where}.disable"):
        if spec.get("test") not in (None, ["NONE"], "NONE"):
            raise ComposeError(f"{where}: test and disable cannot both be set")
        return {"Test": ["NONE"]}
    # Docker's units: nanoseconds, and 0 or absent means "inherit the image's".
    out: dict[str, Any] = {}
    test = spec.get("test")
    if isinstance(test, str):
        out["Test"] = ["CMD-SHELL", test]
    elif test is not None:
        test = _string_list(test, f"{where}.test")
        if not test or test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            raise ComposeError(f"{where}.test: a list must start with NONE, CMD or CMD-SHELL")
        out["Test"] = test
    for key, field_name in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod"),
                            ("start_interval", "StartInterval")):
        if spec.get(key) is not None:
            out[field_name] = parse_duration_ns(spec[key], where=f"{where}.{key}")
    if spec.get("retries") is not None:
        retries = _int(spec["retries"], f"{where}.retries")
        if retries < 0:
            raise ComposeError(f"{where}.retries: must not be negative")
        out["Retries"] = retries
    return out


def _limits(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """mem_limit, memswap_limit, cpus, pids_limit and their deploy.resources.limits twins."""
    short: dict[str, tuple[str, int]] = {}
    if spec.get("mem_limit") is not None:
        short["Memory"] = ("mem_limit", _bytes(spec["mem_limit"], f"{where}.mem_limit"))
    if spec.get("cpus") is not None:
        short["NanoCpus"] = ("cpus", _nano_cpus(spec["cpus"], f"{where}.cpus"))
    if spec.get("pids_limit") is not None:
        short["PidsLimit"] = ("pids_limit", _int(spec["pids_limit"], f"{where}.pids_limit"))

    deploy: dict[str, tuple[str, int]] = {}
    if spec.get("deploy") is not None:
        d = f"{where}.deploy"
        dspec = _mapping(spec["deploy"], d)
        _only(dspec, {"resources"}, d)
        rspec = _mapping(dspec.get("resources") or {}, f"{d}.resources")
        _only(rspec, {"limits"}, f"{d}.resources")
        lw = f"{d}.resources.limits"
        limits = _mapping(rspec.get("limits") or {}, lw)
        _only(limits, {"memory", "cpus", "pids"}, lw)
        if limits.get("memory") is not None:
            deploy["Memory"] = ("deploy.resources.limits.memory", _bytes(limits["memory"], f"{lw}.memory"))
        if limits.get("cpus") is not None:
            deploy["NanoCpus"] = ("deploy.resources.limits.cpus", _nano_cpus(limits["cpus"], f"{lw}.cpus"))
        if limits.get("pids") is not None:
            deploy["PidsLimit"] = ("deploy.resources.limits.pids", _int(limits["pids"], f"{lw}.pids"))

    out = {}
    for field_name in ("Memory", "NanoCpus", "PidsLimit"):
        a, b = short.get(field_name), deploy.get(field_name)
        # SPEC: the same limit written twice is fine; two different ones is
        # ambiguous, and Compose refuses it too.
        if a and b and a[1] != b[1]:
            raise ComposeError(f"{where}: {a[0]} and {b[0]} conflict ({a[1]} != {b[1]})")
        if a or b:
            out[field_name] = (a or b)[1]
    if spec.get("memswap_limit") is not None:
        out["MemorySwap"] = _bytes(spec["memswap_limit"], f"{where}.memswap_limit", allow_unlimited=True)
    return out


def _tmpfs_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else _string_list(value, where)


def _mounts(value: Any, where: str, ctx: _Context) -> tuple[list[str], dict[str, str]]:
    """``volumes``, short and long syntax -> (HostConfig.Binds, HostConfig.Tmpfs)."""
    if value is None:
        return [], {}
    if not isinstance(value, list):
        raise ComposeError(f"{where}: must be a list, got {_kind(value)}")
    binds: list[str] = []
    tmpfs: dict[str, str] = {}
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            kind, source, target, mode = _short_volume(item, here)
        elif isinstance(item, dict):
            kind, source, target, mode = _long_volume(item, here)
        else:
            raise ComposeError(f"{here}: must be a string or a mapping, got {_kind(item)}")
        if not target.startswith("/"):
            raise ComposeError(f"{here}: target {target!r} is not an absolute path")
        # Docker refuses the container later with "Duplicate mount point"; say where now.
        if target in tmpfs or any(b.split(":")[1] == target for b in binds):
            raise ComposeError(f"{here}: duplicate mount point {target}")
        if kind == "tmpfs":
            tmpfs[target] = ",".join(mode)
            continue
        if not source:
            # SPEC: an anonymous volume outlives nothing useful on a reload; ask for a name instead.
            raise ComposeError(f"{here}: anonymous volumes are not supported; name it ('data:{target}') "
                               "and declare it under the top-level volumes")
        if kind == "volume":
            if source not in ctx.volumes:
                raise ComposeError(f"{here}: volume {source!r} is not declared under the top-level volumes")
            source = ctx.volumes[source]["Name"]
        else:
            source = _resolve_path(source, ctx.base_dir, ctx.environ, here)
        binds.append(":".join([source, target, *([",".join(mode)] if mode else [])]))
    return binds, tmpfs


def _short_volume(text: str, where: str) -> tuple[str, str, str, list[str]]:
    parts = text.split(":")
    if len(parts) == 1:
        return "volume", "", parts[0], []
    if len(parts) > 3 or not all(parts):
        raise ComposeError(f"{where}: invalid volume {text!r} (use source:target[:ro])")
    source, target = parts[0], parts[1]
    mode = parts[2].split(",") if len(parts) == 3 else []
    bad = [m for m in mode if m not in _BIND_MODES]
    if bad:
        raise ComposeError(f"{where}: invalid mode {','.join(bad)!r} in {text!r}")
    # Compose's rule: a source that looks like a path is a bind, anything else names a volume.
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return kind, source, target, mode


def _long_volume(spec: dict[str, Any], where: str) -> tuple[str, str, str, list[str]]:
    _only(spec, {"type", "source", "target", "read_only", "tmpfs"}, where)
    kind = _str(spec.get("type"), f"{where}.type") if "type" in spec else None
    if kind not in ("bind", "volume", "tmpfs"):
        raise ComposeError(f"{where}.type: must be bind, volume or tmpfs, got {kind!r}")
    if spec.get("target") is None:
        raise ComposeError(f"{where}.target: required")
    target = _str(spec["target"], f"{where}.target")
    source = _str(spec["source"], f"{where}.source") if spec.get("source") is not None else ""
    read_only = _bool(spec.get("read_only", False), f"{where}.read_only")
    if kind == "tmpfs":
        if source:
            raise ComposeError(f"{where}.source: a tmpfs has no source")
        opts = ["ro"] if read_only else []
        tspec = _mapping(spec.get("tmpfs") or {}, f"{where}.tmpfs")
        # `mode` is left out: Compose reads it as a number whose base differs
        # between YAML versions, and a wrong tmpfs mode fails silently.
        _only(tspec, {"size"}, f"{where}.tmpfs")
        if tspec.get("size") is not None:
            opts.append(f"size={_bytes(tspec['size'], f'{where}.tmpfs.size')}")
        return kind, "", target, opts
    if "tmpfs" in spec:
        raise ComposeError(f"{where}.tmpfs: only for type tmpfs")
    if kind == "bind" and not source:
        raise ComposeError(f"{where}.source: required for a bind")
    return kind, source, target, ["ro"] if read_only else []


# -- order and plan -----------------------------------------------------------------------------------


def start_order(project: ComposeProject) -> list[list[str]]:
    """Services in layers: each layer depends only on earlier ones, and may start all at once.

    Names within a layer are sorted, so the order is the same on every run.

    Raises:
        ComposeError: a dependency on a service the project lacks, or a cycle
            (named: ``a -> b -> a``).
    """
    deps = {name: set(svc.depends_on) for name, svc in project.services.items()}
    for name, wanted in deps.items():
        for missing in sorted(wanted - deps.keys()):
            raise ComposeError(f"services.{name}.depends_on: unknown service {missing!r}")
    layers: list[list[str]] = []
    placed: set[str] = set()
    remaining = set(deps)
    while remaining:
        ready = sorted(n for n in remaining if deps[n] <= placed)
        if not ready:
            raise ComposeError(f"services: dependency cycle {' -> '.join(_cycle(deps, remaining))}")
        layers.append(ready)
        placed.update(ready)
        remaining.difference_update(ready)
    return layers


def _cycle(deps: dict[str, set[str]], remaining: set[str]) -> list[str]:
    # Every service left waits on another one left, so following those edges
    # from any of them must come back to a service already on the path.
    path = [min(remaining)]
    while True:
        nxt = min(deps[path[-1]] & remaining)
        if nxt in path:
            return [*path[path.index(nxt):], nxt]
        path.append(nxt)


def diff(old: ComposeProject | None, new: ComposeProject) -> Plan:
    """What a reload does: services to create, recreate, remove, or leave running.

    A service is recreated when its config hash changed; ``depends_on`` alone
    does not change it (see the module's rejected designs).

    Args:
        old: what runs now; None when nothing does (first ``corral up``).
        new: the file as it is now.

    Raises:
        ComposeError: ``new`` has an unknown dependency or a cycle.
    """
    before = old.services if old is not None else {}
    order = [name for layer in start_order(new) for name in layer]
    create = [n for n in order if n not in before]
    recreate = [n for n in order if n in before and before[n].config_hash != new.services[n].config_hash]
    unchanged = [n for n in order if n in before and before[n].config_hash == new.services[n].config_hash]
    old_order = [name for layer in start_order(old) for name in layer] if old is not None else []
    remove = [n for n in reversed(old_order) if n not in new.services]
    return Plan(create=create, recreate=recreate, remove=remove, unchanged=unchanged)
