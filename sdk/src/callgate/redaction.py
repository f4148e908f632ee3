"""Redaction of secrets in tool-call arguments (security.md §6).

The same redactor runs in the agent (the SDK redacts before anything leaves the process)
and on the server (defence in depth, before persistence, Slack, webhooks and logs).
It is standard-library only.

Usage::

    from callgate.redaction import redact, Redactor

    r = redact({"headers": {"Authorization": "Bearer abc.def"}, "card": "4111 1111 1111 1111"})
    r.value   # {"headers": {"Authorization": "[REDACTED:key:authorization]"}, "card": "[REDACTED:cc:luhn]"}
    r.report  # [("/headers/Authorization", "key:authorization"), ("/card", "cc:luhn")]

    strict = Redactor(extra_keys=["iban"], extra_patterns={"acme_token": r"\\bacme_[a-z0-9]{32}\\b"}, pii=True)

Rules (rule id -> what)

* ``key:<needle>`` -- the normalised key (lowercase, non-alphanumerics stripped: ``X-Api-Key`` ->
  ``xapikey``) contains one of ``DEFAULT_KEY_SUBSTRINGS`` or equals one of ``DEFAULT_EXACT_KEYS``
  (Sentry's default scrub list, normalised). The *whole* value is replaced, whatever its type,
  including nested containers (one report entry for the container, nothing below it).
  The needle reported is the longest one that matched (``Authorization`` -> ``key:authorization``).
* Value patterns on strings: ``cc:luhn``, ``aws_access_key``, ``github_token``, ``slack_token``,
  ``slack_webhook``, ``llm_api_key``, ``jwt``, ``pem_private_key``, ``auth_header_value``,
  ``url_credentials`` (keeps scheme and user: ``https://bob:[REDACTED:url_credentials]@host``),
  ``callgate_api_key``, ``webhook_secret``; opt-in PII: ``pii:email``, ``pii:us_ssn``, ``pii:phone``.
  Only the matched span is replaced; the rest of the string is kept.
* ``too_long_to_scan`` -- a string longer than ``max_string`` (65,536 code points, the same limit
  the gateway's strict parser enforces, so on the server this never fires) is replaced *whole*.
  Fail safe: we never pass an unscanned string on.
* ``too_deep_to_scan`` -- containers nested deeper than ``max_depth`` (default 100; the gateway
  rejects depth > 32 before this runs) are replaced whole. This also makes cyclic structures safe.
* Integers (not bools) of 15-16 digits that pass the Luhn check are replaced by ``[REDACTED:cc:luhn]``
  (card numbers sent as JSON numbers). 13-14 digit integers are *not* checked: they are mostly
  epoch-millisecond timestamps. Floats are not scanned.

Decisions (documented deviations / choices)

* Keys themselves are never redacted or scanned (report pointers would otherwise be unstable).
* The short needles ``auth``, ``pin``, ``otp`` and ``ssn`` over-match inside ordinary words once
  separators are stripped (``author``, ``shipping``, ``footprint``, ``class_name``). An occurrence
  of one of them that lies inside a "benign word" (``BENIGN_WORDS``) does not count; the key is
  still redacted if any other needle matches (``authorization`` contains ``author`` but also
  ``authorization``). ``pin_code``, ``user_pin``, ``otp``, ``ssn``, ``oauth`` still match.
* ``DEFAULT_ALLOW_KEYS``: exact normalised keys exempt from the key rules (token counters such as
  ``token_count``, ``max_tokens``, ``input_tokens``, ``output_tokens``; ``auth_method``, ``auth_type``).
  Their values are still scanned by the value patterns. A bare ``tokens`` key is *not* allowlisted:
  it is as likely to hold credentials as a count.
* ``auth_header_value`` ignores a plain English word after ``basic``/``bearer`` (``basic question``)
  so prose in e-mail bodies is not mangled; real credentials contain digits, mixed case or ``+/=._~-``.
* The PEM rule is implemented without the lazy ``[\\s\\S]*?`` scan (quadratic on many unterminated
  headers): a ``BEGIN ... PRIVATE KEY`` header up to the next matching ``END`` line, or to the end of
  the string when there is no ``END`` line (a truncated key is still a secret).
* ``url_credentials`` uses a look-behind instead of ``\\b`` and a scheme of at most 32 characters so
  each ``://`` is tried from one start only (linear time).
* Idempotence: a value that already is a redaction marker (``[REDACTED:<rule>]``) is left alone and
  not reported, so ``redact(redact(x).value)`` returns the same value and an **empty** report.
  Extra patterns must not match the marker text (checked at construction).
* Rules that may span a marker (``slack_webhook``, ``url_credentials``) run last, and the rules are
  re-applied to a string until nothing changes (a replacement can create a word boundary an earlier
  rule needs); a string still changing after 4 passes is replaced whole by ``[REDACTED:unstable]``.
* Non-JSON objects (bytes, datetimes, models, ...) are returned unchanged and unscanned: redact the
  JSON-ready form. ``tuple`` stays ``tuple``; any ``Mapping`` becomes a ``dict``.

All patterns run in linear time in the length of the string (bounded repetitions, no nested
unbounded quantifiers); see ``tests/sdk/test_redaction.py::TestLinearTime``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "BENIGN_WORDS",
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_EXACT_KEYS",
    "DEFAULT_KEY_SUBSTRINGS",
    "MAX_SCAN_STRING",
    "Finding",
    "Redacted",
    "Redactor",
    "default_redactor",
    "escape_pointer_token",
    "is_marker",
    "luhn_ok",
    "marker",
    "normalize_key",
    "redact",
]

MAX_SCAN_STRING = 64 * 1024
DEFAULT_MAX_DEPTH = 100

DEFAULT_KEY_SUBSTRINGS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "apikey", "accesskey", "privatekey",
    "authorization", "auth", "cookie", "session", "credential", "csrf", "xsrf", "signature",
    "bearer", "jwt", "otp", "pin", "ssn",
)  # fmt: skip

# sentry-python scrubber.py DEFAULT_DENYLIST, normalised (exact match).
DEFAULT_EXACT_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(
        re.sub(r"[^a-z0-9]", "", k.lower())
        for k in (
            "password", "passwd", "secret", "api_key", "apikey", "auth", "credentials", "mysql_pwd",
            "privatekey", "private_key", "token", "session", "csrftoken", "sessionid", "x_csrftoken",
            "set_cookie", "cookie", "authorization", "x_api_key", "connect.sid", "_csrf", "PHPSESSID",
            "XSRF-TOKEN",
        )  # fmt: skip
    )
)

# Occurrences of these short needles inside these words do not count (see module docstring).
BENIGN_WORDS: dict[str, tuple[str, ...]] = {
    "auth": ("author", "authmethod", "authtype", "authscheme", "authmode", "authprovider"),
    "pin": ("ping", "spin", "pinion", "pinned", "pinyin"),
    "otp": ("footprint", "hotpot"),
    "ssn": ("ssname", "sslevel", "ssnote"),
}

DEFAULT_ALLOW_KEYS: frozenset[str] = frozenset(
    {
        "tokencount", "tokencounts", "numtokens", "ntokens", "tokenlimit", "tokenusage", "tokensused",
        "tokenbudget", "tokenizer", "tokentype", "maxtokens", "maxcompletiontokens", "maxoutputtokens",
        "maxnewtokens", "maxinputtokens", "mintokens", "inputtokens", "outputtokens", "prompttokens",
        "completiontokens", "totaltokens", "cachedtokens", "reasoningtokens", "cachereadinputtokens",
        "cachecreationinputtokens", "cachedinputtokens", "audiotokens", "texttokens", "imagetokens",
        "inputtokensdetails", "outputtokensdetails", "prompttokensdetails", "completiontokensdetails",
        "authmethod", "authtype", "authscheme",
    }
)  # fmt: skip

_MARKER_RE = re.compile(r"\[REDACTED:[A-Za-z0-9_.:\-]{1,64}\]")
_RULE_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_NON_ALNUM = re.compile(r"[^a-z0-9]")


class Finding(NamedTuple):
    """One redaction: where (RFC 6901 JSON pointer) and which rule."""

    pointer: str
    rule: str


@dataclass(frozen=True, slots=True)
class Redacted:
    """Result of :func:`redact`: a redacted copy and the report of what was redacted."""

    value: Any
    report: list[Finding] = field(default_factory=list)


def marker(rule: str) -> str:
    return f"[REDACTED:{rule}]"


def is_marker(s: str) -> bool:
    return s.startswith("[REDACTED:") and _MARKER_RE.fullmatch(s) is not None


def normalize_key(key: object) -> str:
    return _NON_ALNUM.sub("", str(key).lower())


def escape_pointer_token(token: str) -> str:
    """RFC 6901: ``~`` -> ``~0`` then ``/`` -> ``~1``."""
    if "~" in token:
        token = token.replace("~", "~0")
    if "/" in token:
        token = token.replace("/", "~1")
    return token


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# --------------------------------------------------------------------------------------------
# value rules


class _Rule:
    """A value rule: ``apply(s)`` returns the new string and whether anything was redacted."""

    rule_id: str
    hint: Callable[[str], bool] | None = None

    def apply(self, s: str) -> tuple[str, bool]:  # pragma: no cover - interface
        raise NotImplementedError


class _RegexRule(_Rule):
    def __init__(
        self,
        rule_id: str,
        pattern: re.Pattern[str],
        *,
        group: int = 0,
        validate: Callable[[re.Match[str]], bool] | None = None,
        hint: Callable[[str], bool] | None = None,
    ) -> None:
        self.rule_id = rule_id
        self.pattern = pattern
        self.group = group
        self.validate = validate
        self.hint = hint
        self.replacement = marker(rule_id)

    def apply(self, s: str) -> tuple[str, bool]:
        parts: list[str] | None = None
        last = 0
        for m in self.pattern.finditer(s):
            start, end = m.span(self.group)
            if start < 0 or is_marker(s[start:end]):
                continue
            if self.validate is not None and not self.validate(m):
                continue
            if parts is None:
                parts = []
            parts.append(s[last:start])
            parts.append(self.replacement)
            last = end
        if parts is None:
            return s, False
        parts.append(s[last:])
        return "".join(parts), True


class _PemRule(_Rule):
    rule_id = "pem_private_key"
    _begin = re.compile(r"-----BEGIN (?:[A-Z0-9 ]{1,64} )?PRIVATE KEY-----")
    _end = re.compile(r"-----END (?:[A-Z0-9 ]{1,64} )?PRIVATE KEY-----")

    def __init__(self) -> None:
        self.replacement = marker(self.rule_id)

    @staticmethod
    def hint(s: str) -> bool:
        return "-----BEGIN " in s

    def apply(self, s: str) -> tuple[str, bool]:
        parts: list[str] = []
        pos = 0
        while True:
            b = self._begin.search(s, pos)
            if b is None:
                break
            e = self._end.search(s, b.end())
            parts.append(s[pos : b.start()])
            parts.append(self.replacement)
            if e is None:  # unterminated: redact to the end (fail safe), and stop: linear time
                pos = len(s)
                break
            pos = e.end()
        if not parts:
            return s, False
        parts.append(s[pos:])
        return "".join(parts), True


def _card_ok(m: re.Match[str]) -> bool:
    digits = m.group(0).replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _credential_not_prose(m: re.Match[str]) -> bool:
    tok = m.group(1)
    return not (tok.isalpha() and (tok.islower() or tok.istitle()))


# 13+ characters of digits, spaces and hyphens, starting and ending with a digit: much cheaper
# than the card pattern itself, and a necessary condition for it (linear: see TestLinearTime).
_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")


def _digit_run(s: str) -> bool:
    return _DIGIT_RUN.search(s) is not None


def _contains(*needles: str) -> Callable[[str], bool]:
    """A cheap pre-check: the rule can only match if one of these literals occurs."""
    if len(needles) == 1:
        (a,) = needles
        return lambda s: a in s
    if len(needles) == 2:
        a, b = needles
        return lambda s: a in s or b in s
    return lambda s: any(n in s for n in needles)


def _bearer_or_basic(s: str) -> bool:
    low = s.lower()
    return "bearer" in low or "basic" in low


def _builtin_rules(pii: bool) -> tuple[list[_Rule], list[_Rule]]:
    """Returns (early rules, late rules); extra patterns run between the two."""
    early: list[_Rule] = [
        _PemRule(),
        _RegexRule(
            "aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), hint=_contains("AKIA", "ASIA")
        ),
        _RegexRule(
            "github_token",
            re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
            hint=_contains("gh", "github_pat_"),
        ),
        _RegexRule("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), hint=_contains("xox")),
        _RegexRule("llm_api_key", re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{20,}"), hint=_contains("sk-")),
        _RegexRule(
            "jwt",
            re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
            hint=_contains("eyJ"),
        ),
        _RegexRule(
            "callgate_api_key",
            re.compile(r"\bcg_(?:agent|admin)_[0-9a-f]{12}_[A-Za-z0-9]{49}\b"),
            hint=_contains("cg_a"),
        ),
        _RegexRule("webhook_secret", re.compile(r"\bwhsec_[A-Za-z0-9+/=]{32,}"), hint=_contains("whsec_")),
        _RegexRule(
            "auth_header_value",
            re.compile(r"\b(?i:bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})"),
            validate=_credential_not_prose,
            hint=_bearer_or_basic,
        ),
        _RegexRule(
            "cc:luhn",
            re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
            validate=_card_ok,
            hint=_digit_run,
        ),
    ]
    if pii:
        early += [
            _RegexRule(
                "pii:email",
                re.compile(
                    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
                    r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
                ),
                hint=_contains("@"),
            ),
            _RegexRule("pii:us_ssn", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), hint=_contains("-")),
            _RegexRule("pii:phone", re.compile(r"(?<![\w+])\+[1-9]\d{7,14}\b"), hint=_contains("+")),
        ]
    late: list[_Rule] = [
        _RegexRule(
            "slack_webhook",
            re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/\S+"),
            hint=_contains("hooks.slack.com"),
        ),
        _RegexRule(
            "url_credentials",
            re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^/\s:@]+:([^/\s@]+)@"),
            group=1,
            hint=_contains("://"),
        ),
    ]
    return early, late


# --------------------------------------------------------------------------------------------
# the redactor


_TOO_LONG = marker("too_long_to_scan")
_TOO_DEEP = marker("too_deep_to_scan")
_CARD = marker("cc:luhn")
_KEY_CACHE_MAX = 4096
_MAX_PASSES = 4


class Redactor:
    """A configured redactor. Instances are immutable after construction and thread-safe.

    :param extra_keys: extra key *substrings* (normalised like keys) that redact the whole value.
    :param extra_exact_keys: extra exact (normalised) key names.
    :param allow_keys: normalised keys exempt from key rules (default ``DEFAULT_ALLOW_KEYS``).
    :param extra_allow_keys: added to ``allow_keys``.
    :param extra_patterns: ``{rule_id: regex}`` (str or compiled); each match is replaced by
        ``[REDACTED:<rule_id>]``. They run after the built-in token rules and before
        ``slack_webhook``/``url_credentials``. Must run in linear time and must not match a marker.
    :param pii: enable the opt-in PII rules (email, US SSN, E.164 phone).
    :param max_string: longer strings are replaced whole by ``[REDACTED:too_long_to_scan]``.
    :param max_depth: deeper containers are replaced whole by ``[REDACTED:too_deep_to_scan]``.
    :param scan_ints: check 15-16 digit integers with Luhn.
    """

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        extra_exact_keys: Iterable[str] = (),
        allow_keys: Iterable[str] | None = None,
        extra_allow_keys: Iterable[str] = (),
        extra_patterns: Mapping[str, str | re.Pattern[str]] | Iterable[tuple[str, str | re.Pattern[str]]] = (),
        pii: bool = False,
        max_string: int = MAX_SCAN_STRING,
        max_depth: int = DEFAULT_MAX_DEPTH,
        scan_ints: bool = True,
    ) -> None:
        subs = list(DEFAULT_KEY_SUBSTRINGS) + [normalize_key(k) for k in extra_keys]
        subs = [s for s in dict.fromkeys(subs) if s]
        # longest first, so the reported needle is the most specific one
        self._substrings: tuple[str, ...] = tuple(sorted(subs, key=len, reverse=True))
        self._exact: frozenset[str] = frozenset(DEFAULT_EXACT_KEYS) | {
            normalize_key(k) for k in extra_exact_keys
        }
        allow = DEFAULT_ALLOW_KEYS if allow_keys is None else {normalize_key(k) for k in allow_keys}
        self._allow: frozenset[str] = frozenset(allow) | {normalize_key(k) for k in extra_allow_keys}
        self._max_string = max_string
        self._max_depth = max_depth
        self._scan_ints = scan_ints
        self._key_cache: dict[object, str | None] = {}

        early, late = _builtin_rules(pii)
        extra: list[_Rule] = []
        items = extra_patterns.items() if isinstance(extra_patterns, Mapping) else extra_patterns
        for rule_id, pat in items:
            if not _RULE_ID_RE.fullmatch(rule_id):
                raise ValueError(f"rule id must match {_RULE_ID_RE.pattern}: {rule_id!r}")
            rx = re.compile(pat) if isinstance(pat, str) else pat
            probe = marker(rule_id) + " " + marker("x")
            if rx.search(probe):
                raise ValueError(f"pattern for {rule_id!r} matches the redaction marker text")
            extra.append(_RegexRule(rule_id, rx))
        self._rules: tuple[_Rule, ...] = tuple(early + extra + late)
        # every built-in rule needs at least 8 characters; unknown for extra patterns
        self._min_scan = 1 if extra else 8

    # -- keys ---------------------------------------------------------------------------------

    def key_rule(self, key: object) -> str | None:
        """The rule id (``key:<needle>``) that redacts this key's value, or None."""
        cache = self._key_cache
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable: cannot happen for dict keys, but be safe
            return self._classify_key(key)
        rule = self._classify_key(key)
        if type(key) is str and len(key) <= 64:  # bounded memory: never cache huge keys
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            cache[key] = rule
        return rule

    def _classify_key(self, key: object) -> str | None:
        nk = normalize_key(key)
        if not nk or nk in self._allow:
            return None
        if nk in self._exact:
            return "key:" + nk
        for needle in self._substrings:
            if needle in nk and self._counts(needle, nk):
                return "key:" + needle
        return None

    @staticmethod
    def _counts(needle: str, nk: str) -> bool:
        benign = BENIGN_WORDS.get(needle)
        if not benign:
            return True
        covered: list[tuple[int, int]] = []
        for word in benign:
            i = nk.find(word)
            while i >= 0:
                covered.append((i, i + len(word)))
                i = nk.find(word, i + 1)
        n = len(needle)
        i = nk.find(needle)
        while i >= 0:
            if not any(a <= i and i + n <= b for a, b in covered):
                return True
            i = nk.find(needle, i + 1)
        return False

    # -- values -------------------------------------------------------------------------------

    def redact_string(self, s: str) -> tuple[str, list[str]]:
        """Redact one string; returns the new string and the rule ids that fired (in order)."""
        if len(s) < self._min_scan or is_marker(s):
            return s, []
        if len(s) > self._max_string:
            return _TOO_LONG, ["too_long_to_scan"]
        return self._scan(s, self._rules)

    def _scan(self, s: str, first_pass: Sequence[_Rule]) -> tuple[str, list[str]]:
        """Apply the rules until nothing changes.

        One replacement can create a match for an *earlier* rule (a marker's ``[`` is a word
        boundary where a digit used to be: ``AKIA...EXAMPLE4111 1111 1111 1111``), so a single
        pass would not be idempotent. Each pass that changes something removes unredacted text,
        so this converges in a pass or two; if it has not after ``_MAX_PASSES`` the string is
        replaced whole (fail safe, and stable).
        """
        fired: list[str] = []
        rules = first_pass
        for _ in range(_MAX_PASSES):
            changed = False
            for rule in rules:
                hint = rule.hint
                if hint is not None and not hint(s):
                    continue
                s, hit = rule.apply(s)
                if hit:
                    changed = True
                    if rule.rule_id not in fired:
                        fired.append(rule.rule_id)
            if not changed:
                return s, fired
            rules = self._rules
        fired.append("unstable")
        return marker("unstable"), fired

    def redact(self, value: Any) -> Redacted:
        """Return a redacted deep copy of ``value`` and the report. ``value`` is not modified."""
        report: list[tuple[Any, str]] = []
        pending: list[tuple[Any, Any, Any, str, int]] = []
        out = self._walk(value, None, 0, report, pending)
        if pending:
            out = self._scan_pending(out, pending, report)
        # paths are linked tuples (parent, token); build the pointers only for what we report
        return Redacted(out, [Finding(_pointer(path), rule) for path, rule in report])

    __call__ = redact

    def _scan_pending(
        self, out: Any, pending: list[tuple[Any, Any, Any, str, int]], report: list[tuple[Any, str]]
    ) -> Any:
        """Scan the strings the walk collected.

        First all strings at once, joined by U+0000 (no rule matches U+0000 as a literal, and a
        rule that matches in one string also matches in the joined text): if no rule fires
        there, no string needs any work -- the common case costs one pass per hinted rule.
        Otherwise each string is scanned, starting at the first rule that fired.
        """
        rules = self._rules
        text = "\x00".join([p[3] for p in pending])
        first = -1
        for i, rule in enumerate(rules):
            if rule.hint is not None and not rule.hint(text):
                continue
            if rule.apply(text)[1]:
                first = i
                break
        if first < 0:
            return out
        active = rules[first:]
        for container, key, path, s, pos in reversed(pending):  # reversed: positions stay valid
            new, fired = self._scan(s, active)
            if fired:
                report[pos:pos] = [(path, rule_id) for rule_id in fired]  # keep document order
                if container is None:
                    out = new
                else:
                    container[key] = new
        return out

    def _walk(
        self,
        v: Any,
        path: Any,
        depth: int,
        report: list[tuple[Any, str]],
        pending: list[tuple[Any, Any, Any, str, int]] | None,
        container: Any = None,
        slot: Any = None,
    ) -> Any:
        t = type(v)
        if t is str:
            n = len(v)
            if n < self._min_scan:
                return v
            if n > self._max_string:
                report.append((path, "too_long_to_scan"))
                return _TOO_LONG
            if is_marker(v):
                return v
            if pending is not None:  # scanned in one batch at the end
                pending.append((container, slot, path, v, len(report)))
                return v
            new, fired = self.redact_string(v)
            for rule in fired:
                report.append((path, rule))
            return new
        if t is dict:
            if depth >= self._max_depth:
                report.append((path, "too_deep_to_scan"))
                return _TOO_DEEP
            out: dict[Any, Any] = {}
            key_rule = self.key_rule
            walk = self._walk
            depth += 1
            min_scan = self._min_scan
            for k, item in v.items():
                rule = key_rule(k)
                if rule is None:
                    ti = type(item)
                    if ti is str and pending is not None:  # inlined fast path of the str branch
                        n = len(item)
                        if n >= min_scan and n <= self._max_string and not is_marker(item):
                            pending.append((out, k, (path, k), item, len(report)))
                            out[k] = item
                        elif n >= min_scan and n > self._max_string:
                            report.append(((path, k), "too_long_to_scan"))
                            out[k] = _TOO_LONG
                        else:
                            out[k] = item
                    elif ti is float or ti is bool or item is None or (ti is int and not self._scan_ints):
                        out[k] = item
                    else:
                        out[k] = walk(item, (path, k), depth, report, pending, out, k)
                elif type(item) is str and is_marker(item):
                    out[k] = item
                else:
                    report.append(((path, k), rule))
                    out[k] = marker(rule)
            return out
        if t is list:
            if depth >= self._max_depth:
                report.append((path, "too_deep_to_scan"))
                return _TOO_DEEP
            lst: list[Any] = []
            walk = self._walk
            depth += 1
            for i, item in enumerate(v):
                lst.append(walk(item, (path, i), depth, report, pending, lst, i))
            return lst
        if t is int:
            if self._scan_ints and (10**14 <= v < 10**16 or -(10**16) < v <= -(10**14)):
                if luhn_ok(str(abs(v))):
                    report.append((path, "cc:luhn"))
                    return _CARD
            return v
        if t is float or t is bool or v is None:
            return v
        if isinstance(v, Mapping):
            return self._walk(dict(v), path, depth, report, pending, container, slot)
        if isinstance(v, list):
            return self._walk(list(v), path, depth, report, pending, container, slot)
        if isinstance(v, tuple):
            if depth >= self._max_depth:
                report.append((path, "too_deep_to_scan"))
                return _TOO_DEEP
            # a tuple cannot be patched after the batch scan: scan its strings now
            return tuple(self._walk(item, (path, i), depth + 1, report, None) for i, item in enumerate(v))
        return v  # non-JSON objects: unchanged, unscanned


def _pointer(path: Any) -> str:
    tokens: list[str] = []
    while path is not None:
        path, token = path
        ts = token if type(token) is str else str(token)
        tokens.append(escape_pointer_token(ts))
    if not tokens:
        return ""
    tokens.reverse()
    return "/" + "/".join(tokens)


default_redactor = Redactor()


def redact(value: Any) -> Redacted:
    """Redact ``value`` with the default rules. See :class:`Redactor`."""
    return default_redactor.redact(value)
