"""``scripts/gpu_check.sh`` (the prepared GPU check) runs end to end on CPU with tiny shapes and writes its JSON and
Markdown: the script a lent H200 runs is the script tested here."""

from __future__ import annotations

import pytest
import json
import os
import subprocess
import sys

from ..helpers import REPO


pytestmark = pytest.mark.slow  # every test here runs a real process or a real model (docs/architecture.md)


def test_gpu_check_runs_with_tiny_shapes(tmp_path):
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [row["method"] for row in report["train"]] == ["lora", "mplora", "mor", "loratrf"]
    assert all(row["peak_bytes"] > 0 and row["step_s"] > 0 for row in report["train"])
    served = {(row["scenario"], row["served"]) for row in report["serve"]}
    assert {("a", "lora"), ("a", "mor"), ("a", "loratrf"), ("b", "plugin.serve (base)"),
            ("b", "transformers serve (base)"), ("c", "three adapters (lora, mor, loratrf)")} <= served
    assert all(row["tokens"] > 0 for row in report["serve"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "## Training (4-bit base)" in table and "| mor |" in table and "| c | three adapters" in table
