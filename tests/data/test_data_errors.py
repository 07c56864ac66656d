"""Data files that cannot be read are one clear line, not a traceback."""


import pytest

from plugin.train import main as train_main

from ..helpers import FIXTURES_DIR, write_yaml
from ..helpers import one_error_line as _one_error_line

FIXTURES = FIXTURES_DIR / "eval"


@pytest.mark.parametrize("name,content,message", [
    ("latin1.jsonl", "\xe9t\xe9".encode("latin-1"), "is not UTF-8 text (byte 0)"),
    ("empty.jsonl", b"", "is an empty file"),
])
def test_unreadable_data_files(base_cfg, tmp_path, capsys, name, content, message):
    (tmp_path / name).write_bytes(content)
    cfg = {**base_cfg, "datasets": [{"path": str(tmp_path / name)}]}
    assert message in _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))


def test_saved_dataset_without_the_split(base_cfg, tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    DatasetDict({"validation": Dataset.from_list([{"text": "x"}])}).save_to_disk(str(tmp_path / "saved"))
    cfg = {**base_cfg, "datasets": [{"path": str(tmp_path / "saved"), "type": "text"}]}
    line = _one_error_line(capsys, lambda: train_main([str(write_yaml(tmp_path / "c.yaml", **cfg))]))
    assert "has no split 'train'; set split: to one of validation" in line
