"""The public surface and the purity promise of the policies package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import policies


class TestPublicApi:
    def test_all_is_pinned(self) -> None:
        """__all__ changes only on purpose."""
        assert sorted(policies.__all__) == [
            "Action",
            "CompiledPolicy",
            "Decision",
            "Issue",
            "PolicyError",
            "PolicySet",
            "PolicyValidationError",
            "TestFailure",
            "compile_policy",
            "load_policy_sources",
            "load_policy_text",
            "run_policy_tests",
        ]
        for name in policies.__all__:
            assert getattr(policies, name) is not None

    def test_imports_nothing_heavy(self) -> None:
        """Importing policies loads no web framework, ORM, or our other packages."""
        code = (
            "import sys, policies; "
            "bad = [m for m in ('fastapi', 'sqlalchemy', 'celery', 'httpx', 'gateway', 'console', 'callgate') "
            "if m in sys.modules]; print(','.join(bad))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.strip() == ""

    def test_no_io_or_sibling_imports_in_source(self) -> None:
        """The package source never opens files, talks to the network, or imports siblings."""
        forbidden = (
            "open(",
            "import socket",
            "import gateway",
            "from gateway",
            "import console",
            "from console",
            "import callgate",
            "from callgate",
            "import os",
            "pathlib",
        )
        for path in Path(policies.__file__).parent.glob("*.py"):
            text = path.read_text()
            for needle in forbidden:
                assert needle not in text, f"{path.name} contains {needle!r}"
