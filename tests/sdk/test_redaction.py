"""Tests for callgate.redaction (security.md §6)."""

from __future__ import annotations

import copy
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callgate.redaction import (
    DEFAULT_KEY_SUBSTRINGS,
    Finding,
    Redacted,
    Redactor,
    escape_pointer_token,
    is_marker,
    luhn_ok,
    normalize_key,
    redact,
)

AWS = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nSENTINELPEM==\n-----END RSA PRIVATE KEY-----"
CG_KEY = "cg_agent_0123456789ab_" + "Ab1" * 16 + "Z"  # 12 hex, 49 base62
WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def one(value):
    """Redact a single string and return (new value, rules)."""
    r = redact(value)
    return r.value, [f.rule for f in r.report]


class TestValueRules:
    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("card 4111 1111 1111 1111 ok", "cc:luhn"),
            ("4111-1111-1111-1111", "cc:luhn"),
            ("5500005555555559", "cc:luhn"),
            ("378282246310005", "cc:luhn"),  # Amex, 15 digits
            (f"key {AWS} x", "aws_access_key"),
            ("ASIA" + "Z" * 16, "aws_access_key"),
            ("ghp_" + "a1" * 18, "github_token"),
            ("gho_" + "B" * 40, "github_token"),
            ("github_pat_" + "A_b" * 10, "github_token"),
            ("xoxb-1234567890-abcdef", "slack_token"),
            ("xoxp-12345-67890-abcdef", "slack_token"),
            ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", "slack_webhook"),
            ("https://hooks.slack.com/workflows/T000/A000/123/abc", "slack_webhook"),
            ("sk-" + "a" * 48, "llm_api_key"),
            ("sk-proj-" + "Zz9_" * 10, "llm_api_key"),
            ("sk-ant-api03-" + "q" * 40, "llm_api_key"),
            (JWT, "jwt"),
            (PEM, "pem_private_key"),
            ("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----", "pem_private_key"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "pem_private_key"),
            ("Authorization: Bearer abc123DEF456", "auth_header_value"),
            ("basic dXNlcjpwYXNzd29yZA==", "auth_header_value"),
            ("BEARER Zm9vYmFyYmF6", "auth_header_value"),
            ("postgres://app:SENTINELPW@db:5432/x", "url_credentials"),
            (CG_KEY, "callgate_api_key"),
            ("cg_admin_abcdef012345_" + "x" * 49, "callgate_api_key"),
            (WHSEC, "webhook_secret"),
        ],
    )
    def test_rule_fires(self, text: str, rule: str) -> None:
        """Each built-in value rule redacts its example and reports its rule id."""
        value, rules = one(text)
        assert rules == [rule]
        assert f"[REDACTED:{rule}]" in value

    def test_only_the_match_is_replaced(self) -> None:
        """Text around a match is kept."""
        assert redact(f"use {AWS} now").value == "use [REDACTED:aws_access_key] now"

    def test_url_credentials_keep_scheme_and_user(self) -> None:
        """The password of a URL is redacted; scheme, user and host are kept."""
        assert redact("see https://bob:hunter22@example.com/path").value == (
            "see https://bob:[REDACTED:url_credentials]@example.com/path"
        )

    @pytest.mark.parametrize(
        "text",
        [
            "4111 1111 1111 1112",  # fails Luhn
            "1234567890123456",  # fails Luhn
            "order 123456789012",  # 12 digits
            "41111111111111111111",  # 20 digits: no match at all
            "a basic question for you",  # prose after "basic"
            "Bearer Token",  # a plain word
            "https://example.com/no/creds",
            "AKIAIOSFODNN7EXAMPL",  # 15 chars after AKIA
            "sk-short",
            "risk-assessment-framework-2024-v2",
            "github.com/owner/repo",
            "whsec_short",
            "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----",
            "0190f3c2-7a1b-7c3d-9e4f-5a6b7c8d9e0f",
        ],
    )
    def test_no_false_positive(self, text: str) -> None:
        """Ordinary values, including a 16-digit number that fails Luhn, are kept."""
        assert redact(text) == Redacted(text, [])

    def test_unterminated_pem_is_redacted_to_the_end(self) -> None:
        """A truncated private key is still a secret: redacted from its header to the end."""
        r = redact("prefix -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg")
        assert r.value == "prefix [REDACTED:pem_private_key]"

    def test_several_rules_in_one_string(self) -> None:
        """Each rule that fires is reported once for the string."""
        r = redact(f"{AWS} and {AWS} and 4111111111111111")
        assert r.value == "[REDACTED:aws_access_key] and [REDACTED:aws_access_key] and [REDACTED:cc:luhn]"
        assert r.report == [("", "aws_access_key"), ("", "cc:luhn")]

    def test_card_as_integer(self) -> None:
        """A 15-16 digit integer passing Luhn is a card; a 13-digit epoch-ms timestamp is not."""
        assert redact({"n": 4111111111111111}).value == {"n": "[REDACTED:cc:luhn]"}
        assert redact({"ts": 1700000000000, "m": 4111111111111112}).report == []
        assert redact(True).value is True

    def test_luhn(self) -> None:
        assert luhn_ok("4111111111111111")
        assert luhn_ok("79927398713")
        assert not luhn_ok("79927398710")

    def test_pii_is_opt_in(self) -> None:
        """E-mail, US SSN and E.164 phone numbers are only redacted with pii=True."""
        text = "mail jane.doe@example.co.uk ssn 123-45-6789 tel +14155552671"
        assert redact(text).report == []
        r = Redactor(pii=True).redact(text)
        assert r.value == "mail [REDACTED:pii:email] ssn [REDACTED:pii:us_ssn] tel [REDACTED:pii:phone]"

    def test_too_long_string_is_redacted_whole(self) -> None:
        """Strings over 64 KiB are not scanned and are replaced whole (fail safe)."""
        big = "x" * (64 * 1024 + 1)
        assert redact({"blob": big}) == Redacted({"blob": "[REDACTED:too_long_to_scan]"}, [("/blob", "too_long_to_scan")])
        ok = "x" * (64 * 1024)
        assert redact(ok).value is ok


class TestKeyRules:
    @pytest.mark.parametrize(
        ("key", "rule"),
        [
            ("password", "key:password"),
            ("db_password", "key:password"),
            ("Authorization", "key:authorization"),
            ("X-Authorization-Header", "key:authorization"),
            ("X-Api-Key", "key:xapikey"),
            ("apiKey", "key:apikey"),
            ("client_secret", "key:secret"),
            ("refresh_token", "key:token"),
            ("AWS_ACCESS_KEY_ID", "key:accesskey"),
            ("private-key", "key:privatekey"),
            ("Set-Cookie", "key:setcookie"),
            ("session", "key:session"),
            ("sessionid", "key:sessionid"),
            ("credentials", "key:credentials"),
            ("x-csrf-token", "key:xcsrftoken"),
            ("XSRF-TOKEN", "key:xsrftoken"),
            ("X-XSRF-TOKEN", "key:token"),
            ("webhook_signature", "key:signature"),
            ("bearer", "key:bearer"),
            ("id_jwt", "key:jwt"),
            ("otp", "key:otp"),
            ("pin_code", "key:pin"),
            ("userPin", "key:pin"),
            ("ssn", "key:ssn"),
            ("auth", "key:auth"),
            ("oauth", "key:auth"),
            ("connect.sid", "key:connectsid"),
            ("PHPSESSID", "key:phpsessid"),
            ("mysql_pwd", "key:mysqlpwd"),
            ("passwd", "key:passwd"),
        ],
    )
    def test_key_redacts_whole_value(self, key: str, rule: str) -> None:
        """Values under sensitive keys are replaced whole, whatever their type."""
        for value in ("x", 123, None, {"nested": ["deep"]}, [1, 2]):
            r = redact({key: value})
            assert r.value == {key: f"[REDACTED:{rule}]"}
            assert r.report == [(f"/{escape_pointer_token(key)}", rule)]

    @pytest.mark.parametrize(
        "key",
        [
            "token_count", "max_tokens", "input_tokens", "output_tokens", "total_tokens", "maxCompletionTokens",
            "auth_method", "author", "authors", "co_author", "authored_by", "shipping_address", "mapping",
            "typing", "ping_interval", "class_name", "business_name", "footprint", "username", "customer_id",
        ],
    )  # fmt: skip
    def test_allowlist_and_benign_words(self, key: str) -> None:
        """Known over-matches are not redacted by key rules."""
        assert redact({key: 42}).report == []
        assert redact({key: "plain"}).value == {key: "plain"}

    def test_allowlisted_key_values_are_still_scanned(self) -> None:
        """An allowlisted key exempts the key rule only, not the value patterns."""
        assert redact({"max_tokens": AWS}).report == [("/max_tokens", "aws_access_key")]

    def test_tokens_is_not_allowlisted(self) -> None:
        """A bare 'tokens' key may hold credentials, so it is redacted."""
        assert redact({"tokens": ["abc"]}).value == {"tokens": "[REDACTED:key:token]"}

    def test_normalize_key(self) -> None:
        assert normalize_key("X-Api-Key") == "xapikey"
        assert normalize_key(12) == "12"

    def test_keys_are_not_redacted(self) -> None:
        """A secret in a key is left alone (keys are structure)."""
        assert redact({AWS: 1}).value == {AWS: 1}

    def test_every_substring_is_a_rule(self) -> None:
        for needle in DEFAULT_KEY_SUBSTRINGS:
            assert redact({f"my_{needle}_x": 1}).report, needle


class TestStructure:
    def test_nested_paths_and_pointer_escaping(self) -> None:
        """Pointers follow RFC 6901: ~ becomes ~0 and / becomes ~1; list indexes are numbers."""
        value = {"a/b": {"c~d": [0, {"x": f"id {AWS}"}]}, "h": {"Authorization": "Bearer abcdefgh1"}}
        r = redact(value)
        assert r.report == [
            ("/a~1b/c~0d/1/x", "aws_access_key"),
            ("/h/Authorization", "key:authorization"),
        ]
        assert r.value["a/b"]["c~d"][1]["x"] == "id [REDACTED:aws_access_key]"

    def test_report_is_in_document_order(self) -> None:
        value = {"a": AWS, "password": "x", "b": [JWT, {"token": 1}], "c": "4111111111111111"}
        assert [f.pointer for f in redact(value).report] == ["/a", "/password", "/b/0", "/b/1/token", "/c"]

    def test_input_not_mutated(self) -> None:
        value = {"password": "p", "l": [AWS, {"k": (AWS,)}], "t": (1, "x")}
        before = copy.deepcopy(value)
        r = redact(value)
        assert value == before
        assert r.value["l"][1]["k"] == ("[REDACTED:aws_access_key]",)
        assert isinstance(r.value["t"], tuple)
        assert r.value["l"] is not value["l"]

    def test_scalars(self) -> None:
        for v in (None, True, False, 0, 1.5, -2, "", "short"):
            assert redact(v) == Redacted(v, [])

    def test_root_string(self) -> None:
        assert redact(AWS).report == [("", "aws_access_key")]

    def test_non_json_objects_pass_through(self) -> None:
        obj = object()
        assert redact({"o": obj}).value["o"] is obj

    def test_deep_and_cyclic_structures_are_safe(self) -> None:
        """Nesting beyond max_depth (and therefore cycles) is redacted, never a RecursionError."""
        cyclic: list = []
        cyclic.append(cyclic)
        r = redact(cyclic)
        assert "too_deep_to_scan" in [f.rule for f in r.report]
        deep: dict = {}
        cur = deep
        for _ in range(5000):
            cur["a"] = {}
            cur = cur["a"]
        assert redact(deep).report[0].rule == "too_deep_to_scan"

    def test_finding_is_a_tuple(self) -> None:
        f = Finding("/a", "jwt")
        assert f == ("/a", "jwt")


class TestIdempotence:
    def test_second_pass_is_a_no_op(self) -> None:
        """redact(redact(x).value) gives the same value and an empty report."""
        value = {
            "password": "p",
            "u": "https://u:x-Bearer abcdefgh12@host/",
            "s": f"{PEM} {AWS} Bearer abcdefghij1 https://hooks.slack.com/services/{AWS}",
            "n": 4111111111111111,
        }
        first = redact(value)
        second = redact(first.value)
        assert second.value == first.value
        assert second.report == []

    def test_replacement_creating_a_new_match(self) -> None:
        """Found by Hypothesis: redacting the card creates the word boundary the AWS rule needs,
        so rules are re-applied until nothing changes."""
        first = redact(f"{AWS}4111 1111 1111 1111")
        assert first.value == "[REDACTED:aws_access_key][REDACTED:cc:luhn]"
        assert redact(first.value).report == []

    def test_markers_are_left_alone(self) -> None:
        assert is_marker("[REDACTED:cc:luhn]")
        assert not is_marker("[REDACTED:cc:luhn] x")
        assert redact({"password": "[REDACTED:jwt]"}).report == []


class TestRedactor:
    def test_extra_keys_and_patterns(self) -> None:
        r = Redactor(extra_keys=["IBAN"], extra_exact_keys=["sid"], extra_patterns={"acme": r"\bacme_[a-z0-9]{8}\b"})
        out = r.redact({"iban_number": "DE00", "sid": "1", "sidecar": "ok", "note": "acme_abcdef12 here"})
        assert out.value == {
            "iban_number": "[REDACTED:key:iban]",
            "sid": "[REDACTED:key:sid]",
            "sidecar": "ok",
            "note": "[REDACTED:acme] here",
        }
        assert r.redact(out.value).report == []

    def test_extra_pattern_must_not_match_marker(self) -> None:
        with pytest.raises(ValueError, match="marker"):
            Redactor(extra_patterns={"bad": r"REDACTED"})
        with pytest.raises(ValueError, match="rule id"):
            Redactor(extra_patterns={"bad id!": r"x"})

    def test_allow_keys_override(self) -> None:
        assert Redactor(allow_keys=[]).redact({"max_tokens": 1}).report == [("/max_tokens", "key:token")]
        assert Redactor(extra_allow_keys=["session_id"]).redact({"session_id": "s"}).report == []

    def test_redact_is_the_default_instance(self) -> None:
        assert Redactor()({"password": "x"}) == redact({"password": "x"})


class TestLinearTime:
    @pytest.mark.parametrize(
        "text",
        [
            "a." * 32768,
            "-----BEGIN PRIVATE KEY-----" * 2400,
            "-----BEGIN " + "A " * 32000,
            "1 " * 32768,
            "1-" * 32768,
            "111111111111" + " " * 65000,
            "https://" + "a:" * 32000,
            "x://u:" + "p" * 65000,
            "bearer " * 9000,
            "ghp_" + "a" * 65000,
            "eyJ" + "a" * 65000,
            "sk-" * 21000,
            "a@" * 32768,
            "\\u0000" * 10000,
        ],
    )
    def test_adversarial_64k_strings_are_fast(self, text: str) -> None:
        """Every rule is linear: 64 KiB of adversarial input takes well under a second."""
        r = Redactor(pii=True)
        start = time.perf_counter()
        first = r.redact(text)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, elapsed
        assert r.redact(first.value).value == first.value


# ---------------------------------------------------------------------------------------------
# properties (security.md §7.4 property 3)

SECRETS = [
    AWS,
    "ghp_" + "S3ntinel" * 5,
    "xoxb-SENTINEL-1234567890",
    "sk-SENTINEL" + "x" * 20,
    "eyJSENTINEL1.eyJSENTINEL2.SENTINEL3",
    PEM,
    "4111 1111 1111 1111",
    "https://u:SENTINELPW@h/",
    "Bearer SENTINEL123",
    CG_KEY,
    WHSEC,
    "https://hooks.slack.com/services/SENTINEL/x",
]
SENTINEL_RE = re.compile(r"SENTINEL|AKIAIOSFODNN7EXAMPLE|4111 1111|Ab1Ab1|MfKQ9r8G")

fragments = st.one_of(
    st.sampled_from(SECRETS),
    st.sampled_from([" ", "-", "x", ":", "@", "/", "\n", "[REDACTED:jwt]", "Bearer ", "https://u:", "1", "é"]),
    st.text(max_size=8),
)
secret_text = st.lists(fragments, max_size=6).map("".join)
json_keys = st.one_of(st.text(max_size=10), st.sampled_from(["password", "a/b", "c~d", "max_tokens", "Authorization"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | secret_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4),
    max_leaves=20,
)


class TestProperties:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_values)
    def test_idempotent(self, x) -> None:
        """redact(redact(x)) == redact(x), and the second report is empty."""
        first = redact(x)
        second = redact(first.value)
        assert second.value == first.value
        assert second.report == []

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(SECRETS), min_size=1, max_size=3), st.sampled_from([" ", "\n", " and ", ", "]))
    def test_no_sentinel_survives(self, secrets_, sep) -> None:
        """No generated secret survives redaction, alone, joined, or nested."""
        text = "before " + sep.join(secrets_) + " after"
        for value in (text, {"a": [text]}, [{"k": text}]):
            out = redact(value).value
            assert not SENTINEL_RE.search(repr(out)), out
