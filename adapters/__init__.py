"""Adapters between the broker and the native systems of NSATU, EUMAM and UDCG.

`adapters.formats` holds the pure codecs of each body's native format; `adapters.stub` a small stub
native system (HTTP on loopback) for tests and `broker up`.
"""

__all__: list[str] = []
