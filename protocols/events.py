"""Events: the record of every state change, its filters and Docker's JSON shape. Pure.

An event is ``{seq, time_ns, type, action, id, attributes}``. ``seq`` is the
order: strictly increasing, assigned by the journal when the event is stored,
never reused. ``time_ns`` is the wall clock (``time.time_ns()``) and may step
backwards with the host clock, so nothing orders by it.

Rules:

1. ``type`` and ``action`` values are the constants below, in Docker's
   vocabulary, and are defined nowhere else (containerd keeps its topics in one
   file, ``core/runtime/events.go``, for the same reason).
2. ``attributes`` are strings to strings, as Docker's ``Actor.Attributes``
   are: numbers travel as decimal text (``exitCode: "137"``).
3. Filters follow moby's ``daemon/events/filter.go``: values of one key are
   OR-ed, keys are AND-ed, every ``label`` must hold. An unknown key is an
   error, not a filter that silently matches everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import RemoteProtocolError


class EventType:
    """Values of ``Event.type`` (Docker's ``Type``)."""

    CONTAINER = "container"
    IMAGE = "image"
    NETWORK = "network"
    VOLUME = "volume"
    DAEMON = "daemon"


EVENT_TYPES = frozenset({
    EventType.CONTAINER, EventType.IMAGE, EventType.NETWORK, EventType.VOLUME, EventType.DAEMON,
})


class Action:
    """Values of ``Event.action`` (Docker's ``Action``).

    Docker appends details to three of them: ``"exec_create: sh -c date"``,
    ``"exec_start: sh -c date"`` and ``"health_status: healthy"``; build those
    with ``with_detail`` so the filters below still find them.
    """

    # container
    ATTACH = "attach"
    COMMIT = "commit"
    COPY = "copy"
    CREATE = "create"
    DESTROY = "destroy"
    DETACH = "detach"
    DIE = "die"
    EXEC_CREATE = "exec_create"
    EXEC_DETACH = "exec_detach"
    EXEC_DIE = "exec_die"
    EXEC_START = "exec_start"
    EXPORT = "export"
    HEALTH_STATUS = "health_status"
    KILL = "kill"
    OOM = "oom"
    PAUSE = "pause"
    RENAME = "rename"
    RESIZE = "resize"
    RESTART = "restart"
    START = "start"
    STOP = "stop"
    TOP = "top"
    UNPAUSE = "unpause"
    UPDATE = "update"
    # image (DELETE, IMPORT, LOAD, PULL, PUSH, SAVE, TAG, UNTAG) and volume/network
    DELETE = "delete"
    IMPORT = "import"
    LOAD = "load"
    PULL = "pull"
    PUSH = "push"
    SAVE = "save"
    TAG = "tag"
    UNTAG = "untag"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    MOUNT = "mount"
    UNMOUNT = "unmount"
    PRUNE = "prune"
    REMOVE = "remove"
    # daemon
    RELOAD = "reload"

    @staticmethod
    def with_detail(action: str, detail: str) -> str:
        """``with_detail(Action.HEALTH_STATUS, "healthy")`` -> ``"health_status: healthy"``."""
        return f"{action}: {detail}"


# SPEC: moby matches these three by prefix when the filter value has no colon,
# so ``event=health_status`` finds ``health_status: healthy`` (moby #25798).
_ACTIONS_WITH_DETAIL = frozenset({Action.HEALTH_STATUS, Action.EXEC_CREATE, Action.EXEC_START})


@dataclass(frozen=True, slots=True)
class Event:
    """One state change, as journaled and streamed.

    ``attributes`` is stored as a read-only mapping: the bus hands the same
    object to every subscriber, and one of them must not be able to change what
    the others see.
    """

    seq: int
    time_ns: int
    type: str
    action: str
    id: str
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, MappingProxyType):
            object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for msgpack and JSON); ``from_dict`` reads it back."""
        return {
            "seq": self.seq, "time_ns": self.time_ns, "type": self.type,
            "action": self.action, "id": self.id, "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Event:
        """The inverse of ``to_dict``.

        Raises:
            RemoteProtocolError: a field is missing or has the wrong type; the
                message names the field.
        """
        if not isinstance(doc, Mapping):
            raise RemoteProtocolError(f"event: expected a map, got {type(doc).__name__}")
        for name, kind in (("seq", int), ("time_ns", int), ("type", str), ("action", str), ("id", str)):
            value = doc.get(name)
            # bool is an int in Python, never a seq or a time.
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RemoteProtocolError(f"event.{name}: expected {kind.__name__}, got {value!r}")
        attributes = doc.get("attributes", {})
        if not isinstance(attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise RemoteProtocolError(f"event.attributes: expected a map of strings, got {attributes!r}")
        return cls(doc["seq"], doc["time_ns"], doc["type"], doc["action"], doc["id"], attributes)

    def to_docker(self) -> dict[str, Any]:
        """Docker's ``GET /events`` object (moby ``api/types/events.Message``).

        The deprecated ``status``/``id``/``from`` fields are filled only for
        container and image events, and ``from`` only when the container has an
        image, as moby's ``daemon/events.Log`` does (they are ``omitempty``).
        """
        doc: dict[str, Any] = {}
        if self.type in (EventType.CONTAINER, EventType.IMAGE):
            doc["status"] = self.action
            doc["id"] = self.id
            if self.type == EventType.CONTAINER and self.attributes.get("image"):
                doc["from"] = self.attributes["image"]
        doc.update({
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": dict(self.attributes)},
            "scope": "local",
            "time": self.time_ns // 1_000_000_000,
            "timeNano": self.time_ns,
        })
        return doc


# Keys ``docker events --filter`` accepts that we can answer. moby also has
# config, node, plugin, secret and service (swarm and plugins), which we have
# not; asking for them is an error like any unknown key.
FILTER_KEYS = frozenset({
    "container", "daemon", "event", "action", "image", "label", "network", "scope", "type", "volume",
})


@dataclass(frozen=True)
class EventFilter:
    """Docker's event filters; ``EventFilter()`` matches everything.

    Each field is the set of accepted values for one key; an empty set means
    the key was not given. ``event`` and ``action`` are one key (Docker says
    ``event``, its JSON says ``Action``).
    """

    types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    containers: frozenset[str] = frozenset()
    images: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    daemons: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    @classmethod
    def from_docker(cls, filters: Mapping[str, Any] | None) -> EventFilter:
        """Build from a decoded ``filters`` query value.

        Both of Docker's encodings are accepted: ``{"type": {"container": true}}``
        (what the CLI sends) and the legacy ``{"type": ["container"]}``.

        Raises:
            RemoteProtocolError: an unknown key (``invalid filter 'foo'``, as
                dockerd says) or a value that is neither form.
        """
        if not filters:
            return cls()
        if not isinstance(filters, Mapping):
            raise RemoteProtocolError(f"filters: expected a map, got {type(filters).__name__}")
        values: dict[str, frozenset[str]] = {}
        for key, raw in filters.items():
            if key not in FILTER_KEYS:
                raise RemoteProtocolError(f"invalid filter '{key}'")
            values[key] = values.get(key, frozenset()) | _filter_values(key, raw)
        return cls(
            types=values.get("type", frozenset()),
            actions=values.get("event", frozenset()) | values.get("action", frozenset()),
            containers=values.get("container", frozenset()),
            images=values.get("image", frozenset()),
            labels=values.get("label", frozenset()),
            networks=values.get("network", frozenset()),
            volumes=values.get("volume", frozenset()),
            daemons=values.get("daemon", frozenset()),
            scopes=values.get("scope", frozenset()),
        )

    def matches(self, event: Event) -> bool:
        """Whether ``event`` passes every key given."""
        attrs = event.attributes
        if self.types and event.type not in self.types:
            return False
        if self.actions and not self._match_action(event.action):
            return False
        if self.scopes and "local" not in self.scopes:
            return False
        if self.containers and not _match_name(self.containers, event):
            return False
        if self.networks and not _match_name(self.networks, event):
            return False
        if self.volumes and not _match_name(self.volumes, event):
            return False
        if self.daemons and not _match_name(self.daemons, event):
            return False
        if self.images and not self._match_image(event):
            return False
        for label in self.labels:
            key, eq, value = label.partition("=")
            if key not in attrs or (eq and attrs[key] != value):
                return False
        return True

    def _match_action(self, action: str) -> bool:
        if action in self.actions:
            return True
        # SPEC: moby fuzzy-matches only when one of these three was asked for.
        if self.actions & _ACTIONS_WITH_DETAIL:
            return any(action.startswith(value) for value in self.actions)
        return False

    def _match_image(self, event: Event) -> bool:
        # SPEC: moby matches the actor id or its image name ("name" for image
        # events, "image" for container events), each with and without its tag,
        # so `image=busybox` finds containers run from busybox:latest.
        name = event.attributes.get("name" if event.type == EventType.IMAGE else "image", "")
        candidates = {event.id, name, _strip_tag(event.id), _strip_tag(name)} - {""}
        return not self.images.isdisjoint(candidates)


def parse_event_filter(text: str | bytes | None) -> EventFilter:
    """The ``filters`` query parameter of ``GET /events`` (JSON text) -> ``EventFilter``.

    ``None`` and empty text mean no filter.

    Raises:
        RemoteProtocolError: the text is not JSON, or ``from_docker`` rejects it.
    """
    if not text:
        return EventFilter()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RemoteProtocolError(f"filters: invalid JSON: {exc}") from exc
    return EventFilter.from_docker(doc)


def _filter_values(key: str, raw: Any) -> frozenset[str]:
    if isinstance(raw, Mapping):
        # {"value": true}; moby keeps only the true ones.
        items: Iterable[Any] = [value for value, on in raw.items() if on is True]
    elif isinstance(raw, (list, tuple, set, frozenset)):
        items = raw
    elif isinstance(raw, str):
        items = [raw]
    else:
        raise RemoteProtocolError(f"filters.{key}: expected a map or a list of strings, got {raw!r}")
    if not all(isinstance(value, str) for value in items):
        raise RemoteProtocolError(f"filters.{key}: expected strings, got {list(items)!r}")
    return frozenset(items)


def _match_name(values: frozenset[str], event: Event) -> bool:
    # SPEC: moby's fuzzyMatchName compares by prefix against the actor id and
    # its "name" attribute, so `container=95c1` and `container=web` both match
    # (and so does `container=we`). It does not check the event's type: a
    # container filter keeps an image event whose name shares the prefix; so
    # do we, since `type=container` is how clients ask for containers only.
    name = event.attributes.get("name", "")
    return any(event.id.startswith(value) or (name and name.startswith(value)) for value in values)


def _strip_tag(reference: str) -> str:
    # "registry:5000/busybox:latest" -> "registry:5000/busybox"; a digest too.
    reference = reference.split("@", 1)[0]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    return reference[:colon] if colon > slash else reference
