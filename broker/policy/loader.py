"""Loading the policy file (ICD §9 `policy.toml`): `tomllib`, then every rule of the documented shape
(broker/policy/model.py), refused whole with a `PolicyError` that names the file and the line.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from broker.dsse import is_valid_public_key
from broker.errors import PolicyError
from broker.policy.model import Operator, Organisation, Policy, Sender, SigningKey
from broker.policy.toml_text import Locator, Path_, fmt_path
from schemas.clearance import Clearance
from schemas.ids import BROKER_ID, KEY_NAME, ORGANISATION, PARTY, split_keyid
from schemas.kinds import KINDS

__all__ = ["load_policy", "parse_bytes", "parse_policy"]

_TOML_LINE_RE = re.compile(r"at line (\d+)")
_EXAMPLE_TIME = "2026-11-26T00:00:00Z"


_BROKER_REQUIRED = ("name", "system_high", "max_age_s", "max_skew_s", "keys")
_BROKER_OPTIONAL = ("rate_per_s", "rate_burst", "max_body_bytes")
_KEY_REQUIRED = ("public_key", "not_before", "not_after")
_KEY_OPTIONAL = ("revoked_at",)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._loc: Locator | None = None
        self._key_owner: dict[bytes, str] = {}

    def fail(self, path: Path_, message: str) -> NoReturn:
        if self._loc is None:
            self._loc = Locator(self.text)
        where = fmt_path(path)
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
            if not is_valid_public_key(public):
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
        if not KEY_NAME.matches(name):
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
        broker_keys = self.signing_keys(b["keys"], ("broker", "keys"), BROKER_ID, name)
        if f"{BROKER_ID}:{name}" not in broker_keys:
            self.fail(("broker", "keys"), f"missing the broker's countersigning key '{BROKER_ID}:{name}'")

        orgs: dict[str, Organisation] = {}
        otab = self.table(doc["organisations"], ("organisations",))
        if not otab:
            self.fail(("organisations",), "at least one organisation is required")
        for code, raw in otab.items():
            path: Path_ = ("organisations", code)
            if not ORGANISATION.matches(code):
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
        if ident == BROKER_ID:
            self.fail(path, f"{BROKER_ID!r} is reserved for the broker's own key")
        if not PARTY.matches(ident):
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
    return parse_bytes(data, str(path))


def parse_bytes(data: bytes, source: str) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError("not UTF-8", path=source, line=line) from None
    return parse_policy(text, source)
