"""Event schema, Docker's JSON shape and Docker's event filters (moby daemon/events/filter.go)."""

from __future__ import annotations

import json

import msgpack
import pytest

from protocols.errors import RemoteProtocolError
from protocols.events import (
    EVENT_TYPES,
    Action,
    Event,
    EventFilter,
    EventType,
    parse_event_filter,
)

DIE = Event(7, 1795901263607470186, EventType.CONTAINER, Action.DIE, "95c1aa",
            {"exitCode": "137", "image": "busybox", "name": "web", "com.example.tier": "front"})
TAG = Event(8, 1795901264000000000, EventType.IMAGE, Action.TAG, "sha256:22bb79a0",
            {"name": "127.0.0.1:5000/busybox:latest"})
NET = Event(9, 1795901265000000000, EventType.NETWORK, Action.CONNECT, "n3tw0rk",
            {"name": "bridge", "container": "95c1aa"})


def test_dict_round_trip_through_msgpack_and_json() -> None:
    for event in (DIE, TAG, NET):
        assert Event.from_dict(msgpack.unpackb(msgpack.packb(event.to_dict()))) == event
        assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_attributes_are_read_only_and_copied() -> None:
    attributes = {"name": "web"}
    event = Event(1, 0, EventType.CONTAINER, Action.START, "c", attributes)
    attributes["name"] = "changed"
    assert event.attributes["name"] == "web"
    with pytest.raises(TypeError):
        event.attributes["name"] = "x"  # type: ignore[index]
    assert hash(event) == hash(Event(1, 0, EventType.CONTAINER, Action.START, "c", {"other": "x"}))


@pytest.mark.parametrize(("doc", "message"), [
    ([], "event: expected a map"),
    ({"time_ns": 0, "type": "container", "action": "die", "id": "c"}, r"event\.seq: expected int"),
    ({"seq": True, "time_ns": 0, "type": "container", "action": "die", "id": "c"}, r"event\.seq"),
    ({"seq": 1, "time_ns": "0", "type": "container", "action": "die", "id": "c"}, r"event\.time_ns"),
    ({"seq": 1, "time_ns": 0, "type": "container", "action": 3, "id": "c"}, r"event\.action"),
    ({"seq": 1, "time_ns": 0, "type": "container", "action": "die", "id": "c", "attributes": {"exitCode": 137}},
     r"event\.attributes: expected a map of strings"),
])
def test_from_dict_names_the_bad_field(doc: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        Event.from_dict(doc)  # type: ignore[arg-type]


def test_container_event_in_docker_shape() -> None:
    # The object captured from dockerd 20.10 in docker-api-trace.md 4.30.
    assert DIE.to_docker() == {
        "status": "die", "id": "95c1aa", "from": "busybox", "Type": "container", "Action": "die",
        "Actor": {"ID": "95c1aa", "Attributes": {"exitCode": "137", "image": "busybox", "name": "web",
                                                  "com.example.tier": "front"}},
        "scope": "local", "time": 1795901263, "timeNano": 1795901263607470186,
    }


def test_image_event_has_status_and_id_but_no_from() -> None:
    doc = TAG.to_docker()
    assert doc["status"] == "tag" and doc["id"] == "sha256:22bb79a0"
    assert "from" not in doc


def test_other_types_have_no_deprecated_fields() -> None:
    doc = NET.to_docker()
    assert not {"status", "id", "from"} & doc.keys()
    assert doc["Type"] == "network" and doc["Actor"]["ID"] == "n3tw0rk"


def test_constants_are_docker_vocabulary() -> None:
    assert EVENT_TYPES == {"container", "image", "network", "volume", "daemon"}
    assert Action.with_detail(Action.HEALTH_STATUS, "healthy") == "health_status: healthy"


@pytest.mark.parametrize(("filters", "expected"), [
    (None, {7, 8, 9}),
    ({}, {7, 8, 9}),
    ({"type": {"container": True}}, {7}),
    ({"type": ["container", "image"]}, {7, 8}),
    ({"type": {"container": False}}, {7, 8, 9}),   # moby keeps only the true values
    ({"event": {"die": True}}, {7}),
    ({"action": ["tag", "connect"]}, {8, 9}),
    ({"container": ["95c1"]}, {7}),                  # id prefix
    ({"container": ["web"]}, {7}),                   # name
    ({"container": ["we"]}, {7}),                    # name prefix, as moby's FuzzyMatch
    ({"container": ["db"]}, set()),
    ({"label": ["com.example.tier"]}, {7}),
    ({"label": ["com.example.tier=front"]}, {7}),
    ({"label": ["com.example.tier=back"]}, set()),
    ({"label": ["com.example.tier", "missing"]}, set()),   # every label must hold
    ({"image": ["busybox"]}, {7}),                   # the container's image; not another registry's
    ({"image": ["sha256:22bb79a0"]}, {8}),
    ({"image": ["127.0.0.1:5000/busybox"]}, {8}),
    ({"network": ["bridge"]}, {9}),
    ({"type": ["container"], "event": ["start"]}, set()),   # keys are AND-ed
    ({"scope": ["local"]}, {7, 8, 9}),
    ({"scope": ["swarm"]}, set()),
])
def test_filter_matches(filters: dict | None, expected: set[int]) -> None:
    f = EventFilter.from_docker(filters)
    assert {e.seq for e in (DIE, TAG, NET) if f.matches(e)} == expected


def test_filter_on_actions_with_details() -> None:
    healthy = Event(1, 0, EventType.CONTAINER, Action.with_detail(Action.HEALTH_STATUS, "healthy"), "c")
    exec_start = Event(2, 0, EventType.CONTAINER, Action.with_detail(Action.EXEC_START, "sh -c date"), "c")
    assert EventFilter.from_docker({"event": ["health_status"]}).matches(healthy)
    assert EventFilter.from_docker({"event": ["exec_start"]}).matches(exec_start)
    assert EventFilter.from_docker({"event": ["health_status: healthy"]}).matches(healthy)
    assert not EventFilter.from_docker({"event": ["health_status: unhealthy"]}).matches(healthy)
    # Without one of the three, matching stays exact.
    assert not EventFilter.from_docker({"event": ["sta"]}).matches(Event(3, 0, "container", "start", "c"))


@pytest.mark.parametrize(("filters", "message"), [
    ({"colour": ["red"]}, "invalid filter 'colour'"),
    ({"service": ["web"]}, "invalid filter 'service'"),
    ({"type": 3}, r"filters\.type: expected a map or a list of strings"),
    ({"type": [3]}, r"filters\.type: expected strings"),
    ([["type", "container"]], "filters: expected a map"),
])
def test_filter_errors(filters: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        EventFilter.from_docker(filters)  # type: ignore[arg-type]


def test_parse_event_filter_from_query_text() -> None:
    # What the 28.2 CLI sends for `docker events --filter type=container --filter event=start`.
    f = parse_event_filter('{"event":{"start":true},"type":{"container":true}}')
    assert f == EventFilter(types=frozenset({"container"}), actions=frozenset({"start"}))
    assert parse_event_filter("") == EventFilter() == parse_event_filter(None)
    with pytest.raises(RemoteProtocolError, match="filters: invalid JSON"):
        parse_event_filter("{type")
