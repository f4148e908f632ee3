"""Tests for callgate._config and the package surface."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import callgate
from callgate._config import runtime

from .conftest import API_KEY, FakeGateway


class TestConfigure:
    def test_env_fallback(self, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
        """url, api key and agent come from CALLGATE_* when not passed."""
        monkeypatch.setenv("CALLGATE_URL", gateway.url)
        monkeypatch.setenv("CALLGATE_API_KEY", API_KEY)
        monkeypatch.setenv("CALLGATE_AGENT", "env-agent")
        callgate.configure(spool_dir=tmp_path)
        assert callgate.is_configured()
        callgate.check_call("t", {})
        assert gateway.of("POST", "/v1/calls")[0].body["agent"] == "env-agent"

    def test_idempotent_and_reconfigure(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """Same options keep the runtime; different ones replace it cleanly."""
        callgate.configure(gateway.url, API_KEY, "a", spool_dir=tmp_path)
        rt = runtime()
        callgate.configure(gateway.url, API_KEY, "a", spool_dir=tmp_path)
        assert runtime() is rt
        callgate.configure(gateway.url, API_KEY, "b", spool_dir=tmp_path)
        assert runtime() is not rt and runtime().config.agent == "b"
        callgate.check_call("t", {})
        callgate.reset()
        assert not callgate.is_configured()

    @pytest.mark.parametrize("url", [None, "ftp://x", "http://", "http://u:p@h/"])
    def test_bad_url(self, url: str | None) -> None:
        """A missing or unusable URL is a ConfigurationError."""
        with pytest.raises(callgate.ConfigurationError):
            callgate.configure(url)

    def test_bad_options(self) -> None:
        """Unknown modes are refused rather than silently ignored."""
        with pytest.raises(callgate.ConfigurationError):
            callgate.configure("http://h", fail_mode="sometimes")  # type: ignore[arg-type]
        with pytest.raises(callgate.ConfigurationError):
            callgate.configure("http://h", approval_mode="later")  # type: ignore[arg-type]

    def test_https_builds_one_ssl_context(self) -> None:
        """An https URL gets one SSLContext at configure time."""
        callgate.configure("https://gateway.example:8443/prefix", "k")
        origin = runtime().origin
        assert origin.ssl_context is not None and origin.port == 8443 and origin.target("/v1/calls") == "/prefix/v1/calls"


class TestPackage:
    def test_all_pinned(self) -> None:
        """The public surface is exactly __all__ (sorted), like httpx pins its own."""
        public = sorted(n for n in vars(callgate) if not n.startswith("_") and n not in {
            "errors", "ids", "integrations", "redaction", "webhooks", "annotations"})
        assert callgate.__all__ == sorted(callgate.__all__) == public
        assert public == [
            "AlreadyClaimed", "ApprovalDenied", "ApprovalExpired", "AsyncPendingApproval", "CallBlocked",
            "CallgateError", "ConfigurationError", "GatewayRejected", "GatewayUnavailable", "PendingApproval",
            "Permit", "WebhookVerificationError", "acheck_call", "aresume", "check_call", "configure",
            "current_session", "flush", "guard", "is_configured", "log_usage", "reset", "resume", "session",
        ]

    def test_import_is_light(self) -> None:
        """import callgate loads no web framework, ORM, pydantic, httpx, asyncio or ssl."""
        code = ("import sys, callgate; heavy = [m for m in ('fastapi','sqlalchemy','pydantic','httpx','starlette',"
                "'asyncio','ssl','langchain_core','crewai','agents') if m in sys.modules]; print(heavy)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"

    def test_integrations_are_registered_lazily(self) -> None:
        """configure() arms the three framework integrations without importing any framework
        (the frameworks' own suites in tests/envs/ prove the patches)."""
        import sys

        from callgate import integrations

        assert set(integrations.REGISTRY) == {"langchain", "openai_agents", "crewai"}
        assert integrations.install_all() == ["crewai", "langchain", "openai_agents"]
        assert not {m for m in sys.modules if m.split(".")[0] in ("langchain_core", "agents", "crewai")}
        integrations.uninstall_all()
        assert integrations.installed() == []
