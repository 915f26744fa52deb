"""The ledger suite runs against SQLite and a real PostgreSQL server.

PostgreSQL comes from BURSTLAB_TEST_POSTGRES_URL (.ci/run starts a server and sets it; locally:
``export BURSTLAB_TEST_POSTGRES_URL=$(.ci/postgres start /tmp/pg)``). Each test gets a schema of its own.
Where the variable is unset, the PostgreSQL cases are skipped and say so.
"""

import os
import uuid
from urllib.parse import quote

import pytest

PG_URL = os.environ.get("BURSTLAB_TEST_POSTGRES_URL", "")
NO_PG = ("BURSTLAB_TEST_POSTGRES_URL is not set: the PostgreSQL ledger tests need a server "
         "(.ci/run starts one; locally: export BURSTLAB_TEST_POSTGRES_URL=$(.ci/postgres start /tmp/pg))")


def postgres_schema_url(base: str):
    """A fresh schema on the test server; returns (url whose search_path is that schema, drop())."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options={quote(f'-csearch_path={schema}')}"

    def drop():
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A URL for an empty ledger: a SQLite file, or a fresh schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.sqlite"
        return
    if not PG_URL:
        pytest.skip(NO_PG)
    url, drop = postgres_schema_url(PG_URL)
    yield url
    drop()


@pytest.fixture
def postgres_url():
    """A fresh schema on the PostgreSQL test server (for the cases that are about PostgreSQL itself)."""
    if not PG_URL:
        pytest.skip(NO_PG)
    url, drop = postgres_schema_url(PG_URL)
    yield url
    drop()
