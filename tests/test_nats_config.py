"""The NATS config generated from the policy: the example in deploy/, what `broker nats-config` prints,
that nats-server accepts it, and the permission table's invariants (issue #5)."""

from __future__ import annotations

import contextlib
import io
import stat
import subprocess
from pathlib import Path

import pytest

from broker import cli
from broker.identity.state import StatePaths
from broker.nats.names import (
    ADMIN,
    AUDIT,
    DISPATCHER,
    GATEWAY,
    READER,
    adapter_service,
    audit_subject,
    certificate_cn,
    inbox_prefix,
)
from broker.nats.permissions import NatsView, delivery_filter_subjects, permissions, services
from broker.nats.security import (
    credential_paths,
    ensure_nats_identities,
    example_config,
    example_view,
    render_nats_config,
)
from broker.nats.server import nats_server_binary
from broker.nats.settings import bus_settings, service_for_bus
from broker.policy.defaults import ensure_defaults
from broker.policy.loader import load_policy
from schemas.ids import PARTY

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "nats.conf"


def test_deploy_example_is_the_generated_config() -> None:
    assert DEPLOY.read_text(encoding="utf-8") == example_config(), (
        "deploy/nats.conf is stale: regenerate it with broker.nats.security.example_config()"
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    paths = StatePaths(tmp_path_factory.mktemp("cfg-state"))
    ensure_defaults(paths)
    ensure_nats_identities(paths, load_policy(paths.policy))
    return paths


def test_nats_server_accepts_the_generated_config(made: StatePaths, tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(render_nats_config(made, load_policy(made.policy)), encoding="utf-8")
    done = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_broker_nats_config_prints_it(made: StatePaths) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # the parser and the command, not cli.main (which configures logging for the whole process)
        args = cli.build_parser().parse_args(
            ["--state", str(made.root), "nats-config", "--listen", "127.0.0.2:4333"]
        )
        assert args.func(args) == 0
    printed = out.getvalue()
    assert printed == render_nats_config(made, load_policy(made.policy), host="127.0.0.2", port=4333)
    assert 'listen: "127.0.0.2:4333"' in printed and str(made.ca_crt) in printed


def test_identities_are_made_once_with_private_keys_0600(made: StatePaths) -> None:
    view = NatsView.of(load_policy(made.policy))
    for svc in services(view):
        crt, key = credential_paths(made, svc)
        assert crt.exists() and key.exists()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ensure_nats_identities(made, view) == []  # idempotent


def test_a_nats_identity_can_never_be_a_sender_or_operator() -> None:
    for svc in services(example_view()):
        assert not PARTY.matches(certificate_cn(svc)), svc


def test_names_agree_with_the_services() -> None:
    assert service_for_bus("coord-gateway") == GATEWAY
    assert service_for_bus("coord-dispatcher") == DISPATCHER
    assert service_for_bus("coord-audit") == AUDIT
    assert service_for_bus("coord-admin") == ADMIN
    assert service_for_bus("coord-audit-export") == READER
    assert service_for_bus("coord-adapter-nsatu") == adapter_service("NSATU")
    assert service_for_bus("coord-adapter-nsatu-2") == adapter_service("NSATU")
    with pytest.raises(ValueError):
        service_for_bus("tests")


def test_bus_settings_tls_only_for_a_tls_url(made: StatePaths) -> None:
    secure = bus_settings(made, GATEWAY, "tls://127.0.0.1:4222")
    assert secure.tls is not None and secure.tls_handshake_first
    assert secure.inbox_prefix == inbox_prefix(GATEWAY) and not secure.ensure_streams
    plain = bus_settings(made, ADMIN, "nats://127.0.0.1:4222")
    assert plain.tls is None and not plain.tls_handshake_first and plain.ensure_streams


def test_delivery_filter_subjects() -> None:
    assert delivery_filter_subjects("NSATU", 3) == [
        "coord.deliver.NSATU.0.>",
        "coord.deliver.NSATU.1.>",
        "coord.deliver.NSATU.2.>",
        "coord.deliver.NSATU.3.>",
    ]
    assert delivery_filter_subjects("UDCG", 0) == ["coord.deliver.UDCG.0.>"]


# ------------------------------------------------------------------------------- the permission table


def _table(view: NatsView) -> dict[str, tuple[set[str], set[str], set[str], set[str]]]:
    out = {}
    for u in permissions(view):
        p = u.permissions
        out[u.user.removeprefix("CN=nats.")] = (
            set(p.publish_allow),
            set(p.publish_deny),
            set(p.subscribe_allow),
            set(p.subscribe_deny),
        )
    return out


def _publishers(view: NatsView, prefix: str) -> set[str]:
    return {svc for svc, (pub, _, _, _) in _table(view).items() if any(s.startswith(prefix) for s in pub)}


def test_one_publisher_per_stream() -> None:
    view = example_view()
    assert _publishers(view, "coord.msg.") == {GATEWAY}
    assert _publishers(view, "coord.deliver.") == {DISPATCHER}
    assert _publishers(view, "coord.audit.") == {AUDIT}
    assert _publishers(view, "coord.dead.") == {adapter_service(o) for o in view.organisations}
    assert _table(view)[AUDIT][0] & {audit_subject("local")} == {audit_subject("local")}


def test_ranks_follow_clearance_and_system_high() -> None:
    view = example_view()  # system high SECRET (3); UDCG CONFIDENTIAL (2)
    gw = _table(view)[GATEWAY][0]
    assert "coord.msg.2.UDCG.>" in gw and "coord.msg.3.UDCG.>" not in gw
    assert "coord.msg.3.NSATU.>" in gw and not any(s.startswith("coord.msg.4.") for s in gw)
    disp = _table(view)[DISPATCHER][0]
    assert "coord.deliver.UDCG.2.>" in disp and "coord.deliver.UDCG.3.>" not in disp
    low = NatsView("local", 1, view.clearances)  # system high lowered to RESTRICTED
    assert not any(".2." in s or ".3." in s for s in _table(low)[DISPATCHER][0] if s.startswith("coord."))


def test_no_service_holds_wildcards_or_destruction() -> None:
    for svc, (pub, pub_deny, sub, sub_deny) in _table(example_view()).items():
        assert not {">", "$JS.API.>", "coord.>", "_INBOX.>"} & (pub | sub), svc
        assert sub == {f"{inbox_prefix(svc)}.>"}, (svc, sub)  # replies only: no interest on any stream
        assert {"$SYS.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"} <= pub_deny, svc
        assert "$SYS.>" in sub_deny
        assert not any(".DELETE." in s or ".PURGE." in s or s.startswith("$SYS") for s in pub), svc


def test_only_the_admin_manages_streams_and_adapter_consumers() -> None:
    table = _table(example_view())
    for svc, (pub, _, _, _) in table.items():
        manages = {s for s in pub if ".STREAM.CREATE.COORD" in s or ".STREAM.UPDATE." in s}
        creates_delivery_consumers = {s for s in pub if s.startswith("$JS.API.CONSUMER.CREATE.COORD_DELIVER")}
        if svc == ADMIN:
            assert manages and creates_delivery_consumers
        else:
            assert not manages and not creates_delivery_consumers, svc
    nsatu = table[adapter_service("NSATU")][0]
    assert not any(s.startswith("$JS.API.CONSUMER.CREATE") for s in nsatu)
    assert not any("COORD_ACCEPTED" in s or "COORD_AUDIT" in s for s in nsatu)
    assert not any("adapter-eumam" in s or "EUMAM" in s or "eumam" in s for s in nsatu)
