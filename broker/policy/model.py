"""The broker's policy: who exists, what they may publish and read (ICD §9 `policy.toml`).

The model is immutable; a new file makes a new `Policy`, swapped in whole or not at all.
Below the model: the TOML loader (`load_policy`, `parse_policy`), the renderer (`render_policy`,
`write_policy`) and the watcher (`PolicyHolder`).

The file, exactly this shape (unknown keys are refused at every level)::

    [broker]
    name = "local"                 # broker instance; its countersigning key id is "broker:local"
    system_high = "NATO:SECRET"    # POLICY:LEVEL[:CAVEAT+CAVEAT], spaces in levels as "_"
    max_age_s = 600                # freshness window (ICD §3), > 0
    max_skew_s = 120               # >= 0
    rate_per_s = 1000              # per sender, optional (default 1000), > 0
    rate_burst = 2000              # optional (default 2000), integer >= 1
    max_body_bytes = 262144        # optional (default 256 KiB), integer >= 1

    [broker.keys."broker:local"]   # required: exactly the key "broker:<name>"
    public_key = "<base64 (RFC 4648 §4) of the 32 raw Ed25519 public key bytes>"
    not_before = 2026-11-26T00:00:00Z   # TOML offset date-times only (a local time is refused)
    not_after = 2027-11-26T00:00:00Z    # after not_before
    # revoked_at = 2026-12-01T00:00:00Z   optional

    [organisations.NSATU]          # at least one; code ^[A-Z][A-Z0-9]{1,15}$
    clearance = "NATO:SECRET"      # may exceed system_high: system high caps it anyway
    need_to_know = ["status.update", "capability.pledge"]   # registered kinds, no duplicates

    [senders.nsatu-liaison]        # id ^[a-z][a-z0-9-]{2,62}$, not "broker", not also an operator
    organisation = "NSATU"         # an organisation above
    publishes = ["status.update"]  # registered kinds, no duplicates
    # rate_per_s = 50              optional per-sender override, > 0

    # key id <sender>:<name>, name ^[A-Za-z0-9._-]{1,64}$
    [senders.nsatu-liaison.keys."nsatu-liaison:2026-11"]
    public_key = "..."
    not_before = 2026-11-26T00:00:00Z
    not_after = 2027-11-26T00:00:00Z

    [operators.duty-officer]       # same id form as senders
    organisation = "NSATU"
    clearance = "NATO:SECRET"

A policy that is malformed or inconsistent is refused whole with a `PolicyError` naming the file and the
1-based line of the offending key or table. Integers where numbers are expected are fine; booleans never
are. One public key may not be registered to two owners.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import structlog

from broker.errors import PolicyError
from broker.identity.state import write_public
from broker.rules.labels import Clearance
from schemas.kinds import KINDS

__all__ = [
    "BROKER_SENDER",
    "KEY_NAME_RE",
    "ORG_RE",
    "PARTY_RE",
    "Operator",
    "Organisation",
    "Policy",
    "PolicyHolder",
    "Sender",
    "SigningKey",
    "is_valid_ed25519_public_key",
    "load_policy",
    "parse_policy",
    "render_policy",
    "split_keyid",
    "write_policy",
]

BROKER_SENDER = "broker"  # reserved id: the broker's own countersigning key is `broker:<name>`


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 public key registered under `keyid` (`<owner>:<name>`)."""

    keyid: str
    public_key: bytes  # 32 raw bytes
    not_before: datetime  # aware, UTC
    not_after: datetime  # aware, UTC
    revoked_at: datetime | None = None

    def problem_at(self, now: datetime) -> str | None:
        """None if usable at `now`, else `revoked-key` or `expired-key` (ICD §6 names)."""
        if self.revoked_at is not None and now >= self.revoked_at:
            return "revoked-key"
        if not (self.not_before <= now <= self.not_after):
            return "expired-key"
        return None


@dataclass(frozen=True, slots=True)
class Organisation:
    code: str
    clearance: Clearance
    need_to_know: frozenset[str]


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    organisation: str
    publishes: frozenset[str]
    keys: Mapping[str, SigningKey]  # keyid -> key
    rate_per_s: float | None = None  # None: the broker default


@dataclass(frozen=True, slots=True)
class Operator:
    id: str
    organisation: str
    clearance: Clearance


@dataclass(frozen=True, slots=True)
class Policy:
    name: str  # the broker instance name; its countersigning key is `broker:<name>`
    system_high: Clearance
    max_age_s: float
    max_skew_s: float
    organisations: Mapping[str, Organisation]
    senders: Mapping[str, Sender]
    operators: Mapping[str, Operator]
    broker_keys: Mapping[str, SigningKey]  # keyid `broker:<name>` -> key
    rate_per_s: float = 1000.0
    rate_burst: int = 2000
    max_body_bytes: int = 256 * 1024
    source: str = field(default="", compare=False)  # path it was loaded from, for messages

    @property
    def broker_keyid(self) -> str:
        return f"{BROKER_SENDER}:{self.name}"


# --------------------------------------------------------------------------------------------------
# Identifier rules (ICD §1)

ORG_RE = re.compile(r"[A-Z][A-Z0-9]{1,15}")
PARTY_RE = re.compile(r"[a-z][a-z0-9-]{2,62}")
KEY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

_log = structlog.get_logger(__name__)

Path_ = tuple[str | int, ...]  # a dotted key path in the TOML document; ints index arrays


def split_keyid(keyid: str) -> tuple[str, str]:
    """`owner:name` -> (owner, name); ValueError when it is not of that form (ICD §1)."""
    owner, sep, name = keyid.partition(":")
    owner_ok = owner == BROKER_SENDER or PARTY_RE.fullmatch(owner) is not None
    if not sep or not owner_ok or not KEY_NAME_RE.fullmatch(name):
        raise ValueError(
            f"key id {keyid!r} must be <owner>:<name>, owner a sender id, name ^[A-Za-z0-9._-]{{1,64}}$"
        )
    return owner, name


# --------------------------------------------------------------------------------------------------
# Ed25519 public key validity: the point must decode (RFC 8032 §5.1.3) and not be of small order.
# cryptography accepts any 32 bytes, so the policy checks it here, once, at load time.

_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3


def is_valid_ed25519_public_key(raw: bytes) -> bool:
    """True iff `raw` is the canonical encoding of an Ed25519 point that is not of small order."""
    if len(raw) != 32:
        return False
    n = int.from_bytes(raw, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= _P:
        return False
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return False
    if x == 0 and sign:
        return False
    if x & 1 != sign:
        x = _P - x
    point = (x, y)
    for _ in range(3):  # 8·P is the identity iff P has small order
        point = _ed_add(point, point)
    return point != (0, 1)


# --------------------------------------------------------------------------------------------------
# Locating a key path in the text, for line numbers in messages. Runs only on text that tomllib has
# already parsed, so it may assume valid TOML.

_BARE_RE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


class _Locator:
    """Maps dotted key paths (table headers, keys, dotted keys, inline tables, array items) to lines."""

    def __init__(self, text: str) -> None:
        self._t = text
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._explicit: dict[Path_, int] = {}
        self._implicit: dict[Path_, int] = {}
        try:
            self._scan()
        except (IndexError, ValueError, AttributeError):
            pass  # best effort: whatever was found before stays usable

    def line_at(self, pos: int) -> int:
        return bisect.bisect_right(self._newlines, pos - 1) + 1

    def locate(self, path: Path_) -> int | None:
        for k in range(len(path), 0, -1):
            p = path[:k]
            if p in self._explicit:
                return self._explicit[p]
            if p in self._implicit:
                return self._implicit[p]
        return None

    def _record(self, path: Path_, pos: int) -> None:
        line = self.line_at(pos)
        self._explicit.setdefault(path, line)
        for k in range(1, len(path)):
            self._implicit.setdefault(path[:k], line)

    def _ws(self, i: int) -> int:
        t = self._t
        while i < len(t) and t[i] in " \t":
            i += 1
        return i

    def _blank(self, i: int) -> int:
        """Skip whitespace, newlines and comments."""
        t = self._t
        while i < len(t):
            c = t[i]
            if c in " \t\r\n":
                i += 1
            elif c == "#":
                j = t.find("\n", i)
                i = len(t) if j < 0 else j
            else:
                break
        return i

    def _basic(self, i: int) -> tuple[str, int]:
        t, out, j = self._t, [], i + 1
        while t[j] != '"':
            if t[j] == "\\":
                e = t[j + 1]
                if e in "uU":
                    width = 4 if e == "u" else 8
                    out.append(chr(int(t[j + 2 : j + 2 + width], 16)))
                    j += 2 + width
                else:
                    out.append(_ESCAPES.get(e, e))
                    j += 2
            else:
                out.append(t[j])
                j += 1
        return "".join(out), j + 1

    def _key(self, i: int) -> tuple[list[str], int]:
        t, parts = self._t, []
        while True:
            i = self._ws(i)
            if t[i] == '"':
                s, i = self._basic(i)
            elif t[i] == "'":
                j = t.index("'", i + 1)
                s, i = t[i + 1 : j], j + 1
            else:
                m = _BARE_RE.match(t, i)
                if m is None:
                    raise ValueError("not a key")
                s, i = m.group(), m.end()
            parts.append(s)
            j = self._ws(i)
            if j < len(t) and t[j] == ".":
                i = j + 1
                continue
            return parts, i

    def _value(self, i: int, path: Path_) -> int:
        t = self._t
        i = self._ws(i)
        if t.startswith('"""', i) or t.startswith("'''", i):
            q = t[i : i + 3]
            j = i + 3
            while not t.startswith(q, j):
                j += 2 if (q == '"""' and t[j] == "\\") else 1
            j += 3
            while j < len(t) and t[j] == q[0]:
                j += 1
            return j
        if t[i] == '"':
            return self._basic(i)[1]
        if t[i] == "'":
            return t.index("'", i + 1) + 1
        if t[i] == "[":
            i, idx = i + 1, 0
            while True:
                i = self._blank(i)
                if t[i] == "]":
                    return i + 1
                self._record((*path, idx), i)
                i = self._blank(self._value(i, (*path, idx)))
                if t[i] == ",":
                    i, idx = i + 1, idx + 1
        if t[i] == "{":
            i += 1
            while True:
                i = self._blank(i)
                if t[i] == "}":
                    return i + 1
                start = i
                keys, i = self._key(i)
                i = self._ws(i) + 1  # '='
                sub = (*path, *keys)
                self._record(sub, start)
                i = self._blank(self._value(i, sub))
                if t[i] == ",":
                    i += 1
        j = i
        while j < len(t) and t[j] not in ",]}#\r\n":
            j += 1
        return j

    def _scan(self) -> None:
        t = self._t
        table: Path_ = ()
        arrays: dict[Path_, int] = {}
        i = self._blank(0)
        while i < len(t):
            start = i
            if t[i] == "[":
                double = t.startswith("[[", i)
                keys, i = self._key(i + (2 if double else 1))
                i = self._ws(i) + (2 if double else 1)
                table = tuple(keys)
                if double:
                    arrays[table] = arrays.get(table, -1) + 1
                    table = (*table, arrays[table])
                self._record(table, start)
            else:
                keys, i = self._key(i)
                i = self._ws(i) + 1  # '='
                path = (*table, *keys)
                self._record(path, start)
                i = self._value(i, path)
            i = self._blank(i)


_TOML_LINE_RE = re.compile(r"at line (\d+)")
_EXAMPLE_TIME = "2026-11-26T00:00:00Z"


# --------------------------------------------------------------------------------------------------
# Parsing


def _fmt_key(k: str | int) -> str:
    if isinstance(k, int):
        return f"[{k}]"
    return k if _BARE_RE.fullmatch(k) else _toml_str(k)


def _fmt_path(path: Path_) -> str:
    out = ""
    for k in path:
        part = _fmt_key(k)
        out += part if (isinstance(k, int) or not out) else "." + part
    return out


_BROKER_REQUIRED = ("name", "system_high", "max_age_s", "max_skew_s", "keys")
_BROKER_OPTIONAL = ("rate_per_s", "rate_burst", "max_body_bytes")
_KEY_REQUIRED = ("public_key", "not_before", "not_after")
_KEY_OPTIONAL = ("revoked_at",)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._loc: _Locator | None = None
        self._key_owner: dict[bytes, str] = {}

    def fail(self, path: Path_, message: str) -> NoReturn:
        if self._loc is None:
            self._loc = _Locator(self.text)
        where = _fmt_path(path)
        text = f"{where}: {message}" if where else message
        raise PolicyError(text, path=self.source, line=self._loc.locate(path) or 1)

    # -- typed getters ---------------------------------------------------------------------------

    def table(self, value: object, path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, not {_type_name(value)}")
        return value

    def keys(
        self, table: dict[str, Any], path: Path_, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> None:
        allowed = set(required) | set(optional)
        for k in table:
            if k not in allowed:
                self.fail((*path, k), f"unknown key (expected {', '.join(sorted(allowed))})")
        for k in required:
            if k not in table:
                self.fail(path, f"missing key {k!r}")

    def string(self, value: object, path: Path_) -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_type_name(value)}")
        return value

    def integer(self, value: object, path: Path_, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, not {_type_name(value)}")
        if value < minimum:
            self.fail(path, f"must be at least {minimum}")
        return value

    def number(self, value: object, path: Path_, *, positive: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number, not {_type_name(value)}")
        f = float(value)
        if not math.isfinite(f):
            self.fail(path, "must be finite")
        if positive and f <= 0:
            self.fail(path, "must be greater than 0")
        if f < 0:
            self.fail(path, "must not be negative")
        return f

    def when(self, value: object, path: Path_) -> datetime:
        if not isinstance(value, datetime):
            what = _type_name(value)
            self.fail(path, f"must be a TOML date-time with offset (e.g. {_EXAMPLE_TIME}), not {what}")
        if value.tzinfo is None or value.utcoffset() is None:
            self.fail(path, f"must carry an offset (e.g. {_EXAMPLE_TIME}): a local date-time is ambiguous")
        return value.astimezone(UTC)

    def clearance(self, value: object, path: Path_) -> Clearance:
        text = self.string(value, path)
        try:
            return Clearance.parse(text)
        except ValueError as exc:
            self.fail(path, str(exc))

    def kinds(self, value: object, path: Path_) -> frozenset[str]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list of kinds, not {_type_name(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            kind = self.string(item, (*path, i))
            if kind not in KINDS:
                self.fail((*path, i), f"unknown kind {kind!r} (registered: {', '.join(KINDS)})")
            if kind in seen:
                self.fail((*path, i), f"kind {kind!r} listed twice")
            seen.add(kind)
        return frozenset(seen)

    # -- sections ----------------------------------------------------------------------------------

    def signing_keys(self, value: object, path: Path_, owner: str, name: str | None) -> dict[str, SigningKey]:
        out: dict[str, SigningKey] = {}
        for keyid, raw in self.table(value, path).items():
            kpath = (*path, keyid)
            try:
                k_owner, k_name = split_keyid(keyid)
            except ValueError as exc:
                self.fail(kpath, str(exc))
            if k_owner != owner:
                self.fail(kpath, f"key id owner {k_owner!r} is not {owner!r}, whom it is registered under")
            if name is not None and k_name != name:
                self.fail(kpath, f"the broker's key id must be '{owner}:{name}' (broker.name is {name!r})")
            t = self.table(raw, kpath)
            self.keys(t, kpath, _KEY_REQUIRED, _KEY_OPTIONAL)
            b64 = self.string(t["public_key"], (*kpath, "public_key"))
            try:
                public = _b64decode_strict(b64)
            except ValueError:
                self.fail((*kpath, "public_key"), "must be standard base64 (RFC 4648 §4, padded)")
            if len(public) != 32:
                self.fail((*kpath, "public_key"), f"must decode to 32 bytes (Ed25519), not {len(public)}")
            if not is_valid_ed25519_public_key(public):
                self.fail((*kpath, "public_key"), "is not a valid Ed25519 public key")
            if public in self._key_owner and self._key_owner[public] != owner:
                other = self._key_owner[public]
                self.fail((*kpath, "public_key"), f"the same public key is registered to {other!r}")
            self._key_owner[public] = owner
            not_before = self.when(t["not_before"], (*kpath, "not_before"))
            not_after = self.when(t["not_after"], (*kpath, "not_after"))
            if not not_before < not_after:
                self.fail((*kpath, "not_after"), "must be after not_before")
            revoked = None
            if "revoked_at" in t:
                revoked = self.when(t["revoked_at"], (*kpath, "revoked_at"))
            out[keyid] = SigningKey(keyid, public, not_before, not_after, revoked)
        return out

    def parse(self) -> Policy:
        try:
            doc = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_LINE_RE.search(str(exc))
            line = int(m.group(1)) if m else max(1, len(self.text.splitlines()))
            raise PolicyError(f"not valid TOML: {exc}", path=self.source, line=line) from None
        self.keys(doc, (), ("broker", "organisations"), ("senders", "operators"))

        b = self.table(doc["broker"], ("broker",))
        self.keys(b, ("broker",), _BROKER_REQUIRED, _BROKER_OPTIONAL)
        name = self.string(b["name"], ("broker", "name"))
        if not KEY_NAME_RE.fullmatch(name):
            self.fail(("broker", "name"), "must match ^[A-Za-z0-9._-]{1,64}$ (it names key broker:<name>)")
        system_high = self.clearance(b["system_high"], ("broker", "system_high"))
        max_age = self.number(b["max_age_s"], ("broker", "max_age_s"), positive=True)
        max_skew = self.number(b["max_skew_s"], ("broker", "max_skew_s"), positive=False)
        extra: dict[str, Any] = {}
        if "rate_per_s" in b:
            extra["rate_per_s"] = self.number(b["rate_per_s"], ("broker", "rate_per_s"), positive=True)
        if "rate_burst" in b:
            extra["rate_burst"] = self.integer(b["rate_burst"], ("broker", "rate_burst"), minimum=1)
        if "max_body_bytes" in b:
            mb = self.integer(b["max_body_bytes"], ("broker", "max_body_bytes"), minimum=1)
            extra["max_body_bytes"] = mb
        broker_keys = self.signing_keys(b["keys"], ("broker", "keys"), BROKER_SENDER, name)
        if f"{BROKER_SENDER}:{name}" not in broker_keys:
            self.fail(("broker", "keys"), f"missing the broker's countersigning key '{BROKER_SENDER}:{name}'")

        orgs: dict[str, Organisation] = {}
        otab = self.table(doc["organisations"], ("organisations",))
        if not otab:
            self.fail(("organisations",), "at least one organisation is required")
        for code, raw in otab.items():
            path: Path_ = ("organisations", code)
            if not ORG_RE.fullmatch(code):
                self.fail(path, f"organisation code {code!r} must match ^[A-Z][A-Z0-9]{{1,15}}$")
            t = self.table(raw, path)
            self.keys(t, path, ("clearance", "need_to_know"), ())
            orgs[code] = Organisation(
                code,
                self.clearance(t["clearance"], (*path, "clearance")),
                self.kinds(t["need_to_know"], (*path, "need_to_know")),
            )

        senders: dict[str, Sender] = {}
        for ident, raw in self.table(doc.get("senders", {}), ("senders",)).items():
            path = ("senders", ident)
            self._party_id(ident, path, "sender")
            t = self.table(raw, path)
            self.keys(t, path, ("organisation", "publishes"), ("keys", "rate_per_s"))
            org = self.string(t["organisation"], (*path, "organisation"))
            if org not in orgs:
                self.fail((*path, "organisation"), f"unknown organisation {org!r}")
            publishes = self.kinds(t["publishes"], (*path, "publishes"))
            rate = None
            if "rate_per_s" in t:
                rate = self.number(t["rate_per_s"], (*path, "rate_per_s"), positive=True)
            keys = self.signing_keys(t.get("keys", {}), (*path, "keys"), ident, None)
            senders[ident] = Sender(ident, org, publishes, MappingProxyType(keys), rate)

        operators: dict[str, Operator] = {}
        for ident, raw in self.table(doc.get("operators", {}), ("operators",)).items():
            path = ("operators", ident)
            self._party_id(ident, path, "operator")
            if ident in senders:
                self.fail(path, f"{ident!r} is a sender already: one id has one role")
            t = self.table(raw, path)
            self.keys(t, path, ("organisation", "clearance"), ())
            org = self.string(t["organisation"], (*path, "organisation"))
            if org not in orgs:
                self.fail((*path, "organisation"), f"unknown organisation {org!r}")
            operators[ident] = Operator(ident, org, self.clearance(t["clearance"], (*path, "clearance")))

        return Policy(
            name=name,
            system_high=system_high,
            max_age_s=max_age,
            max_skew_s=max_skew,
            organisations=MappingProxyType(orgs),
            senders=MappingProxyType(senders),
            operators=MappingProxyType(operators),
            broker_keys=MappingProxyType(broker_keys),
            source=self.source,
            **extra,
        )

    def _party_id(self, ident: str, path: Path_, role: str) -> None:
        if ident == BROKER_SENDER:
            self.fail(path, f"{BROKER_SENDER!r} is reserved for the broker's own key")
        if not PARTY_RE.fullmatch(ident):
            self.fail(path, f"{role} id {ident!r} must match ^[a-z][a-z0-9-]{{2,62}}$")


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a date-time"
    return "a " + type(value).__name__.replace("_", " ")


def _b64decode_strict(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not ASCII")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy text; raise PolicyError naming `source` and the line on any fault."""
    return _Parser(text, source).parse()


def load_policy(path: Path) -> Policy:
    """Load and validate `path`; raise PolicyError (naming the file and line) on any fault."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    return _parse_bytes(data, str(path))


def _parse_bytes(data: bytes, source: str) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError("not UTF-8", path=source, line=line) from None
    return parse_policy(text, source)


# --------------------------------------------------------------------------------------------------
# Rendering


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_num(x: float) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if float(x).is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(float(x))


def _toml_time(t: datetime) -> str:
    text = t.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _kinds_list(kinds: frozenset[str]) -> str:
    """ICD §5 order; one item a line when that keeps lines short."""
    known = [k for k in KINDS if k in kinds]
    ordered = [_toml_str(k) for k in known + sorted(kinds.difference(KINDS))]
    flat = "[" + ", ".join(ordered) + "]"
    if len(flat) <= 80:
        return flat
    return "[\n" + "".join(f"    {k},\n" for k in ordered) + "]"


def _key_tables(lines: list[str], prefix: str, keys: Mapping[str, SigningKey]) -> None:
    for keyid in sorted(keys):
        k = keys[keyid]
        lines.append("")
        lines.append(f"[{prefix}.keys.{_fmt_key(keyid)}]")
        lines.append(f"public_key = {_toml_str(_b64encode(k.public_key))}")
        lines.append(f"not_before = {_toml_time(k.not_before)}")
        lines.append(f"not_after = {_toml_time(k.not_after)}")
        if k.revoked_at is not None:
            lines.append(f"revoked_at = {_toml_time(k.revoked_at)}")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_policy(policy: Policy) -> str:
    """The policy as TOML text in the documented shape; `parse_policy(render_policy(p)) == p`."""
    lines = [
        "# Coordination broker policy (ICD §9), written by broker.policy.model.render_policy.",
        "# A running broker picks up edits; a malformed or inconsistent file is refused whole",
        "# and the policy in force is kept.",
        "",
        "[broker]",
        f"name = {_toml_str(policy.name)}",
        f"system_high = {_toml_str(str(policy.system_high))}",
        f"max_age_s = {_toml_num(policy.max_age_s)}",
        f"max_skew_s = {_toml_num(policy.max_skew_s)}",
        f"rate_per_s = {_toml_num(policy.rate_per_s)}",
        f"rate_burst = {policy.rate_burst}",
        f"max_body_bytes = {policy.max_body_bytes}",
    ]
    _key_tables(lines, "broker", policy.broker_keys)
    for code in sorted(policy.organisations):
        org = policy.organisations[code]
        lines += [
            "",
            f"[organisations.{_fmt_key(code)}]",
            f"clearance = {_toml_str(str(org.clearance))}",
            f"need_to_know = {_kinds_list(org.need_to_know)}",
        ]
    for ident in sorted(policy.senders):
        s = policy.senders[ident]
        prefix = f"senders.{_fmt_key(ident)}"
        lines += [
            "",
            f"[{prefix}]",
            f"organisation = {_toml_str(s.organisation)}",
            f"publishes = {_kinds_list(s.publishes)}",
        ]
        if s.rate_per_s is not None:
            lines.append(f"rate_per_s = {_toml_num(s.rate_per_s)}")
        _key_tables(lines, prefix, s.keys)
    for ident in sorted(policy.operators):
        o = policy.operators[ident]
        lines += [
            "",
            f"[operators.{_fmt_key(ident)}]",
            f"organisation = {_toml_str(o.organisation)}",
            f"clearance = {_toml_str(str(o.clearance))}",
        ]
    return "\n".join(lines) + "\n"


def write_policy(path: Path, policy: Policy) -> Policy:
    """Render, check and atomically write `policy` to `path` (mode 0644); return it as loaded from there.

    The text is parsed back before anything is written: an inconsistent policy never reaches the disk.
    """
    text = render_policy(policy)
    written = parse_policy(text, str(path))
    write_public(path, text.encode("utf-8"), mode=0o644)
    return written


# --------------------------------------------------------------------------------------------------
# Watching


@dataclass(frozen=True, slots=True)
class _FileState:
    mtime_ns: int
    size: int
    inode: int
    digest: bytes


class PolicyHolder:
    """The policy in force (`current`), swapped whole when the file changes and the new one is sound.

    `current` is one attribute assigned at once: readers take `holder.current` once per decision and
    use that object throughout. `on_change` callbacks run, in order, after each successful swap; an
    exception in one is logged and does not undo the swap.
    """

    def __init__(self, path: Path, policy: Policy | None = None) -> None:
        self.path = path
        self.on_change: list[Callable[[Policy], None]] = []
        self._seen: _FileState | None = None
        self._polls = 0
        self._good = True  # whether the content last read was accepted
        if policy is None:
            data, state = self._read()
            policy = _parse_bytes(data, str(path))
            self._seen = state
        self.current: Policy = policy

    def _read(self) -> tuple[bytes, _FileState]:
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError as exc:
            raise PolicyError(f"cannot read: {exc.strerror or exc}", path=str(self.path)) from None
        return data, _FileState(st.st_mtime_ns, st.st_size, st.st_ino, hashlib.sha256(data).digest())

    def _stat_changed(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return self._seen is not None
        seen = self._seen
        if seen is None:
            return True
        return (st.st_mtime_ns, st.st_size, st.st_ino) != (seen.mtime_ns, seen.size, seen.inode)

    def reload_now(self) -> bool:
        """Read the file now. True when the policy in force is the file's content (swapped in, or
        unchanged); False when the file is unreadable or refused (the old policy stays in force)."""
        try:
            data, state = self._read()
        except PolicyError as exc:
            if self._seen is not None:  # log a vanished file once, not on every poll
                _log.warning("policy.reload_failed", path=str(self.path), error=exc.reason, line=exc.line)
            self._seen = None
            return False
        previous = self._seen
        self._seen = state
        if previous is not None and previous.digest == state.digest:
            return self._good
        try:
            policy = _parse_bytes(data, str(self.path))
        except PolicyError as exc:
            self._good = False
            _log.warning("policy.reload_failed", path=str(self.path), error=exc.reason, line=exc.line)
            return False
        self._good = True
        if policy == self.current:
            return True
        self.current = policy
        _log.info(
            "policy.reloaded",
            path=str(self.path),
            organisations=len(policy.organisations),
            senders=len(policy.senders),
            operators=len(policy.operators),
        )
        for callback in list(self.on_change):
            try:
                callback(policy)
            except Exception as exc:
                _log.error("policy.on_change_failed", callback=repr(callback), error=repr(exc))
        return True

    def poll(self) -> bool:
        """One watcher step: reload if the file's (mtime, size, inode) changed, and re-hash it every
        tenth poll regardless (for file systems with coarse timestamps). True if it reloaded."""
        self._polls += 1
        if self._stat_changed() or self._polls % 10 == 0:
            before = self.current
            self.reload_now()
            return self.current is not before
        return False

    async def watch(self, interval: float = 0.5) -> None:
        """Poll the file every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.poll()
