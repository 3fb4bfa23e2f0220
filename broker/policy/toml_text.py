"""TOML text for the policy: quoting and key paths as the renderer writes them, and the locator that
maps a key path back to its line for the loader's messages.

The locator runs only on text that `tomllib` has already parsed, so it may assume valid TOML; it is a
small scanner of its own because `tomllib` keeps no positions.
"""

from __future__ import annotations

import bisect
import re
from datetime import UTC, datetime

__all__ = ["Locator", "Path_", "fmt_key", "fmt_path", "toml_num", "toml_str", "toml_time"]

Path_ = tuple[str | int, ...]  # a dotted key path in the TOML document; ints index arrays

_BARE_RE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\", "e": "\x1b"}


class Locator:
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


def fmt_key(k: str | int) -> str:
    if isinstance(k, int):
        return f"[{k}]"
    return k if _BARE_RE.fullmatch(k) else toml_str(k)


def fmt_path(path: Path_) -> str:
    out = ""
    for k in path:
        part = fmt_key(k)
        out += part if (isinstance(k, int) or not out) else "." + part
    return out


def toml_str(s: str) -> str:
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


def toml_num(x: float) -> str:
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if float(x).is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(float(x))


def toml_time(t: datetime) -> str:
    text = t.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
