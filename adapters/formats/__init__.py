"""Native-format codecs (pure, strict, both ways) for NSATU (JSON), EUMAM (XML) and UDCG (CSV).

See docs/native-formats.md. `CODECS` maps a codec name to its instance; `codec_for(name)` looks one up.
"""

from __future__ import annotations

from adapters.formats.base import MAX_NATIVE_BYTES, Codec, DeliveredMessage, NativeMessage
from adapters.formats.bodies import sample_bodies
from adapters.formats.eumam import EumamCodec
from adapters.formats.nsatu import NsatuCodec
from adapters.formats.udcg import UdcgCodec
from broker.errors import NativeFormatError

__all__ = [
    "CODECS",
    "MAX_NATIVE_BYTES",
    "Codec",
    "DeliveredMessage",
    "EumamCodec",
    "NativeMessage",
    "NsatuCodec",
    "UdcgCodec",
    "codec_for",
    "sample_bodies",
]

CODECS: dict[str, Codec] = {c.name: c for c in (NsatuCodec(), EumamCodec(), UdcgCodec())}


def codec_for(name: str) -> Codec:
    """The codec of a native system by name (`nsatu`, `eumam`, `udcg`, case-insensitive)."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise NativeFormatError(
            f"no codec named {name[:32]!r}; expected one of {', '.join(CODECS)}"
        ) from None
