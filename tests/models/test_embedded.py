"""The embedded default model is built from the PyPI package's GGUF on a fresh machine (empty cache)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("gguf")


pytestmark = pytest.mark.slow  # every test here runs a real process or a real model (docs/architecture.md)


def test_fresh_cache_converts_the_gguf_once(tmp_path):
    # a fresh process: nothing imported before; the package's own __init__ (which needs the `llm` CLI) is not run
    code = "from plugin.models.embedded import embedded_model_path; print(embedded_model_path())"
    env = {"PLUGIN_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "smollm2-135m-instruct"
    assert first.stdout.strip().splitlines()[-1] == str(folder)
    config = json.loads((folder / "config.json").read_text())
    # a plain float model: nothing downstream may take it for a quantized one
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config.get("quantization_config") is None
    assert (folder / "tokenizer_config.json").is_file() and not folder.with_name(folder.name + ".tmp").exists()
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "converting" not in again.stdout  # cached: converted once
