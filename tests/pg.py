"""Throwaway PostgreSQL databases on the local server, for tests and benchmarks alike."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_ADMIN_DSN = os.environ.get("CALLGATE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_PREFIX = os.environ.get("CALLGATE_TEST_PG_URL_PREFIX", "postgresql+psycopg://postgres@127.0.0.1:5432/")


@contextmanager
def throwaway_database(prefix: str, *, template: str | None = None) -> Iterator[str]:
    """CREATE a uniquely named database (optionally from a template), yield its name, DROP it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
