"""The Agents SDK suite: tracing off before ``agents`` is imported (its default exporter would try
to upload spans to OpenAI). ``gateway``/``configured``/``session_id`` come from ../conftest.py."""

from __future__ import annotations

import os

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
