import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # -n 2 on 2 cores: one thread per worker (and its children), not 2 each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import plugin  # noqa: E402,F401  (registers the methods)

from .helpers import TINY_LLAMA  # noqa: E402

@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (its loadgroup suffixes the test ids)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the README's command) the tests that share a costly fixture
    run on one worker, so it is built once: every user of the torchrun launch together, and each module whose
    tests share a module-scoped fixture (a trained run, a server) together. The rest go wherever a worker is free."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = {d.scope for fixture in (defs.name2fixturedefs.values() if defs else ()) for d in fixture}
        if "torchrun_launch" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("torchrun_launch"))
        elif "module" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, TINY_LLAMA["vocab_size"], (2, 7), generator=g)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from .helpers import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture
def chat_file(tmp_path):
    from .helpers import write_chat_rows

    return write_chat_rows(tmp_path / "chat.jsonl", 16)


@pytest.fixture
def base_cfg(tiny_model_dir, chat_file, tmp_path):
    """Keys of a valid, fast training YAML on the tiny model."""
    from .launches import train_keys

    return {**train_keys(tiny_model_dir, chat_file), "output_dir": str(tmp_path / "out")}


@pytest.fixture(scope="session")
def torchrun_launch(tiny_model_dir, tmp_path_factory):
    """Every 2-process plugin.train run the tests check, from one torchrun launch (tests/launches.py)."""
    pytest.importorskip("deepspeed")
    from .launches import run_launch

    return run_launch(tmp_path_factory.mktemp("launch"), tiny_model_dir)
