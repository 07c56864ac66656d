"""The embedded default model is built from the PyPI package's GGUF on a fresh machine (empty cache)."""

import json
import subprocess
import sys
import threading

import pytest

from plugin.models import embedded


@pytest.mark.slow  # a real process converting the real model (docs/architecture.md)
def test_fresh_cache_converts_the_gguf_once(tmp_path):
    pytest.importorskip("gguf")
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
    assert (folder / "tokenizer_config.json").is_file() and not list(tmp_path.glob("smollm2-135m-instruct.*"))
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "converting" not in again.stdout  # cached: converted once


def test_two_processes_making_the_cache_at_once_both_get_it(tmp_path, monkeypatch):
    """Two ranks (or test workers) on a fresh machine convert at the same time: each writes its own temporary
    folder, the first rename wins, the other's copy is discarded, and both get the finished folder."""
    monkeypatch.setenv("PLUGIN_CACHE", str(tmp_path))
    both_inside = threading.Barrier(2)

    def write(folder):
        both_inside.wait(timeout=10)  # neither has renamed yet
        (folder / "config.json").write_text(f'{{"by": "{threading.current_thread().name}"}}')

    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded._cached_folder("m", write)), name=f"t{i}")
               for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [str(tmp_path / "m")] * 2
    assert json.loads((tmp_path / "m" / "config.json").read_text())["by"] in {"t0", "t1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the loser's copy is gone
