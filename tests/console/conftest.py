"""Console fixtures: the in-process gateway app over HTTPS, console users, and a logged-in client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.audit import SYSTEM
from gateway.config import Settings
from gateway.users import create_user
from tests.gateway.conftest import (  # noqa: F401 - fixtures shared with the gateway tests
    admin_key,
    agent_key,
    engine,
    policy_file,
    settings,
)

PASSWORD = "correct horse battery staple"
ROLES = {"rita": "reviewer", "vic": "viewer", "ada": "admin"}
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def users(engine: Engine, settings: Settings) -> dict[str, str]:
    """rita (reviewer), vic (viewer) and ada (admin), all with PASSWORD."""
    with engine.begin() as conn:
        for name, role in ROLES.items():
            create_user(conn, username=name, password=PASSWORD, role=role, env=settings.env, actor=SYSTEM)
    return dict(ROLES)


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    # https: the __Host- session cookie is Secure, and TestClient does not send it over http://
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def login_form_token(client: TestClient) -> str:
    r = client.get("/login")
    assert r.status_code == 200, r.text
    match = LOGIN_TOKEN.search(r.text)
    assert match, r.text
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD, **kw):  # type: ignore[no-untyped-def]
    """Submit the login form like a browser (fetch the form and its token first)."""
    token = login_form_token(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=False, **kw)


def csrf_token(client: TestClient) -> str:
    r = client.get("/")
    assert r.status_code == 200, r.text
    match = CSRF_META.search(r.text)
    assert match, r.text
    return match.group(1)


@dataclass
class Reviewer:
    client: TestClient
    csrf: str


def signed_in(client: TestClient, username: str) -> Reviewer:
    r = login(client, username)
    assert r.status_code == 303, r.text
    return Reviewer(client, csrf_token(client))


def submit_pending(client: TestClient, agent_key: str, amount: int = 500) -> str:
    """An agent submits a refund the test policy holds for approval; returns its call id."""
    call_id = str(uuid.uuid4())
    r = client.post("/v1/calls", json={"id": call_id, "tool": "stripe.refund",
                                       "args": {"customer_id": "cus_42", "amount": amount,
                                                "api_key": "sk_live_" + "x" * 24}},
                    headers={"Authorization": f"Bearer {agent_key}"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending", r.json()
    return call_id
