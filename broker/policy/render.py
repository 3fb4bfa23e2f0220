"""Rendering the policy as TOML in the documented shape (`parse_policy(render_policy(p)) == p`), and
writing it atomically, checked before it reaches the disk.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path

from broker.identity.state import write_public
from broker.policy.loader import parse_policy
from broker.policy.model import Policy, SigningKey
from broker.policy.toml_text import fmt_key, toml_num, toml_str, toml_time
from schemas.kinds import KINDS

__all__ = ["render_policy", "write_policy"]


def _kinds_list(kinds: frozenset[str]) -> str:
    """ICD §5 order; one item a line when that keeps lines short."""
    known = [k for k in KINDS if k in kinds]
    ordered = [toml_str(k) for k in known + sorted(kinds.difference(KINDS))]
    flat = "[" + ", ".join(ordered) + "]"
    if len(flat) <= 80:
        return flat
    return "[\n" + "".join(f"    {k},\n" for k in ordered) + "]"


def _key_tables(lines: list[str], prefix: str, keys: Mapping[str, SigningKey]) -> None:
    for keyid in sorted(keys):
        k = keys[keyid]
        lines.append("")
        lines.append(f"[{prefix}.keys.{fmt_key(keyid)}]")
        lines.append(f"public_key = {toml_str(_b64encode(k.public_key))}")
        lines.append(f"not_before = {toml_time(k.not_before)}")
        lines.append(f"not_after = {toml_time(k.not_after)}")
        if k.revoked_at is not None:
            lines.append(f"revoked_at = {toml_time(k.revoked_at)}")


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
        f"name = {toml_str(policy.name)}",
        f"system_high = {toml_str(str(policy.system_high))}",
        f"max_age_s = {toml_num(policy.max_age_s)}",
        f"max_skew_s = {toml_num(policy.max_skew_s)}",
        f"rate_per_s = {toml_num(policy.rate_per_s)}",
        f"rate_burst = {policy.rate_burst}",
        f"max_body_bytes = {policy.max_body_bytes}",
    ]
    _key_tables(lines, "broker", policy.broker_keys)
    for code in sorted(policy.organisations):
        org = policy.organisations[code]
        lines += [
            "",
            f"[organisations.{fmt_key(code)}]",
            f"clearance = {toml_str(str(org.clearance))}",
            f"need_to_know = {_kinds_list(org.need_to_know)}",
        ]
    for ident in sorted(policy.senders):
        s = policy.senders[ident]
        prefix = f"senders.{fmt_key(ident)}"
        lines += [
            "",
            f"[{prefix}]",
            f"organisation = {toml_str(s.organisation)}",
            f"publishes = {_kinds_list(s.publishes)}",
        ]
        if s.rate_per_s is not None:
            lines.append(f"rate_per_s = {toml_num(s.rate_per_s)}")
        _key_tables(lines, prefix, s.keys)
    for ident in sorted(policy.operators):
        o = policy.operators[ident]
        lines += [
            "",
            f"[operators.{fmt_key(ident)}]",
            f"organisation = {toml_str(o.organisation)}",
            f"clearance = {toml_str(str(o.clearance))}",
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
