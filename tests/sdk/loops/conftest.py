"""The framework suites' fixtures, for the raw-loop suite too: one real ``callgate serve`` shared
by the modules (``gateway``), the SDK configured against it (``configured``) and a fresh session per test
(``session_id``).

They are defined once, in ``tests/sdk/integrations/conftest.py``. That conftest is not on this
directory's path (and the environment's ``--confcutdir`` would cut it off anyway), so the fixture
functions are imported here: pytest registers fixtures found in a conftest's namespace.
"""

from __future__ import annotations

from tests.sdk.integrations.conftest import configured, gateway, session_id, shared_gateway

__all__ = ["configured", "gateway", "session_id", "shared_gateway"]
