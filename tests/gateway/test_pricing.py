"""gateway.pricing: exactly genai-prices' own prices, from the bundled snapshot, with no network."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from gateway.pricing import PRICING_VERSION, Pricer, TokenCounts, format_usd, price_usage

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any socket use fails the test: pricing must work air-gapped."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def reference(model: str, provider: str | None, tokens: TokenCounts) -> Decimal:
    """genai-prices' own answer for the same call."""
    usage = Usage(
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_read_tokens=tokens.cache_read_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        output_reasoning_tokens=tokens.reasoning_tokens,
    )
    return calc_price(usage, model_ref=model, provider_id=provider, genai_request_timestamp=AT).total_price


@pytest.mark.parametrize(
    ("model", "provider", "tokens", "priced_as"),
    [
        ("gpt-4o", "openai", TokenCounts(1200, 300), ("gpt-4o", "openai")),
        ("gpt-4o", None, TokenCounts(1200, 300, cache_read_tokens=1024), ("gpt-4o", "openai")),
        ("gpt-4o-mini", "OpenAI", TokenCounts(50_000, 2_000, cache_read_tokens=40_000), ("gpt-4o-mini", "openai")),
        ("o3-mini", "openai", TokenCounts(900, 4_000, reasoning_tokens=3_500), ("o3-mini", "openai")),
        ("gpt-4o-2024-08-06", "azure", TokenCounts(1000, 100, cache_read_tokens=500), ("gpt-4o", "azure")),
        ("claude-sonnet-4-5", "anthropic", TokenCounts(10_000, 800, cache_read_tokens=6_000, cache_write_tokens=2_000),
         ("claude-sonnet-4-5", "anthropic")),
        ("claude-3-5-sonnet-latest", None, TokenCounts(3_000, 500, cache_write_tokens=1_000),
         ("claude-3-5-sonnet", "anthropic")),
        ("gemini-2.5-flash", "google_genai", TokenCounts(8_000, 1_000, reasoning_tokens=600),
         ("gemini-2.5-flash", "google")),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "bedrock", TokenCounts(2_000, 100),
         ("regional.anthropic.claude-3-5-sonnet-20241022-v2:0", "aws")),
        ("deepseek-chat", None, TokenCounts(5_000, 700, cache_read_tokens=1_000), ("deepseek-chat", "deepseek")),
    ],
)
def test_cost_equals_genai_prices(
    model: str, provider: str | None, tokens: TokenCounts, priced_as: tuple[str, str]
) -> None:
    """Our cost is exactly calc_price's, cache reads/writes and reasoning included, and we record
    which genai-prices model and provider it came from."""
    price = price_usage(model, provider, tokens, AT)
    assert price.status == "priced"
    assert price.cost_usd == reference(model, provider, tokens)
    assert price.cost_usd is not None and price.cost_usd > 0
    assert (price.model_id, price.provider_id) == priced_as


VECTORS = [
    TokenCounts(0, 0),
    TokenCounts(1, 1),
    TokenCounts(1234, 567, cache_read_tokens=1000, cache_write_tokens=200, reasoning_tokens=300),
    TokenCounts(128_001, 1, cache_read_tokens=128_000),
    TokenCounts(200_000, 10, cache_write_tokens=199_000),
    TokenCounts(200_001, 10, reasoning_tokens=10),
    TokenCounts(250_000, 9_000, cache_read_tokens=100_000, cache_write_tokens=50_000, reasoning_tokens=8_000),
    TokenCounts(10**9, 10**9, cache_read_tokens=10**8, cache_write_tokens=10**8, reasoning_tokens=10**8),
]


def test_fast_path_is_exactly_genai_prices_for_bundled_models() -> None:
    """The linear fast path equals genai-prices' own ModelInfo.calc_price for every tiered price
    table in the bundle and a sample of the others, across tier boundaries and extreme counts."""
    from genai_prices.data import providers
    from genai_prices.types import TieredPrices

    from gateway.pricing import _LinearPrice

    checked = tiered = 0
    for provider in providers:
        for index, model in enumerate(provider.models):
            model_price = model.get_prices(AT)
            is_tiered = any(isinstance(v, TieredPrices) for v in model_price.__dict__.values())
            if not is_tiered and index % 7:
                continue
            tiered += is_tiered
            linear = _LinearPrice(model_price)
            for t in VECTORS:
                usage = Usage(input_tokens=t.input_tokens, output_tokens=t.output_tokens,
                              cache_read_tokens=t.cache_read_tokens, cache_write_tokens=t.cache_write_tokens,
                              output_reasoning_tokens=t.reasoning_tokens)
                expected = model.calc_price(usage, provider, genai_request_timestamp=AT).total_price
                assert linear.cost(t) == expected, (provider.id, model.id, t)
                checked += 1
    assert tiered > 20 and checked > 2000


def test_cache_reads_are_cheaper_than_fresh_input() -> None:
    """input_tokens includes cache reads: moving tokens into the cache lowers the price, it
    never adds them on top."""
    fresh = price_usage("gpt-4o", "openai", TokenCounts(10_000, 0), AT).cost_usd
    cached = price_usage("gpt-4o", "openai", TokenCounts(10_000, 0, cache_read_tokens=8_000), AT).cost_usd
    assert fresh is not None and cached is not None
    assert cached < fresh
    # gpt-4o: $2.50/MTok input, $1.25/MTok cached input
    assert fresh == Decimal("0.025")
    assert cached == Decimal("0.015")


def test_litellm_style_model_names_are_read_like_litellm() -> None:
    """'anthropic/claude-...' without a provider is priced as the prefix's provider, as
    genai-prices does for provider 'litellm'."""
    tokens = TokenCounts(1_000, 100)
    price = price_usage("anthropic/claude-3-5-sonnet-latest", None, tokens, AT)
    assert (price.status, price.provider_id) == ("priced", "anthropic")
    assert price.cost_usd == reference("anthropic/claude-3-5-sonnet-latest", "litellm", tokens)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("my-finetune-v7", None),  # no provider claims it
        ("llama3", "ollama"),  # a provider genai-prices does not price (self-hosted)
        ("gpt-4o", "scriptedchatmodel"),  # a known model under an unknown provider: never guessed
        ("claude-sonnet-4-5", "bedrock"),  # a provider that does not list this name
        ("openai/not-a-model", None),
    ],
)
def test_unknown_is_unpriced_never_guessed(model: str, provider: str | None) -> None:
    """Unknown model or provider: unpriced, no cost, no matched ids."""
    price = price_usage(model, provider, TokenCounts(1_000, 100), AT)
    assert (price.status, price.cost_usd, price.model_id, price.provider_id) == ("unpriced", None, None, None)


def test_inconsistent_counts_are_unpriced_not_an_error() -> None:
    """Ingest validation refuses these; the pricer itself still never raises."""
    price = price_usage("gpt-4o", "openai", TokenCounts(10, 5, cache_read_tokens=50), AT)
    assert price.status == "unpriced"


def test_zero_tokens_cost_zero() -> None:
    price = price_usage("gpt-4o", "openai", TokenCounts(0, 0), AT)
    assert (price.status, price.cost_usd) == ("priced", Decimal(0))


def test_lookups_are_cached_per_model_and_provider() -> None:
    """One resolution per (model, provider); later calls hit the cache."""
    pricer = Pricer()
    for _ in range(5):
        pricer.price("gpt-4o", "openai", TokenCounts(10, 1), AT)
        pricer.price("gpt-4o", None, TokenCounts(10, 1), AT)
        pricer.price("nope-model", None, TokenCounts(10, 1), AT)
    info = pricer.cache_info()
    assert (info.misses, info.hits) == (3, 12)


def test_memory_stays_bounded_under_many_distinct_model_names() -> None:
    """Agents choose model names: the LRU and the rebuilt snapshot keep memory bounded, and
    prices stay right across rebuilds."""
    pricer = Pricer(cache_size=16, rebuild_after=32)
    tokens = TokenCounts(1_000, 100)
    expected = reference("gpt-4o", "openai", tokens)
    for i in range(200):
        assert pricer.price(f"unknown-model-{i}", None, tokens, AT).status == "unpriced"
        assert pricer.price("gpt-4o", "openai", tokens, AT).cost_usd == expected
    assert pricer.cache_info().currsize <= 16


def test_price_follows_the_request_time() -> None:
    """The call's time selects the price: deepseek-chat has an off-peak (time-of-day) price."""
    tokens = TokenCounts(1_000_000, 1_000_000)
    peak, off_peak = AT.replace(hour=18), AT.replace(hour=2)
    costs = []
    for at in (peak, off_peak):
        price = price_usage("deepseek-chat", "deepseek", tokens, at)
        usage = Usage(input_tokens=tokens.input_tokens, output_tokens=tokens.output_tokens)
        assert price.cost_usd == calc_price(usage, model_ref="deepseek-chat", provider_id="deepseek",
                                            genai_request_timestamp=at).total_price
        costs.append(price.cost_usd)
    assert costs[0] != costs[1]


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("0.00725000"), "0.00725"), (Decimal("1E-7"), "0.0000001"), (Decimal("12.50"), "12.5"),
     (Decimal(100), "100"), (Decimal("0E-10"), "0"), (Decimal(0), "0")],
)
def test_format_usd_is_exact_and_plain(value: Decimal, text: str) -> None:
    assert format_usd(value) == text
    assert Decimal(text) == value


def test_pricing_version_names_the_table() -> None:
    import genai_prices

    assert PRICING_VERSION == f"genai-prices {genai_prices.__version__}"
