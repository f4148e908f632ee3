"""Strict JSON ingress for the SDK API (security.md §7.2).

``parse_strict(raw)`` parses a request body and rejects, with a distinct :class:`BadJSON` code,
everything that FastAPI's default parsing accepts but that later breaks Postgres jsonb, RFC 8785
canonicalisation or UTF-8 encoding, or that makes parsers disagree:

====================  =====================================================================
code                  when
====================  =====================================================================
invalid_utf8          the body is not valid UTF-8 (encoded surrogates included)
bom_not_allowed       the body starts with a UTF-8 BOM
too_deep              more than ``max_depth`` nested arrays/objects (checked by an O(n),
                      string-aware byte scan *before* ``json.loads``: 100k-deep input is cheap)
malformed_json        not JSON: syntax error, trailing data, empty body
duplicate_key         an object has the same key twice (pointer: the duplicated member)
non_finite_number     ``NaN``, ``Infinity``, ``-Infinity``
number_out_of_range   any number whose magnitude exceeds 2**53 - 1 (I-JSON): integers, and
                      floats too (``1e400`` overflows to infinity; ``1e16`` is a float that RFC
                      8785 writes as the integer ``10000000000000000``, which would not parse
                      back, so canonical bytes of accepted input always re-parse to the same
                      bytes). Integer literals longer than 17 characters are rejected before
                      ``int()``, so the int-string limit is never reached
string_too_long       a string (value or key) longer than ``max_string`` code points
lone_surrogate        an unpaired ``\\uD800``-``\\uDFFF`` escape, in a value or a key
nul_character         U+0000, in a value or a key
too_many_keys         more than ``max_members`` object members in the whole document
                      (object members only; array items are bounded by the body size limit)
====================  =====================================================================

``BadJSON.pointer`` is the RFC 6901 pointer of the offending value (for keys: of the member)
when known; ``None`` for ``invalid_utf8``, ``bom_not_allowed``, ``too_deep`` and
``malformed_json``. Messages never contain input values.

Performance: the checks that need a walk of the parsed value (strings, member count) are
skipped when cheap whole-text tests prove them unnecessary (no ``\\u0000`` / ``\\uD8..`` escape
in the text, text shorter than ``max_string``, fewer ``:`` than ``max_members``), and pointers
for hook-detected errors (duplicates, numbers) are found by a second, lenient parse that runs
only on the error path. A typical small body costs about as much as ``json.loads`` with hooks.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import rfc8785

__all__ = [
    "I_JSON_MAX",
    "MAX_DEPTH",
    "MAX_MEMBERS",
    "MAX_STRING",
    "BadJSON",
    "canonical_bytes",
    "parse_strict",
    "safe_pointer",
]

MAX_DEPTH = 32
MAX_STRING = 64 * 1024
MAX_MEMBERS = 10_000
I_JSON_MAX = 2**53 - 1
_MAX_INT_CHARS = 17  # "-9007199254740991"


class BadJSON(ValueError):
    """The body is not acceptable strict JSON. Rendered as 422 problem+json by ``gateway.problems``."""

    status = 422

    def __init__(self, code: str, message: str, pointer: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pointer = None if pointer is None else safe_pointer(pointer)

    def __repr__(self) -> str:
        return f"BadJSON({self.code!r}, {self.message!r}, pointer={self.pointer!r})"


_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_MAX_POINTER = 512


def safe_pointer(pointer: str) -> str:
    """Make a pointer safe to put in a response or a log line.

    Keys may contain U+0000, control characters or lone surrogates (that is what is being
    rejected), which would break the UTF-8 encoding of the error response itself. Those
    characters are written as the text ``\\uXXXX``, and very long pointers are cut (``…``).
    Pointers of valid documents are returned unchanged.
    """
    if _UNSAFE.search(pointer) is not None:
        pointer = _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", pointer)
    if len(pointer) > _MAX_POINTER:
        pointer = pointer[: _MAX_POINTER - 1] + "\u2026"
    return pointer


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical bytes. Accepted ``parse_strict`` output never fails here."""
    return rfc8785.dumps(value)


# --------------------------------------------------------------------------------------------
# depth scan

# A JSON string (closing quote optional, so an unterminated string is consumed in one match and
# the scan stays linear).
_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_ALL_BYTES = bytes(range(256))
_NON_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_NORMALISE = bytes.maketrans(b"{}", b"[]")
_DELTA = [0] * 256
_DELTA[ord("[")] = 1
_DELTA[ord("]")] = -1


def _too_deep(raw: bytes, max_depth: int) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False  # cannot possibly nest deeper: the common case, no scan at all
    stripped = _STRING_BYTES.sub(b"", raw) if b'"' in raw else raw
    brackets = stripped.translate(_BRACKET_NORMALISE, _NON_BRACKETS)
    if len(brackets) <= max_depth:
        return False
    if b"[" * (max_depth + 1) in brackets:
        return True
    return max(accumulate(map(_DELTA.__getitem__, brackets))) > max_depth


# --------------------------------------------------------------------------------------------
# hooks (fast path)


class _HookError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _HookError("duplicate_key", "duplicate object key")
    return d


def _constant(name: str) -> Any:
    raise _HookError("non_finite_number", f"{name} is not allowed")


def _int(s: str) -> int:
    if len(s) > _MAX_INT_CHARS:
        raise _HookError("number_out_of_range", "integer outside ±(2**53-1)")
    i = int(s)
    if i > I_JSON_MAX or i < -I_JSON_MAX:
        raise _HookError("number_out_of_range", "integer outside ±(2**53-1)")
    return i


def _float(s: str) -> float:
    f = float(s)
    if f > I_JSON_MAX or f < -I_JSON_MAX:  # includes the overflow to ±inf (1e400)
        raise _HookError("number_out_of_range", "number outside ±(2**53-1)")
    return f


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float
)
_decode = _decoder.decode

# --------------------------------------------------------------------------------------------
# hooks (error path: locate the pointer)


class _Flag:
    __slots__ = ("code", "key")

    def __init__(self, code: str, key: str | None = None) -> None:
        self.code = code
        self.key = key


class _DupDict(dict):  # type: ignore[type-arg]
    dup_key: str


def _loc_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            dd = _DupDict(d)
            dd.dup_key = k
            # keep the remaining members so flags after the duplicate are still reachable
            for k2, v2 in pairs:
                dd.setdefault(k2, v2)
            return dd
        d[k] = v
    return d


def _loc_int(s: str) -> Any:
    try:
        return _int(s)
    except _HookError as e:
        return _Flag(e.code)


def _loc_float(s: str) -> Any:
    try:
        return _float(s)
    except _HookError as e:
        return _Flag(e.code)


_locator = json.JSONDecoder(
    object_pairs_hook=_loc_pairs,
    parse_constant=lambda name: _Flag("non_finite_number"),
    parse_int=_loc_int,
    parse_float=_loc_float,
)


def _esc(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1") if ("~" in token or "/" in token) else token


def _find_flag(v: Any, code: str, ptr: str) -> str | None:
    if isinstance(v, _Flag):
        return ptr if v.code == code else None
    if isinstance(v, dict):
        for k, item in v.items():
            found = _find_flag(item, code, ptr + "/" + _esc(k))
            if found is not None:
                return found
        if code == "duplicate_key" and isinstance(v, _DupDict):
            return ptr + "/" + _esc(v.dup_key)
    elif isinstance(v, list):
        for i, item in enumerate(v):
            found = _find_flag(item, code, f"{ptr}/{i}")
            if found is not None:
                return found
    return None


def _locate(text: str, code: str) -> str | None:
    try:
        tree = _locator.decode(text)
    except Exception:  # pragma: no cover - defensive: the pointer is a nicety
        return None
    return _find_flag(tree, code, "")


# --------------------------------------------------------------------------------------------
# walk (strings, member count)

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Walker:
    __slots__ = ("max_string", "max_members", "check_strings", "members")

    def __init__(self, max_string: int, max_members: int, check_strings: bool) -> None:
        self.max_string = max_string
        self.max_members = max_members
        self.check_strings = check_strings
        self.members = 0

    def string(self, s: str, ptr: str, what: str) -> None:
        if len(s) > self.max_string:
            raise BadJSON("string_too_long", f"{what} longer than {self.max_string} characters", ptr)
        if "\x00" in s:
            raise BadJSON("nul_character", f"{what} contains U+0000", ptr)
        if _SURROGATE.search(s) is not None:
            raise BadJSON("lone_surrogate", f"{what} contains an unpaired UTF-16 surrogate", ptr)

    def walk(self, v: Any, ptr: str) -> None:
        t = type(v)
        if t is str:
            if self.check_strings:
                self.string(v, ptr, "string")
        elif t is dict:
            self.members += len(v)
            if self.members > self.max_members:
                raise BadJSON("too_many_keys", f"more than {self.max_members} object members", ptr)
            for k, item in v.items():
                child = ptr + "/" + _esc(k)
                if self.check_strings:
                    self.string(k, child, "object key")
                self.walk(item, child)
        elif t is list:
            for i, item in enumerate(v):
                self.walk(item, f"{ptr}/{i}")


# --------------------------------------------------------------------------------------------


def parse_strict(
    raw: bytes,
    *,
    max_depth: int = MAX_DEPTH,
    max_string: int = MAX_STRING,
    max_members: int = MAX_MEMBERS,
) -> Any:
    """Parse ``raw`` as strict I-JSON, or raise :class:`BadJSON` (see the module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJSON("invalid_utf8", f"body is not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise BadJSON("bom_not_allowed", "UTF-8 BOM not allowed")
    if _too_deep(raw, max_depth):
        raise BadJSON("too_deep", f"nesting deeper than {max_depth}")
    try:
        value = _decode(text)
    except _HookError as e:
        raise BadJSON(e.code, e.message, _locate(text, e.code)) from None
    except json.JSONDecodeError as e:
        if not text.strip():
            raise BadJSON("malformed_json", "empty body") from None
        raise BadJSON("malformed_json", f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # only reachable with a max_depth near the recursion limit
        raise BadJSON("too_deep", f"nesting deeper than {max_depth}") from None

    check_strings = (
        len(text) > max_string + 2 or "\\u0000" in text or _SURROGATE_ESCAPE.search(text) is not None
    )
    if check_strings or text.count(":") > max_members:
        walker = _Walker(max_string, max_members, check_strings)
        if type(value) is str:
            walker.string(value, "", "string")
        else:
            walker.walk(value, "")
    return value
