"""The state folder of ICD §9, laid out in one place.

    DIR/
     ├── pki/ca.crt, pki/ca.key          the dev certificate authority (key 0600)
     ├── pki/server.crt, pki/server.key  the gateway's TLS server certificate (also NATS'); SAN
     │                                   127.0.0.1, ::1, localhost
     ├── identities/<id>/tls.crt, tls.key        mutual-TLS client certificate (CN = id), key 0600
     ├── identities/<id>/signing.key, keyid      Ed25519 signing key (PKCS#8 PEM, 0600) and key id
     ├── identities/broker/signing.key, keyid    the broker's countersigning key (`broker:<name>`)
     ├── policy.toml                     the policy (broker.policy.model)
     ├── nats/                           the embedded NATS server's data
     └── audit/                          the audit log's files

Every file is written atomically (a temporary file in the same folder, fsync, `os.replace`); a private file
is created with mode 0600 from its first byte, so it is never readable by others at any moment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from schemas.ids import BROKER_ID, PARTY

__all__ = ["StatePaths", "write_private", "write_public"]



@dataclass(frozen=True, slots=True)
class StatePaths:
    """Where everything of one broker state folder lives. Build it once from `--state DIR`."""

    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def ca_crt(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki_dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.pki_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.pki_dir / "server.key"

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    @property
    def identities_dir(self) -> Path:
        return self.root / "identities"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    def identity_dir(self, ident: str) -> Path:
        """`identities/<id>/`; `ident` must be a sender/operator id (or `broker`), never a path."""
        if not PARTY.matches(ident):  # sender and operator ids; `broker` has the same form
            raise ValueError(f"identity id {ident!r} must match ^[a-z][a-z0-9-]{{2,62}}$")
        return self.identities_dir / ident

    def tls_crt(self, ident: str) -> Path:
        return self.identity_dir(ident) / "tls.crt"

    def tls_key(self, ident: str) -> Path:
        return self.identity_dir(ident) / "tls.key"

    def signing_key(self, ident: str) -> Path:
        return self.identity_dir(ident) / "signing.key"

    def keyid_file(self, ident: str) -> Path:
        return self.identity_dir(ident) / "keyid"

    @property
    def broker_signing_key(self) -> Path:
        return self.signing_key(BROKER_ID)

    @property
    def broker_keyid_file(self) -> Path:
        return self.keyid_file(BROKER_ID)

    def relative(self, path: Path) -> str:
        """`path` as shown to a user: relative to the state folder where it lies inside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def _write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond `mode`
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic "create if absent": FileExistsError if it is there
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write a private file (mode 0600) atomically. With `overwrite=False`, raise FileExistsError
    rather than replace an existing file."""
    _write_atomic(path, data, 0o600, overwrite=overwrite)


def write_public(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write a public file (certificate, key id, policy) atomically, mode 0644 by default."""
    _write_atomic(path, data, mode, overwrite=overwrite)
