"""The stub native system, exercised over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest

from adapters.formats import CODECS, DeliveredMessage, sample_bodies
from adapters.formats.base import make_label
from adapters.stub import StubNativeSystem

NSATU_TYPE = "application/vnd.nsatu.liaison+json"


def document(ref: str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", summary: str | None = None) -> bytes:
    body = dict(sample_bodies()["status.update"])
    if summary is not None:
        body["summary"] = summary
    msg = DeliveredMessage(
        id=ref,
        kind="status.update",
        originator="EUMAM",
        sender="eumam-liaison",
        created="2026-05-14T09:30:00Z",
        label=make_label("EU", "RESTRICTED", ["EUMAM", "NSATU"], []),
        body=body,
        in_reply_to=None,
    )
    return CODECS["nsatu"].encode(msg)


async def post(session: aiohttp.ClientSession, url: str, data: bytes, ctype: str = NSATU_TYPE) -> int:
    async with session.post(url + "/inbox", data=data, headers={"Content-Type": ctype}) as resp:
        await resp.read()
        return resp.status


async def test_records_documents_in_order() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        assert stub.url.startswith("http://127.0.0.1:")
        docs = [document(summary=f"report {i}") for i in range(3)]
        for doc in docs:
            assert await post(session, stub.url, doc) == 202
        assert [d.body for d in stub.received] == docs
        assert [d.seq for d in stub.received] == [1, 2, 3]
        assert stub.received[0].content_type == NSATU_TYPE
        async with session.get(stub.url + "/received") as resp:
            listed = await resp.json()
        assert [base64.b64decode(d["body_b64"]) for d in listed] == docs
        assert listed[2]["body"] == docs[2].decode() and listed[2]["content_type"] == NSATU_TYPE


async def test_url_needs_a_running_stub() -> None:
    stub = StubNativeSystem("nsatu", NSATU_TYPE)
    with pytest.raises(RuntimeError, match="not running"):
        _ = stub.url


async def test_fail_window_returns_503_then_recovers() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        stub.fail_for(0.3)
        assert await post(session, stub.url, document()) == 503
        async with session.get(stub.url + "/outbox") as resp:
            assert resp.status == 503
        assert stub.received == []
        await asyncio.sleep(0.4)
        assert await post(session, stub.url, document()) == 202
        assert stub.attempts == 2 and len(stub.received) == 1

        async with session.post(stub.url + "/control/fail?seconds=30") as resp:
            assert resp.status == 200
        assert await post(session, stub.url, document()) == 503
        async with session.post(stub.url + "/control/fail?seconds=0") as resp:
            assert resp.status == 200
        assert await post(session, stub.url, document()) == 202
        async with session.post(stub.url + "/control/fail") as resp:
            assert resp.status == 400


async def test_down_until_told_otherwise() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        stub.set_down(True)
        assert await post(session, stub.url, document()) == 503
        stub.set_down(False)
        assert await post(session, stub.url, document()) == 202
        async with session.post(stub.url + "/control/down?down=true") as resp:
            assert resp.status == 200
        assert await post(session, stub.url, document()) == 503
        async with session.post(stub.url + "/control/down?down=false") as resp:
            assert resp.status == 200
        assert await post(session, stub.url, document()) == 202


async def test_poison_and_rejected_documents_return_422() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        assert await post(session, stub.url, document(summary="POISON pill")) == 422
        stub.reject_refs(lambda ref: ref.endswith("5c"))
        assert await post(session, stub.url, document("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c")) == 422
        stub.reject_documents(lambda body: b"quarantine" in body)
        assert await post(session, stub.url, document(summary="quarantine this")) == 422
        assert await post(session, stub.url, b'{"doc_type": "status.update"}') == 422
        assert await post(session, stub.url, document()) == 202
        assert len(stub.received) == 1


async def test_wrong_content_type_is_415() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        assert await post(session, stub.url, document(), "application/json") == 415
        assert await post(session, stub.url, document(), NSATU_TYPE + "; charset=utf-8") == 202


async def test_unvalidated_stub_takes_any_bytes() -> None:
    async with StubNativeSystem("test", "text/plain") as stub, aiohttp.ClientSession() as session:
        assert await post(session, stub.url, b"\xff anything", "text/plain") == 202
        assert await post(session, stub.url, b"POISON", "text/plain") == 422
        async with session.get(stub.url + "/received") as resp:
            [item] = await resp.json()
        assert item["body"] is None and base64.b64decode(item["body_b64"]) == b"\xff anything"


async def test_outbox_polling() -> None:
    async with StubNativeSystem("nsatu", NSATU_TYPE) as stub, aiohttp.ClientSession() as session:
        async with session.get(stub.url + "/outbox") as resp:
            assert await resp.json() == {"items": [], "last": 0}
        first, second = document(summary="one"), document(summary="two")
        assert stub.emit(first) == 1
        async with session.post(stub.url + "/control/emit", data=second) as resp:
            assert resp.status == 201 and (await resp.json()) == {"seq": 2}
        async with session.get(stub.url + "/outbox?after=0") as resp:
            page = await resp.json()
        assert page["last"] == 2
        assert [i["seq"] for i in page["items"]] == [1, 2]
        assert [base64.b64decode(i["body_b64"]) for i in page["items"]] == [first, second]
        assert page["items"][0]["content_type"] == NSATU_TYPE
        async with session.get(stub.url + "/outbox?after=1") as resp:
            page = await resp.json()
        assert [i["body"] for i in page["items"]] == [second.decode()]
        async with session.get(stub.url + "/outbox?after=2") as resp:
            assert (await resp.json())["items"] == []
        async with session.get(stub.url + "/outbox?after=0&limit=1") as resp:
            assert [i["seq"] for i in (await resp.json())["items"]] == [1]
        async with session.get(stub.url + "/outbox?after=x") as resp:
            assert resp.status == 400
        [decoded] = CODECS["nsatu"].decode(
            base64.b64decode(page["items"][0]["body_b64"]) if page["items"] else first
        )
        assert decoded.kind == "status.update"


async def test_each_organisation_gets_its_own_port() -> None:
    async with (
        StubNativeSystem("eumam", CODECS["eumam"].media_type) as a,
        StubNativeSystem("udcg", CODECS["udcg"].media_type) as b,
    ):
        assert a.url != b.url


async def test_idempotent_stub_records_a_key_once() -> None:
    import aiohttp

    from adapters.stub import StubNativeSystem

    async with StubNativeSystem("plain", "text/plain", idempotent=True) as stub, aiohttp.ClientSession() as s:
        hdrs = {"Content-Type": "text/plain", "Idempotency-Key": "k-1"}
        async with s.post(stub.url + "/inbox", data=b"a", headers=hdrs) as r1:
            assert r1.status == 202
        async with s.post(stub.url + "/inbox", data=b"a", headers=hdrs) as r2:
            assert r2.status == 200 and (await r2.json())["duplicate"] is True
        assert len(stub.received) == 1 and stub.repeats == 1
