"""schemathesis against the OpenAPI document of a running ``jupyter burstlab``: no 5xx for any generated input,
and every answer is one the document describes (status, content type, schema).

Two checks are left out, each for a reason:
- ``missing_required_header`` wants 401 without a token; jupyter_server answers 403 (docs/api.md says so).
- ``positive_data_acceptance`` on POST sessions, POST sandboxes and POST templates: a GPU type this workspace lacks,
  a size string above the memory maximum, and a set-up cell that raises, are valid JSON Schema and still a 400
  (JSON Schema cannot state them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from burstlab_service import start_service

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]

CONFIG = """
# Every check runs (the default) but this one:
checks.missing_required_header.enabled = false

[[operations]]
include-path = "/sessions"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/sandboxes"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/templates"
include-method = "POST"
checks.positive_data_acceptance.enabled = false
"""


def test_no_5xx_and_answers_match_the_document(tmp_path):
    svc = start_service(tmp_path / "svc", "--BurstLabApp.max_sandbox_timeout=5", "--BurstLabApp.max_sandboxes_per_user=4",
                        "--BurstLabApp.max_wait=5")  # every wait ends within --request-timeout
    try:
        (tmp_path / "schemathesis.toml").write_text(CONFIG)
        st = Path(sys.executable).with_name("st")
        cmd = [str(st), "run", f"{svc.url}/openapi.json", "-H", f"Authorization: {svc.headers('alice')['Authorization']}",
               "--max-examples", "15",
               "--workers", "1", "--seed", "20261124", "--max-time", "40", "--request-timeout", "20",
               "--generation-deterministic", "--no-color"]
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        svc.stop()
    (tmp_path / "schemathesis.out").write_text(result.stdout + result.stderr)
    report = result.stdout[-6000:] + result.stderr[-2000:] + f"\n(whole report: {tmp_path / 'schemathesis.out'})"
    assert result.returncode == 0, report
    assert "Server error" not in result.stdout
