"""The AsyncAPI 3.0 document of the NATS side: valid against an AsyncAPI 3.0 object model (the `asyncapi3`
package; no JSON Schema validator for AsyncAPI 3.0 installs from PyPI in working order), structurally
sound, and saying exactly what the generated NATS permissions enforce, both ways."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from broker.cli import build_parser
from broker.contract import asyncapi as aa
from broker.contract.asyncapi import asyncapi_document, classify
from broker.contract.export import default_view
from broker.identity.state import StatePaths
from broker.nats.config import NatsPermissions
from broker.nats.names import nats_user
from broker.nats.permissions import (
    NatsView,
    delivery_filter_subjects,
    permissions,
    service_permissions,
    services,
)
from broker.policy.loader import load_policy

VIEWS = {
    "default": default_view(),
    # a narrower policy: UDCG cleared to RESTRICTED, system high CONFIDENTIAL, a fourth organisation
    "narrow": NatsView(
        instance="theatre.east",
        system_high=2,
        clearances=(("EUMAM", 3), ("JATEC", 0), ("NSATU", 3), ("UDCG", 1)),
    ),
}


def _validate_asyncapi3(doc: dict[str, Any]) -> None:
    with warnings.catch_warnings():  # the package's own pydantic field-shadowing warnings, at import
        warnings.simplefilter("ignore", UserWarning)
        from asyncapi3.models import AsyncAPI3
    AsyncAPI3.model_validate(doc)


@pytest.mark.parametrize("name", list(VIEWS))
def test_the_document_is_asyncapi_3(name: str) -> None:
    doc = asyncapi_document(VIEWS[name])
    assert doc["asyncapi"] == "3.0.0"
    _validate_asyncapi3(doc)


def test_the_object_model_refuses_a_broken_document() -> None:
    """The validator is not a rubber stamp: an AsyncAPI 2 `publish` action is refused."""
    doc = asyncapi_document(default_view())
    next(iter(doc["operations"].values()))["action"] = "publish"
    with pytest.raises(ValueError, match="action"):
        _validate_asyncapi3(doc)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name", list(VIEWS))
def test_structure(name: str) -> None:
    doc = asyncapi_document(VIEWS[name])
    for ref in _refs(doc):
        _resolve(doc, ref)  # every reference resolves
    for ch in doc["channels"].values():
        assert set(re.findall(r"{(\w+)}", ch["address"])) == set(ch["parameters"])
    for op in doc["operations"].values():
        channel_ref = op["channel"]["$ref"]
        for m in op["messages"]:
            assert m["$ref"].startswith(channel_ref + "/messages/")  # a message of its own channel
    msgs = doc["components"]["messages"]
    assert set(msgs["acceptedEnvelope"]["headers"]["properties"]) == {
        "Nats-Msg-Id",
        "Coord-Envelope-Sha256",
        "Coord-Sender",
        "Coord-Received",
    }
    assert {"Nats-Msg-Id", "Coord-Organisation"} <= set(msgs["deliveredEnvelope"]["headers"]["properties"])
    assert doc["channels"]["accepted"]["address"] == "coord.msg.{rank}.{originator}.{kind}.{id}"


def _covers(allow: str, subject: str) -> bool:
    """NATS subject matching: does the allow pattern cover every subject of `subject` (itself a pattern)?"""
    a, s = allow.split("."), subject.split(".")
    for i, tok in enumerate(a):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]) or (tok == "*" and s[i] == ">"):
            return False
    return len(a) == len(s)


@pytest.mark.parametrize("name", list(VIEWS))
def test_every_operation_is_what_nats_allows_and_nothing_is_left_out(name: str) -> None:
    view = VIEWS[name]
    doc = asyncapi_document(view)
    users = {u.user: u.permissions for u in permissions(view)}  # the users of the generated NATS config
    by_service: dict[str, list[dict[str, Any]]] = {}
    for op in doc["operations"].values():
        by_service.setdefault(op["x-nats-service"], []).append(op)
        perms = users[op["x-nats-user"]]
        assert op["x-nats-user"] == nats_user(op["x-nats-service"])
        assert set(op["x-nats-permissions"]) <= set(perms.publish_allow)
        if op["action"] == "send":  # what it sends on, NATS lets it publish
            assert op["x-nats-subjects"]
            for subject in op["x-nats-subjects"]:
                assert any(_covers(a, subject) for a in perms.publish_allow), subject
                assert not any(_covers(d, subject) for d in perms.publish_deny), subject
    for svc in services(view):
        allowed = set(service_permissions(view, svc).publish_allow)
        control = {p for p in allowed if aa._CONTROL.match(p)}
        documented = {p for op in by_service.get(svc, []) for p in op["x-nats-permissions"]}
        assert documented == allowed - control, svc  # every data permission is in the document


@pytest.mark.parametrize("name", list(VIEWS))
def test_who_sends_and_receives_where(name: str) -> None:
    view = VIEWS[name]
    doc = asyncapi_document(view)
    senders: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        if op["action"] == "send":
            senders.setdefault(op["channel"]["$ref"].rsplit("/", 1)[1], set()).add(op["x-nats-service"])
    assert senders["accepted"] == {"gateway"}
    assert senders["deliveries"] == {"dispatcher"}
    assert senders["auditLog"] == {"audit"}
    assert senders["deadLetters"] == {f"adapter-{o.lower()}" for o in view.organisations}
    for org in view.organisations:
        (op,) = [
            o
            for o in doc["operations"].values()
            if o["x-nats-service"] == f"adapter-{org.lower()}"
            and o["action"] == "receive"
            and o["channel"]["$ref"].endswith("/deliveries")
        ]
        assert op["x-nats-subjects"] == delivery_filter_subjects(org, view.ceiling(org))
        assert op["x-nats-durable"] == f"adapter-{org.lower()}"
    gateway_sends = next(
        o
        for o in doc["operations"].values()
        if o["x-nats-service"] == "gateway"
        and o["action"] == "send"
        and o["channel"]["$ref"].endswith("/accepted")
    )
    expected = {f"coord.msg.{r}.{o}.>" for o in view.organisations for r in range(view.ceiling(o) + 1)}
    assert set(gateway_sends["x-nats-subjects"]) == expected


def test_a_permission_of_no_known_form_cannot_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The document cannot silently drift: a new allow entry the generator cannot place raises."""
    real = aa.service_permissions

    def more(view: NatsView, service: str) -> NatsPermissions:
        p = real(view, service)
        if service == "gateway":
            return NatsPermissions(
                (*p.publish_allow, "coord.surprise.>"), p.publish_deny, p.subscribe_allow, p.subscribe_deny
            )
        return p

    monkeypatch.setattr(aa, "service_permissions", more)
    with pytest.raises(ValueError, match="no place"):
        classify(default_view(), "gateway")
    with pytest.raises(ValueError, match="no place"):
        asyncapi_document(default_view())


def test_schemas_export_writes_the_document_of_the_state_policy(state: StatePaths, tmp_path: Path) -> None:
    args = build_parser().parse_args(["--state", str(state.root), "schemas", "export", str(tmp_path)])
    assert args.func(args) == 0
    written = json.loads((tmp_path / "asyncapi.json").read_text())
    assert written == json.loads(json.dumps(asyncapi_document(NatsView.of(load_policy(state.policy)))))
    _validate_asyncapi3(written)
