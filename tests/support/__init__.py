"""Helpers shared by the tests, imported as a package (`from tests.support import ...`); the fixtures
live in tests/conftest.py and use these too.

    messages   building, sealing and editing messages and envelopes
    waiting    waiting on a condition (never a fixed sleep as evidence)
    audit      reading the audit records a test wrote
    dsse       a reference DSSE verifier built from the broker's primitives (for the public vectors)
"""
