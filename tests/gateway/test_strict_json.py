"""Tests for gateway.strict_json (security.md §7.2, §7.4, §8.3 scenario 31)."""

from __future__ import annotations

import json
import time

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.strict_json import BadJSON, canonical_bytes, parse_strict, safe_pointer


def code_of(raw: bytes, **limits) -> tuple[str, str | None]:
    with pytest.raises(BadJSON) as info:
        parse_strict(raw, **limits)
    return info.value.code, info.value.pointer


# Scenario 31 corpus (the JSON-level part; media types, wrong types, extra fields and the 1 MB
# string are the route's and the body limit's business).
CORPUS = [
    (b'{"x": NaN}', "non_finite_number", "/x"),
    (b'{"x": Infinity}', "non_finite_number", "/x"),
    (b'{"x": [-Infinity]}', "non_finite_number", "/x/0"),
    (b'{"x": 1e400}', "number_out_of_range", "/x"),
    (b'{"x": -1e400}', "number_out_of_range", "/x"),
    (b'{"a": 1, "a": 2}', "duplicate_key", "/a"),
    (b'{"o": [{"k": 1, "j": 2, "k": 3}]}', "duplicate_key", "/o/0/k"),
    (b'{"s": "\\ud800"}', "lone_surrogate", "/s"),
    (b'{"s": "\\udc00x"}', "lone_surrogate", "/s"),
    (b'{"s": "\\ude00\\ud83d"}', "lone_surrogate", "/s"),  # reversed pair
    (b'{"\\ud800": 1}', "lone_surrogate", "/\\ud800"),
    (b'{"s": "\\u0000"}', "nul_character", "/s"),
    (b'{"\\u0000k": 1}', "nul_character", "/\\u0000k"),
    (b"[" * 10_000 + b"]" * 10_000, "too_deep", None),
    (b'{"n": ' + b"1" * 5000 + b"}", "number_out_of_range", "/n"),
    (b'{"n": 9007199254740992}', "number_out_of_range", "/n"),
    (b'{"n": -9007199254740992}', "number_out_of_range", "/n"),
    (b'{"n": 12345678901234567890}', "number_out_of_range", "/n"),
    (b'{"n": 1e16}', "number_out_of_range", "/n"),  # RFC 8785 would write it as a 17-digit integer
    (b'{"n": -1.5e300}', "number_out_of_range", "/n"),
    (b'\xef\xbb\xbf{"a": 1}', "bom_not_allowed", None),
    (b'{"a": "\xff"}', "invalid_utf8", None),
    (b'{"a": "\xed\xa0\x80"}', "invalid_utf8", None),  # a surrogate encoded as UTF-8
    (b'{"a": 1} x', "malformed_json", None),
    (b'{"a": 1}{"b": 2}', "malformed_json", None),
    (b"", "malformed_json", None),
    (b"  \n", "malformed_json", None),
    (b'{"a": }', "malformed_json", None),
    (b"{'a': 1}", "malformed_json", None),
    (b'{"a": "\n"}', "malformed_json", None),  # raw control character in a string
    (b'{"a": 01}', "malformed_json", None),
    (b'{"a": "unterminated', "malformed_json", None),
]


class TestRejected:
    @pytest.mark.parametrize(("raw", "code", "pointer"), CORPUS, ids=[c[1] + f"-{i}" for i, c in enumerate(CORPUS)])
    def test_corpus(self, raw: bytes, code: str, pointer: str | None) -> None:
        """Each malformed input gets its documented code and pointer."""
        assert code_of(raw) == (code, pointer)

    def test_depth_limit_is_exact(self) -> None:
        """Depth 32 is accepted, depth 33 is too_deep, for arrays, objects and mixtures."""
        assert parse_strict(b"[" * 32 + b"]" * 32) is not None
        assert code_of(b"[" * 33 + b"]" * 33)[0] == "too_deep"
        obj33 = b'{"a":' * 33 + b"1" + b"}" * 33
        assert code_of(obj33)[0] == "too_deep"
        mixed = b'[{"a":' * 16 + b"[1]" + b"}]" * 16
        assert code_of(mixed)[0] == "too_deep"
        assert parse_strict(b'[{"a":' * 16 + b"1" + b"}]" * 16)
        assert code_of(b"[" * 5 + b"]" * 5, max_depth=4)[0] == "too_deep"

    def test_depth_scan_is_string_aware(self) -> None:
        """Brackets inside strings (and escaped quotes) do not count as nesting."""
        value = parse_strict(b'["' + b"[" * 100 + b'\\"{{{{", "]]]"]')
        assert value == ["[" * 100 + '"{{{{', "]]]"]
        many_siblings = b"[" + b",".join([b"[[1]]"] * 1000) + b"]"
        assert len(parse_strict(many_siblings)) == 1000

    def test_deep_nesting_is_cheap(self) -> None:
        """100k-deep nesting is rejected by the byte scan, without a RecursionError."""
        raw = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        start = time.perf_counter()
        assert code_of(raw)[0] == "too_deep"
        assert code_of(b"[" * 250_000)[0] == "too_deep"
        assert time.perf_counter() - start < 1.0

    def test_unterminated_string_with_escaped_quotes_is_linear(self) -> None:
        raw = b'["' + b'\\"' * 100_000 + b"[" * 40
        start = time.perf_counter()
        assert code_of(raw)[0] in ("malformed_json", "too_deep")
        assert time.perf_counter() - start < 1.0

    def test_string_too_long(self) -> None:
        """Values and keys over max_string characters are rejected with their pointer."""
        assert code_of(b'{"a": ["' + b"x" * 65537 + b'"]}') == ("string_too_long", "/a/0")
        assert parse_strict(b'{"a": "' + b"x" * 65536 + b'"}')["a"] == "x" * 65536
        assert code_of(b'{"' + b"k" * 11 + b'": 1}', max_string=10)[0] == "string_too_long"
        assert code_of(b'"abcdef"', max_string=5) == ("string_too_long", "")
        # counted in code points, not bytes
        assert parse_strict(('"' + "\u00e9" * 10 + '"').encode(), max_string=10) == "\u00e9" * 10

    def test_too_many_keys(self) -> None:
        """Object members are counted over the whole document."""
        ok = json.dumps([{"k": i} for i in range(10_000)]).encode()
        assert len(parse_strict(ok)) == 10_000
        too_many = json.dumps([{"k": i} for i in range(10_001)]).encode()
        assert code_of(too_many) == ("too_many_keys", "/10000")
        assert code_of(b'{"a": 1, "b": 2, "c": 3}', max_members=2) == ("too_many_keys", "")
        # colons inside strings do not count
        assert parse_strict(b'{"a": "::::::::"}', max_members=1) == {"a": "::::::::"}

    def test_hook_errors_inside_many_keys(self) -> None:
        assert code_of(b'{"a": {"b": [1, 2, {"c": NaN}]}}') == ("non_finite_number", "/a/b/2/c")

    def test_pointer_escaping(self) -> None:
        assert code_of(b'{"a/b": {"c~d": 1e999}}') == ("number_out_of_range", "/a~1b/c~0d")

    def test_pointer_of_bad_key_is_encodable(self) -> None:
        """Pointers never contain the raw NUL/surrogate they report, and are bounded."""
        _, ptr = code_of(b'{"' + b"k" * 5000 + b'\\u0000": 1}')
        assert ptr is not None
        ptr.encode("utf-8")
        assert len(ptr) <= 512
        assert safe_pointer("/a\x00\ud800") == "/a\\u0000\\ud800"
        assert safe_pointer("/ok/é") == "/ok/é"

    def test_message_never_echoes_values(self) -> None:
        secret = "SENTINEL_SECRET"
        for raw in (
            f'{{"{secret}": 1, "{secret}": 2}}',
            f'{{"a": "{secret}\\u0000"}}',
            f'{{"a": "{secret}"}} trailing',
        ):
            with pytest.raises(BadJSON) as info:
                parse_strict(raw.encode())
            assert secret not in info.value.message

    def test_bad_json_is_a_value_error(self) -> None:
        e = BadJSON("duplicate_key", "duplicate object key", "/a")
        assert isinstance(e, ValueError)
        assert (e.code, e.message, e.pointer, str(e)) == ("duplicate_key", "duplicate object key", "/a", e.message)
        assert "duplicate_key" in repr(e)


class TestAccepted:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (b"-9007199254740991", -9007199254740991),
            (b"9007199254740991", 9007199254740991),
            ('{"e": "😀 ünïcödé"}'.encode(), {"e": "😀 ünïcödé"}),
            (b'"\\ud83d\\ude00"', "😀"),
            (b'["[[[", "{{{", "]]]}}}"]', ["[[[", "{{{", "]]]}}}"]),
            (b'{"a": 9007199254740991.0, "b": -0.0, "c": 1e-400}', {"a": 2**53 - 1, "b": -0.0, "c": 0.0}),
            (b" \n[1, 2.5, true, false, null, \"s\"]\r\n", [1, 2.5, True, False, None, "s"]),
            (b'"\\\\u0000 is text"', "\\u0000 is text"),
            (b'{"a": "\\u0001"}', {"a": "\x01"}),
            (b"{}", {}),
            (b'"x"', "x"),
        ],
    )
    def test_accepted(self, raw: bytes, expected) -> None:
        assert parse_strict(raw) == expected

    def test_canonical_bytes(self) -> None:
        assert canonical_bytes({"b": 1, "a": [1.0, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


# ---------------------------------------------------------------------------------------------
# properties (security.md §7.4 properties 1 and 2)

any_text = st.text(alphabet=st.characters(exclude_categories=[]), max_size=12)  # incl. surrogates, \x00
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats()  # NaN and infinities included
    | any_text
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5),
    max_leaves=25,
)


class TestProperties:
    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values, st.booleans())
    def test_roundtrip_or_badjson(self, x, ensure_ascii: bool) -> None:
        """parse_strict(json.dumps(x)) equals x or raises BadJSON, never anything else."""
        try:
            raw = json.dumps(x, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):  # pragma: no cover - json.dumps cannot encode it
            return
        try:
            got = parse_strict(raw)
        except BadJSON:
            return
        assert got == x

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values)
    def test_rfc8785_round_trip_is_stable(self, x) -> None:
        """For accepted x, canonical bytes parse back to the same canonical bytes."""
        raw = json.dumps(x).encode()
        try:
            v = parse_strict(raw)
        except BadJSON:
            return
        c = canonical_bytes(v)  # never raises for accepted input
        assert rfc8785.dumps(parse_strict(c)) == c

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_only_raise_badjson(self, raw: bytes) -> None:
        try:
            parse_strict(raw)
        except BadJSON as e:
            assert e.code in {
                "invalid_utf8", "bom_not_allowed", "too_deep", "malformed_json", "duplicate_key",
                "non_finite_number", "number_out_of_range", "string_too_long", "lone_surrogate",
                "nul_character", "too_many_keys",
            }  # fmt: skip

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet='[]{}",:\\ 0123456789.eE+-tfnulraNIy\x00', max_size=60))
    def test_json_like_text_only_raises_badjson(self, text: str) -> None:
        try:
            parse_strict(text.encode())
        except BadJSON:
            pass
