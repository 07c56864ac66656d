"""``plugin.export --push_to_hub`` against a real local server speaking the hub's HTTP API (tests/hub_server.py),
reached the way users reach a mirror: ``HF_ENDPOINT``. Each run is the real command in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from ..helpers import method_config
from ..hub_server import LocalHub


pytestmark = pytest.mark.slow  # every test here runs a real process or a real model (docs/architecture.md)


@pytest.fixture(scope="module")
def mor_adapter(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "mor"
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   method_config("mor", target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


def _export(*args, endpoint: str, token: str | None):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=os.environ.get("HF_HOME", "/nonexistent-hf-home"))
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "plugin.export", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_push_uploads_the_adapter_with_its_card_in_one_commit(mor_adapter):
    with LocalHub() as hub:
        proc = _export(mor_adapter, "--push_to_hub", "alice/tiny-mor", "--private", endpoint=hub.url,
                       token=hub.token)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.repos["alice/tiny-mor"]
        assert hub.server.visibility["alice/tiny-mor"] == "private"
        assert sum("/commit/" in path for path in hub.server.requests) == 1
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert files[name] == (mor_adapter / name).read_bytes()
    assert json.loads(files["adapter_config.json"])["peft_type"] == "MOR"
    card = files["README.md"].decode()
    assert "library_name: peft" in card and "- mor" in card and "import plugin" in card
    assert "/commit/" in proc.stdout


def test_without_a_token_nothing_is_sent(mor_adapter):
    with LocalHub() as hub:
        proc = _export(mor_adapter, "--push_to_hub", "alice/tiny-mor", endpoint=hub.url, token=None)
        assert hub.server.requests == []
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (  # the last line: some stacks log import noise first
        "error: pushing to alice/tiny-mor needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")


def test_a_refused_upload_leaves_nothing_on_the_hub(mor_adapter):
    with LocalHub() as hub:
        hub.server.fail_commits = True
        proc = _export(mor_adapter, "--push_to_hub", "alice/tiny-mor", endpoint=hub.url, token=hub.token)
        assert hub.repos["alice/tiny-mor"] == {}
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the hub refused the upload to alice/tiny-mor: ")
    assert "Traceback" not in proc.stderr


def test_an_unreachable_hub_is_one_line(mor_adapter):
    with LocalHub() as hub:
        endpoint = hub.url  # closed when the block ends: nothing listens there any more
    proc = _export(mor_adapter, "--push_to_hub", "alice/tiny-mor", endpoint=endpoint, token="hf_x")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot reach the hub at {endpoint} to push alice/tiny-mor (ConnectError); nothing was uploaded: "
        "check the network (or HF_ENDPOINT) and rerun")


def test_a_bad_repo_id_is_refused_before_any_work(mor_adapter, tmp_path):
    proc = _export(mor_adapter, "--merge", tmp_path / "merged", "--push_to_hub", "tiny-mor", endpoint="http://x",
                   token="hf_x")
    assert proc.returncode == 2 and not (tmp_path / "merged").exists()
    assert "error: hub repo 'tiny-mor': give it as owner/name" in proc.stderr
