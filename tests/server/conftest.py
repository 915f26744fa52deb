"""Fixtures for the tests that drive a real ``jupyter burstlab`` process over HTTP."""

from __future__ import annotations

import pytest

from burstlab_service import start_service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("burstlab-service"))
    yield svc
    svc.stop()
