"""Datasets from the YAML: local JSON/JSONL/parquet files, saved datasets or hub ids, in TRL's formats.

Chat (``messages``) and ``alpaca`` rows become TRL's conversational prompt/completion rows, so TRL computes the
loss on the answer only (its ``completion_only_loss``); ``text`` rows are plain language modelling.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

from .config import DatasetSpec
from .errors import UserError

_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_ROLES = {"system", "user", "assistant"}


def _looks_like_path(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in _LOCAL_FORMATS or path.count("/") > 1


def _check_json(path: Path) -> None:
    """Point at the bad line ourselves: datasets would log a long traceback for it."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith(("[", "{")):
        try:
            json.loads(text)
            return
        except json.JSONDecodeError:
            pass  # maybe JSON Lines saved as .json
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"dataset {path} could not be read as json: line {number}: {err.msg}") from None


def _load_raw(spec: DatasetSpec) -> Dataset:
    path = Path(spec.path).expanduser()
    if path.is_file():
        builder = _LOCAL_FORMATS.get(path.suffix)
        if builder is None:
            raise UserError(f"dataset {spec.path}: unsupported file type '{path.suffix}'; use .json, .jsonl, .parquet or .csv")
        if builder == "json":
            _check_json(path)
        try:
            return load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # malformed JSON and friends: datasets raises many types
            raise UserError(f"dataset {spec.path} could not be read as {builder}: {str(err).splitlines()[0]}") from None
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = load_from_disk(str(path))
            return loaded[spec.split] if hasattr(loaded, "keys") else loaded
        return load_dataset(str(path), spec.name, split=spec.split)
    if _looks_like_path(spec.path):
        raise UserError(f"dataset file not found: {spec.path}")
    try:
        return load_dataset(spec.path, spec.name, split=spec.split)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"could not load dataset '{spec.path}' from the hub (offline? typo?): {first}") from None


def _from_messages(row: dict, column: str) -> dict:
    messages = row[column]
    if not isinstance(messages, list) or not messages:
        raise UserError(f"a row's '{column}' is not a non-empty list of {{role, content}} messages")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"bad message {m!r}: each needs role (system/user/assistant) and string content")
    if messages[-1]["role"] != "assistant":
        raise UserError("a chat row must end with an assistant message (the part the model learns to write)")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def _from_alpaca(row: dict) -> dict:
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": row["output"]}],
    }


REQUIRED_COLUMNS = {"alpaca": ("instruction", "output"), "text": ("text",)}


def to_trl_format(raw: Dataset, spec: DatasetSpec) -> Dataset:
    required = REQUIRED_COLUMNS.get(spec.type, (spec.field_messages,))
    missing = [c for c in required if c not in raw.column_names]
    if missing:
        raise UserError(
            f"dataset {spec.path} has no column '{missing[0]}' needed by type '{spec.type}' "
            f"(columns: {', '.join(raw.column_names)}); set the right 'type' for it"
        )
    if spec.max_samples is not None:
        raw = raw.select(range(min(spec.max_samples, len(raw))))
    if len(raw) == 0:
        raise UserError(f"dataset {spec.path} is empty")
    if spec.type == "text":
        return raw.select_columns(["text"])
    convert = _from_alpaca if spec.type == "alpaca" else (lambda row: _from_messages(row, spec.field_messages))
    # validate eagerly with a plain loop: errors surface as UserError, not inside a datasets worker
    rows = [convert(row) for row in raw]
    return Dataset.from_list(rows)


def load_training_data(specs: list[DatasetSpec], val_set_size: float, seed: int) -> tuple[Dataset, Dataset | None]:
    parts = [to_trl_format(_load_raw(spec), spec) for spec in specs]
    kinds = {"text" if "text" in p.column_names else "chat" for p in parts}
    if len(kinds) > 1:
        raise UserError("datasets mix type 'text' with chat/alpaca types; train them in separate runs")
    data = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if not val_set_size:
        return data, None
    test_size = val_set_size if val_set_size < 1 else int(val_set_size)
    if test_size >= len(data) or (test_size < 1 and int(test_size * len(data)) < 1):
        raise UserError(f"val_set_size={val_set_size} leaves no training or no validation rows out of {len(data)}")
    split = data.train_test_split(test_size=test_size, seed=seed)
    return split["train"], split["test"]
