"""LLM call pricing with genai-prices' *bundled* price snapshot.

Why the bundled snapshot only: the gateway must price the same usage the same way on every
replica and on every restart, and it must work air-gapped. ``genai_prices.update_prices`` (a
background fetch of a newer table) is therefore never used, and this module builds its own
``DataSnapshot`` from the providers shipped in the wheel, so even a process-wide
``set_custom_snapshot`` elsewhere cannot change our prices. The genai-prices version is stored
with every row (``pricing_version``), so a cost can always be explained later.

Semantics (genai-prices' own, read from its source; ``callgate.record_usage`` uses the same):

* ``input_tokens`` is the total prompt and *includes* cache reads and cache writes; genai-prices
  prices the uncached remainder at the input rate and the cached parts at their own rates.
* ``output_tokens`` *includes* reasoning tokens. They are passed as genai-prices'
  ``output_reasoning_tokens``, which changes the price only for models that bill reasoning at
  its own rate.
* Provider matching: a provider id or alias genai-prices knows (``openai``, ``anthropic``,
  ``azure`` -> OpenAI/Anthropic models via Azure's fallback, ``google_genai``/``google_vertexai``
  -> ``google``, ``bedrock`` -> ``aws``, ``mistralai`` -> ``mistral``, ``litellm`` -> the
  ``provider/`` prefix of the model) selects that provider's price. No provider: the model name
  picks it (``gpt-*`` -> OpenAI, ``claude*`` -> Anthropic, ...), and a ``provider/model`` name
  is read as LiteLLM does.
* Anything else is **unpriced**, never guessed: a provider genai-prices does not know (``ollama``,
  a test double, a self-hosted server) or a model its provider does not list. The tokens are
  still stored; the cost is null.

Lookups are cached per ``(model, provider)`` in a bounded LRU. genai-prices keeps its own
(unbounded) lookup caches inside a snapshot; since model names come from agents, the snapshot
is rebuilt after every :data:`REBUILD_AFTER_LOOKUPS` distinct lookups to keep memory bounded.

Speed: genai-prices' ``calc_price`` costs about a millisecond per call (it re-derives the unit
decomposition every time), which would cap ingest near a thousand LLM calls per second per
process. Its price is a linear function of the five token counts (for tiered prices: linear
within each input-size tier), so :class:`_LinearPrice` asks genai-prices itself for the
coefficients once per price table and tier -- a handful of ``calc_price`` calls on unit usages --
and then prices each call with five exact ``Decimal`` multiplications. Same arithmetic, same
exact result (tests compare it with ``calc_price`` over every bundled model); anything it cannot
represent is priced by ``calc_price`` directly.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Literal

from genai_prices import Usage
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

__all__ = ["PRICING_VERSION", "Price", "Pricer", "TokenCounts", "format_usd", "price_usage"]

log = logging.getLogger("callgate.gateway.pricing")

#: Which price table priced a row: the genai-prices release whose bundled snapshot we use.
PRICING_VERSION = f"genai-prices {version('genai-prices')}"
LOOKUP_CACHE_SIZE = 4096
REBUILD_AFTER_LOOKUPS = 4 * LOOKUP_CACHE_SIZE

PriceStatus = Literal["priced", "unpriced"]


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """One LLM call's tokens, in callgate's (= genai-prices') inclusive semantics."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Price:
    """The outcome of pricing one call. ``cost_usd`` is exact (a Decimal), None when unpriced."""

    status: PriceStatus
    cost_usd: Decimal | None
    model_id: str | None  # genai-prices' model id, e.g. "gpt-4o"
    provider_id: str | None  # genai-prices' provider id, e.g. "openai"


UNPRICED = Price("unpriced", None, None, None)


def format_usd(value: Decimal) -> str:
    """An exact decimal string without exponent or trailing zeros: ``0.00725``, ``12``, ``0``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _bundled_providers() -> list[Provider]:
    from genai_prices.data import providers  # the snapshot shipped in the wheel

    return providers


class _LinearPrice:
    """A price table as ``cost = intercept + sum(coefficient * count)`` per input-size tier,
    with every coefficient computed by genai-prices itself (see the module docstring)."""

    __slots__ = ("bounds", "segments")

    def __init__(self, model_price: ModelPrice) -> None:
        starts = sorted({tier.start for value in model_price.__dict__.values() if isinstance(value, TieredPrices)
                         for tier in value.tiers})
        # A tier applies when input_tokens > start: segment k holds bounds[k-1] < input <= bounds[k].
        self.bounds = starts
        self.segments = [self._fit(model_price, 1 if k == 0 else starts[k - 1] + 1,
                                   starts[k] if k < len(starts) else None) for k in range(len(starts) + 1)]

    @staticmethod
    def _fit(model_price: ModelPrice, base: int, upper: int | None) -> tuple[Decimal, ...]:
        if upper is not None and base + 1 > upper:
            raise ValueError("tier too narrow to fit")

        def cost(**counts: int) -> Decimal:
            return model_price.calc_price(Usage(**counts))["total_price"]

        at_base = cost(input_tokens=base)
        per_input = cost(input_tokens=base + 1) - at_base
        per_output = cost(input_tokens=base, output_tokens=1) - at_base
        per_cache_read = cost(input_tokens=base, cache_read_tokens=1) - at_base
        per_cache_write = cost(input_tokens=base, cache_write_tokens=1) - at_base
        per_reasoning = cost(input_tokens=base, output_tokens=1, output_reasoning_tokens=1) - at_base - per_output
        intercept = at_base - per_input * base
        return intercept, per_input, per_output, per_cache_read, per_cache_write, per_reasoning

    def cost(self, t: TokenCounts) -> Decimal:
        segment = 0
        for start in self.bounds:
            if t.input_tokens > start:
                segment += 1
        intercept, per_in, per_out, per_read, per_write, per_reasoning = self.segments[segment]
        return (intercept + per_in * t.input_tokens + per_out * t.output_tokens + per_read * t.cache_read_tokens
                + per_write * t.cache_write_tokens + per_reasoning * t.reasoning_tokens)


class Pricer:
    """Prices usage from the bundled snapshot; thread-safe (request handlers run in a pool)."""

    def __init__(self, *, cache_size: int = LOOKUP_CACHE_SIZE, rebuild_after: int = REBUILD_AFTER_LOOKUPS) -> None:
        self._providers = _bundled_providers()
        self._snapshot = DataSnapshot(providers=self._providers, from_auto_update=False)
        self._rebuild_after = rebuild_after
        self._resolved_since_rebuild = 0
        self._lock = threading.Lock()
        self._lookup = functools.lru_cache(maxsize=cache_size)(self._resolve)
        # id(ModelPrice) -> (the ModelPrice, kept alive so the id stays unique; its linear form or None)
        self._linear: dict[int, tuple[ModelPrice, _LinearPrice | None]] = {}

    def price(self, model: str, provider: str | None, tokens: TokenCounts, at: datetime) -> Price:
        """Price one call made at ``at`` (prices can change over time). Never raises for bad
        usage: an inconsistent count (which ingest validation already refuses) is unpriced."""
        match = self._lookup(model, provider.lower() if provider else None)
        if match is None:
            return UNPRICED
        found_provider, found_model = match
        linear = self._linear_for(found_model, found_provider, at)
        consistent = (tokens.cache_read_tokens + tokens.cache_write_tokens <= tokens.input_tokens
                      and tokens.reasoning_tokens <= tokens.output_tokens)
        if linear is not None and consistent:
            return Price("priced", linear.cost(tokens), found_model.id, found_provider.id)
        usage = Usage(
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cache_read_tokens=tokens.cache_read_tokens,
            cache_write_tokens=tokens.cache_write_tokens,
            output_reasoning_tokens=tokens.reasoning_tokens,
        )
        try:
            calc = found_model.calc_price(usage, found_provider, genai_request_timestamp=at)
        except ValueError as exc:
            log.warning("cannot price %s tokens of %r: %s", tokens, model, exc)
            return UNPRICED
        return Price("priced", calc.total_price, found_model.id, found_provider.id)

    def _linear_for(self, model: ModelInfo, provider: Provider, at: datetime) -> _LinearPrice | None:
        if provider.id == "groq" and model.id.startswith("whisper"):
            return None  # genai-prices bills these by (minimum) audio seconds, not linearly
        model_price = model.get_prices(at)
        cached = self._linear.get(id(model_price))
        if cached is None:
            try:
                linear: _LinearPrice | None = _LinearPrice(model_price)
            except ValueError:
                linear = None  # a table genai-prices cannot price on unit usages: price each call directly
            cached = self._linear[id(model_price)] = (model_price, linear)
        return cached[1]

    def cache_info(self) -> functools._CacheInfo:
        return self._lookup.cache_info()

    def _resolve(self, model: str, provider: str | None) -> tuple[Provider, ModelInfo] | None:
        """The (provider, model) genai-prices would use for this pair, or None (unpriced)."""
        with self._lock:
            self._resolved_since_rebuild += 1
            if self._resolved_since_rebuild > self._rebuild_after:
                self._snapshot = DataSnapshot(providers=self._providers, from_auto_update=False)
                self._resolved_since_rebuild = 1
            snapshot = self._snapshot
        attempts = [provider] if provider is not None else [None, "litellm"] if "/" in model else [None]
        for provider_id in attempts:
            try:
                return snapshot.find_provider_model(model, None, provider_id, None)
            except LookupError:
                continue
        return None


_default: Pricer | None = None
_default_lock = threading.Lock()


def price_usage(model: str, provider: str | None, tokens: TokenCounts, at: datetime) -> Price:
    """Price one call with the process-wide :class:`Pricer` (built on first use)."""
    global _default
    pricer = _default
    if pricer is None:
        with _default_lock:
            if _default is None:
                _default = Pricer()
            pricer = _default
    return pricer.price(model, provider, tokens, at)
