"""Operational endpoints and the OpenAPI document."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient


class TestOperations:
    def test_health_and_readiness(self, client: TestClient) -> None:
        """Liveness is unconditional; readiness reports the policy version in force."""
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert isinstance(ready.json()["policy_version"], int)

    def test_metrics_count_decisions(self, client: TestClient, agent_key: str) -> None:
        """/metrics exposes decisions by tool and decision in Prometheus text format."""
        client.post("/v1/calls", json={"id": str(uuid.uuid4()), "tool": "delete_database", "args": {}},
                    headers={"Authorization": f"Bearer {agent_key}"})
        text = client.get("/metrics").text
        assert 'callgate_decisions_total{decision="block",tool="delete_database"} 1.0' in text

    def test_openapi_documents_every_operation_and_error(self, client: TestClient) -> None:
        """Each /v1 operation documents its body, its success and its problem responses."""
        spec = client.get("/openapi.json").json()
        post = spec["paths"]["/v1/calls"]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["id", "tool", "args"]
        assert {"201", "200", "401", "413", "415", "422"} <= set(post["responses"])
        assert "/v1/calls/{call_id}/outcome" in spec["paths"]
        assert client.get("/docs").status_code == 200

    def test_unknown_route_and_method_are_problems(self, client: TestClient) -> None:
        """Routing errors are problem+json too."""
        r = client.get("/v1/nothing")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        r = client.delete("/v1/calls")
        assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")
