"""`Gateway._store`'s answer to what the bus reports (a unit test: the bus is a stand-in, because a
lost publish ack that still stored the message cannot be produced on demand with a real server).

ICD §6: a first send answers 202, an identical resend 200 `duplicate`, other bytes 409. When the
bus had to retry the publish, a duplicate of the same bytes is most likely this request's own first
attempt, stored before its ack was lost: the client sent once and gets 202."""

from __future__ import annotations

from typing import Any

import pytest

from broker.audit.records import AuditEvent
from broker.clock import utcnow
from broker.gateway.web import Gateway
from broker.identity.state import StatePaths
from broker.metrics.registry import Registry
from broker.nats.bus import PubResult, Stored
from broker.nats.names import HDR_DIGEST
from broker.policy.loader import load_policy
from broker.rules.intake import Intake
from tests.support.messages import message, sealed


class StandInBus:
    def __init__(self, result: PubResult, stored_digest: str) -> None:
        self.result, self.stored_digest = result, stored_digest

    async def publish(self, subject: str, data: bytes, *, msg_id: str, headers: Any = None) -> PubResult:
        return self.result

    async def get(self, stream: str, seq: int) -> Stored:
        return Stored("coord.msg.x", seq, b"", {HDR_DIGEST: self.stored_digest})


class NoAudit:
    async def record(self, ev: AuditEvent) -> Any:
        raise AssertionError("nothing here is a rejection")


@pytest.mark.parametrize(
    "duplicate, retried, same_bytes, status",
    [
        (False, False, True, 202),  # stored now
        (False, True, True, 202),  # stored on a retry
        (True, False, True, 200),  # an identical resend
        (True, True, True, 202),  # our own first attempt, its ack lost: the client sent once
        (True, False, False, 409),  # other bytes under the id
        (True, True, False, 409),  # other bytes, found on a retry: still a conflict
    ],
)
async def test_store_answers(
    state: StatePaths, duplicate: bool, retried: bool, same_bytes: bool, status: int
) -> None:
    policy = load_policy(state.policy)
    admitted = Intake().check(sealed(state, message()), "nsatu-liaison", policy, utcnow())
    digest = admitted.digest if same_bytes else "0" * 64
    bus = StandInBus(PubResult(seq=7, duplicate=duplicate, retried=retried), digest)
    gw = Gateway(policy=None, bus=bus, audit=NoAudit(), metrics=Registry(), instance="test")  # type: ignore[arg-type]
    if status == 409:
        with pytest.raises(Exception) as info:
            await gw._store(admitted)
        assert getattr(info.value, "name", None) == "id-conflict"
        return
    out = await gw._store(admitted)
    assert out.status == status
    assert out.body.get("duplicate", False) is (status == 200)
    assert out.body["seq"] == 7
