"""Datasets from the YAML (local JSON/JSONL/parquet/CSV files, saved datasets or hub ids) -> tokenised rows.

Chats in OpenAI ``messages`` (Tulu v2 rows as published), ShareGPT ``conversations`` (``from``/``value``) or any
Axolotl ``field_messages`` + ``message_property_mappings`` layout, and ``alpaca`` rows, all become ``input_ids`` +
``labels`` with every assistant turn trained (``chat_labels``); ``text`` rows are plain language modelling. One
``datasets.map`` does it (batched, ``num_proc`` on large sets, cached by ``datasets``), so the Tulu mixture is never
held as Python objects.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

from .chat_labels import (IGNORE, TRAINING_FIELD, EmptyRow, LabelPolicy, RowProblem, label_tokens,
                          render_with_trained_ranges, turn_spans)
from ..config.loader import DEFAULT_ROLES, TEXT_TYPES, DatasetSpec, TrainConfig
from ..utils.errors import UserError, first_line

_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _looks_like_path(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).suffix in _LOCAL_FORMATS or path.count("/") > 1


def _check_json(path: Path) -> None:
    """Point at the bad line ourselves: datasets would log a long traceback for it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"dataset {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
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
        if path.stat().st_size == 0:
            raise UserError(f"dataset {spec.path} is an empty file")
        if builder == "json":
            _check_json(path)
        if not spec.split.startswith("train"):
            raise UserError(f"dataset {spec.path}: a local file has only the train split; drop split: "
                            f"{spec.split} or slice it, e.g. train[:20%]")
        try:
            return load_dataset(builder, data_files=str(path), split=spec.split)  # slices such as train[:20%]
        except Exception as err:  # malformed JSON and friends: datasets raises many types
            raise UserError(f"dataset {spec.path} could not be read as {builder}: {first_line(err)}") from None
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = load_from_disk(str(path))
            if hasattr(loaded, "keys") and spec.split not in loaded:
                raise UserError(f"saved dataset {spec.path} has no split '{spec.split}'; "
                                f"set split: to one of {', '.join(loaded.keys())}")
            return loaded[spec.split] if hasattr(loaded, "keys") else loaded
        return load_dataset(str(path), spec.name, split=spec.split)
    if _looks_like_path(spec.path):
        raise UserError(f"dataset file not found: {spec.path}")
    try:
        return load_dataset(spec.path, spec.name, split=spec.split)
    except Exception as err:
        raise UserError(f"could not load dataset '{spec.path}' from the hub (offline? typo?): {first_line(err)}") from None


SHAREGPT_PROPERTIES = {"role": "from", "content": "value"}


@dataclass(frozen=True)
class ChatFormat:
    """How one dataset's rows spell a conversation (the column, each message's keys, the role names)."""

    column: str
    properties: dict  # our key -> the row's key
    role_of: dict  # the row's role name -> ours
    drop_system_message: bool = False  # Axolotl: a leading system turn is left out

    @classmethod
    def of(cls, spec: DatasetSpec, columns: list[str]) -> "ChatFormat":
        sharegpt = spec.type == "sharegpt"
        column = spec.field_messages or ("conversations" if sharegpt or "messages" not in columns and
                                         "conversations" in columns else "messages")
        properties = {**(SHAREGPT_PROPERTIES if sharegpt else {"role": "role", "content": "content"}),
                      **(spec.message_property_mappings or {})}
        roles = spec.roles or DEFAULT_ROLES
        return cls(column, properties, {name: ours for ours, names in roles.items() for name in names},
                   spec.drop_system_message)


def normalise_messages(raw, fmt: ChatFormat, policy: LabelPolicy) -> list[dict]:
    """A row's chat as OpenAI-style messages; raises RowProblem for what no template can render, EmptyRow for a row
    with nothing to train."""
    if raw is None or raw == []:
        raise EmptyRow("an empty chat")
    if not isinstance(raw, list):
        raise RowProblem(f"'{fmt.column}' is not a list of messages")
    renamed = {theirs: ours for ours, theirs in fmt.properties.items()}
    messages = []
    for number, message in enumerate(raw):
        if not isinstance(message, dict):
            raise RowProblem(f"message {number} is not a mapping: {message!r:.60}")
        # columns that only some rows use come back as None from Arrow: drop them, templates test `is defined`
        out = {renamed.get(k, k): v for k, v in message.items() if v is not None}
        role = fmt.role_of.get(out.get("role"))
        if role is None:
            raise RowProblem(f"message {number} has unknown role {out.get('role')!r} (known: "
                             f"{', '.join(fmt.role_of)}); map it with the dataset's 'roles:' key")
        content = out.get("content")
        if isinstance(content, (int, float)) and not isinstance(content, bool):
            out["content"] = content = str(content)  # a number is its text
        if not isinstance(content, str) and not (role == "assistant" and out.get("tool_calls")):
            raise RowProblem(f"message {number} ({role}) has no text '{fmt.properties['content']}'")
        if not isinstance(out.get(TRAINING_FIELD, False), bool):
            raise RowProblem(f"message {number}: '{TRAINING_FIELD}' must be true or false, got {out[TRAINING_FIELD]!r}")
        messages.append({**out, "role": role})
    if fmt.drop_system_message and messages[0]["role"] == "system":
        messages = messages[1:]
    if not policy.train_on_inputs and not any(m["role"] in policy.roles_to_train for m in messages):
        raise RowProblem(f"no {'/'.join(policy.roles_to_train)} turn to train on")
    if any(policy.trains(m) and not m.get("tool_calls") and not (m.get("content") or "").strip() for m in messages):
        raise EmptyRow("an empty or whitespace-only answer")
    return messages


def _text_value(row: dict, column: str | None) -> str:
    """A text field: a string, or a number as its text (``0`` stays ``0``); missing or null is ``""``. Anything else
    (a mapping, a list, true/false) would train as Python's repr of it: refused, naming the field."""
    value = row.get(column) if column else None
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RowProblem(f"'{column}' is {type(value).__name__} {json.dumps(value, default=str)[:60]}, not text; "
                     "store it as a string (e.g. JSON text) in the data")


def _alpaca_messages(row: dict, spec: DatasetSpec) -> list[dict]:
    """Instruction (+ input) -> output, after the system prompt and earlier [prompt, answer] pairs if given."""
    system = _text_value(row, spec.field_system)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for prompt, answer in (row.get(spec.field_history) or []) if spec.field_history else []:
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    instruction, extra, output = (_text_value(row, c) for c in (spec.field_instruction, spec.field_input,
                                                                 spec.field_output))
    prompt = "\n\n".join(part for part in (instruction, extra) if part.strip())  # LLaMA-Factory: prompt + query
    if not prompt:
        raise EmptyRow(f"an empty '{spec.field_instruction}' and '{spec.field_input}'")
    if not output.strip():
        raise EmptyRow(f"an empty '{spec.field_output}'")
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


@dataclass(frozen=True)
class Preparation:
    """Everything one dataset's rows need to become ``input_ids``/``labels`` (picklable for ``num_proc``)."""

    tokenizer: object
    spec: DatasetSpec
    fmt: ChatFormat | None
    policy: LabelPolicy
    max_length: int
    template: str | None
    excess_length: str = "drop"  # Axolotl's excess_length_strategy for rows whose trained tokens do not fit

    def text_and_ranges(self, row: dict) -> tuple[str, list[tuple[int, int]]]:
        """A chat or alpaca row rendered, with the character ranges that are trained."""
        if self.spec.type == "alpaca":
            return render_with_trained_ranges(self.tokenizer, _alpaca_messages(row, self.spec), self.policy,
                                              self.template)
        messages = normalise_messages(row[self.fmt.column], self.fmt, self.policy)
        tools = row.get("tools")  # OpenAI / ShareGPT tool schemas, a list or its JSON text
        tools = json.loads(tools) if isinstance(tools, str) else tools
        return render_with_trained_ranges(self.tokenizer, messages, self.policy, self.template, tools or None)

    def _documents(self, rows: list[dict], indices: list[int]) -> dict:
        """Plain text: every token trained; a document longer than sequence_len is split into chunks (Axolotl's
        completion format), all of them trained, EOS after the last."""
        out = _Rows()
        texts = []
        for index, row in zip(indices, rows):
            try:
                text = _text_value(row, self.spec.field)
            except RowProblem as err:
                out.add(index, problem=str(err))
                continue
            if text.strip():
                texts.append((index, text))
            else:
                out.add(index, problem=f"{DROPPED}an empty document")
        eos = self.tokenizer.eos_token
        encoded = self.tokenizer([text for _, text in texts])["input_ids"] if texts else []
        for (index, text), ids in zip(texts, encoded):
            ids = ids + [self.tokenizer.eos_token_id] if not text.endswith(eos) else ids  # as TRL
            for start in range(0, len(ids), self.max_length):
                out.add(index, ids[start: start + self.max_length])
        return out.columns

    def _chats(self, rows: list[dict], indices: list[int]) -> dict:
        rendered = []
        for row in rows:
            try:
                rendered.append((*self.text_and_ranges(row), ""))
            except EmptyRow as err:
                rendered.append(("", [], f"{DROPPED}{err}"))
            except RowProblem as err:
                rendered.append(("", [], str(err)))
            except Exception as err:  # a template that raises on this row (Jinja's raise_exception, bad types)
                rendered.append(("", [], f"the chat template failed on it: {first_line(err, 200)}"))
        # one call for the whole batch: the tokenizer's Rust side does the work
        tokens = self.tokenizer([text for text, _, _ in rendered], add_special_tokens=False,
                                return_offsets_mapping=True)
        out = _Rows()
        for index, ids, offsets, (_, ranges, problem) in zip(indices, tokens["input_ids"], tokens["offset_mapping"],
                                                             rendered):
            if problem:
                out.add(index, problem=problem)
                continue
            labels = label_tokens(ids, offsets, ranges)
            trained = [at for at, label in enumerate(labels) if label != IGNORE]
            if not trained:
                out.add(index, problem=f"{DROPPED}no trained token")
            elif trained[-1] < self.max_length:  # all that is trained fits (an untrained tail may be cut)
                out.add(index, ids[: self.max_length], labels[: self.max_length])
            elif self.excess_length == "raise":
                out.add(index, problem=f"is {len(ids)} tokens and trains tokens past sequence_len {self.max_length}; "
                                       "raise sequence_len, or set excess_length_strategy: drop or truncate")
            elif self.excess_length == "drop" or trained[0] >= self.max_length:
                out.add(index, problem=f"{DROPPED}trained tokens past sequence_len {self.max_length}")
            else:
                out.add(index, ids[: self.max_length], labels[: self.max_length], truncated=True)
        return out.columns

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return (self._documents if self.spec.type in TEXT_TYPES else self._chats)(rows, indices)


DROPPED = "drop:"  # a problem starting so: the row has nothing (left) to train and is dropped, counted on stderr


class _Rows:
    """The prepared rows of one batch: tokens and labels, or why the source row (``row``) is dropped or refused."""

    def __init__(self):
        self.columns = {"input_ids": [], "labels": [], "row": [], "problem": [], "truncated": []}

    def add(self, row: int, ids: list[int] = (), labels: list[int] | None = None, problem: str = "",
            truncated: bool = False) -> None:
        """Labels default to the ids (every token trained); a row with a problem has neither."""
        values = {"input_ids": list(ids), "labels": list(ids) if labels is None else labels, "row": row,
                  "problem": problem, "truncated": truncated}
        for key, value in values.items():
            self.columns[key].append(value)


def _num_proc(rows: int, requested: int | None) -> int | None:
    # process start-up outweighs the work below some thousand rows per process (upstream files ask for 16 anyway)
    wanted = requested if requested is not None else (min(os.cpu_count() or 1, 8) if rows >= 20_000 else 1)
    wanted = min(wanted, os.cpu_count() or 1, max(1, rows // 1000))
    return wanted if wanted > 1 else None


def _first_rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")


def _report(path: str, data: Dataset, total: int, max_length: int) -> Dataset:
    """Stop on a refused row; say on stderr what was dropped (by reason), truncated and split; keep the rest."""
    problems, rows = data.data.column("problem").to_pylist(), data.data.column("row").to_pylist()
    refused = next((at for at, p in enumerate(problems) if p and not p.startswith(DROPPED)), None)
    if refused is not None:
        raise UserError(f"dataset {path} row {rows[refused]} (counting from 0): {problems[refused]}")
    dropped: dict[str, list[int]] = {}
    for problem, row in zip(problems, rows):
        if problem:
            dropped.setdefault(problem.removeprefix(DROPPED), []).append(row)
    if sum(map(len, dropped.values())) == total:
        raise UserError(f"dataset {path}: no row is left to train ({'; '.join(f'{len(r)} with {why}' for why, r in dropped.items())}); "
                        "check the data, sequence_len and roles_to_train")
    for why, which in dropped.items():
        print(f"dataset {path}: dropped {len(which)} of {total} rows with {why} (rows {_first_rows(which)})",
              file=sys.stderr, flush=True)
    truncated = [row for row, cut in zip(rows, data.data.column("truncated").to_pylist()) if cut]
    if truncated:
        print(f"dataset {path}: truncated {len(truncated)} of {total} rows to sequence_len {max_length}, their "
              f"trained tokens past it not trained (rows {_first_rows(truncated)})", file=sys.stderr, flush=True)
    chunks = collections.Counter(row for row, problem in zip(rows, problems) if not problem)
    split = [row for row, count in chunks.items() if count > 1]
    if split:
        print(f"dataset {path}: split {len(split)} documents longer than sequence_len {max_length} into "
              f"{sum(chunks[row] for row in split)} rows, all trained (rows {_first_rows(sorted(split))})",
              file=sys.stderr, flush=True)
    if dropped:
        data = data.filter(lambda problem: not problem, input_columns="problem")
    return data.remove_columns(["problem", "row"])


def tokenize_dataset(raw: Dataset, spec: DatasetSpec, tokenizer, policy: LabelPolicy, max_length: int,
                     template: str | None = None, num_proc: int | None = None, excess_length: str = "drop") -> Dataset:
    """Rows -> ``input_ids`` + ``labels`` (and ``truncated``), within ``max_length``; bad rows stop it, rows with
    nothing to train are dropped and counted, long ones dropped, truncated or refused per ``excess_length``, long
    documents split."""
    required = ((spec.field,) if spec.type in TEXT_TYPES else
                (spec.field_instruction, spec.field_output) if spec.type == "alpaca" else None)
    fmt = None if required else ChatFormat.of(spec, raw.column_names)
    missing = [c for c in (required or (fmt.column,)) if c not in raw.column_names]
    if missing:
        raise UserError(
            f"dataset {spec.path} has no column '{missing[0]}' needed by type '{spec.type}' "
            f"(columns: {', '.join(raw.column_names)}); set the right 'type' (or 'field_messages') for it"
        )
    if spec.max_samples is not None:
        raw = raw.select(range(min(spec.max_samples, len(raw))))
    if len(raw) == 0:
        raise UserError(f"dataset {spec.path} is empty")
    prepare = Preparation(tokenizer, spec, fmt, policy, max_length, template, excess_length)
    data = raw.map(prepare, batched=True, batch_size=256, with_indices=True, remove_columns=raw.column_names,
                   num_proc=_num_proc(len(raw), num_proc), desc=f"Tokenizing {Path(spec.path).name}")
    return _report(spec.path, data, len(raw), max_length)


def label_policy(spec: DatasetSpec, cfg: TrainConfig) -> LabelPolicy:
    return LabelPolicy(tuple(spec.roles_to_train), spec.train_on_eos, cfg.train_on_inputs, tuple(cfg.eot_tokens or ()))


# a chat with every common role, to see whether a template renders each turn the same once later turns follow
_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
          {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]


def training_template(tokenizer) -> str | None:
    """None keeps the tokenizer's template; for one that re-renders past turns (Qwen3 drops past reasoning), TRL's
    prefix-preserving training version, where TRL has one (rows are still checked one by one)."""
    from trl.chat_template_utils import get_training_chat_template

    for probe in (_PROBE, _PROBE[1:]):  # some templates (Gemma) refuse a system turn
        try:
            turn_spans(tokenizer, probe)
            return None
        except RowProblem:  # not prefix-preserving
            break
        except Exception:
            continue
    try:
        return get_training_chat_template(tokenizer)
    except Exception:  # a template TRL does not know
        return None


def drop_duplicate_rows(data: Dataset) -> Dataset:
    """Axolotl's ``dataset_exact_deduplication``: identical prepared rows (tokens and labels) kept once."""
    seen, keep, index = set(), [], 0
    for batch in data.select_columns(["input_ids", "labels"]).iter(batch_size=1000):
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            key = (tuple(ids), labels if isinstance(labels, (int, float)) else tuple(labels))  # a class: one label
            if key not in seen:
                seen.add(key)
                keep.append(index)
            index += 1
    if len(keep) < len(data):
        print(f"note: dataset_exact_deduplication dropped {len(data) - len(keep)} duplicate rows of {len(data)}",
              file=sys.stderr)
    return data.select(keep)


def _note_repeated_datasets(specs: list[DatasetSpec]) -> None:
    """Axolotl allows a dataset listed twice (to upsample it): it is trained twice, which is said."""
    seen = collections.Counter((spec.path, spec.name, spec.split, spec.type, spec.field_messages, spec.field)
                               for spec in specs)
    for (path, *_), count in seen.items():
        if count > 1:
            print(f"note: dataset {path} is listed {count} times with the same settings: its rows are trained "
                  f"{count} times per epoch (upsampling); list it once to train it once", file=sys.stderr)


def load_training_data(cfg: TrainConfig, tokenizer, keep_marks: bool = False) -> tuple[Dataset, Dataset | None]:
    """The training (and held-out: ``test_datasets``, else ``val_set_size``) rows exactly as the trainer sees them:
    ``input_ids`` and ``labels`` (and, with ``keep_marks``, whether a row was ``truncated``: --preview-data)."""
    template = training_template(tokenizer) if tokenizer.chat_template else None
    unknown = [t for t in cfg.eot_tokens or () if t not in tokenizer.get_vocab()]
    if unknown:
        raise UserError(f"eot_tokens: {unknown[0]!r} is not a token of this tokenizer; list the tokens its chat "
                        "template ends turns with")
    if cfg.task == "sequence_classification":
        from .classification import tokenize_classification

        def tokenize(spec: DatasetSpec) -> Dataset:
            return tokenize_classification(_load_raw(spec), spec, tokenizer, cfg.num_labels, cfg.sequence_len)
    else:
        def tokenize(spec: DatasetSpec) -> Dataset:
            if spec.type not in TEXT_TYPES and not tokenizer.chat_template:
                raise UserError(f"dataset {spec.path} is a chat ('{spec.type}') but the tokenizer has no chat "
                                "template; set chat_template: chatml")
            data = tokenize_dataset(_load_raw(spec), spec, tokenizer, label_policy(spec, cfg), cfg.sequence_len,
                                    template, cfg.dataset_processes, cfg.excess_length_strategy)
            return data if keep_marks else data.remove_columns("truncated")

    def build(specs: list[DatasetSpec]) -> Dataset:
        parts = [tokenize(spec) for spec in specs]
        return concatenate_datasets(parts) if len(parts) > 1 else parts[0]

    _note_repeated_datasets(cfg.datasets)
    data = build(cfg.datasets)
    if cfg.dataset_exact_deduplication:
        data = drop_duplicate_rows(data)
    return (data, build(cfg.test_datasets)) if cfg.test_datasets else held_out_split(data, cfg)


def held_out_split(data: Dataset, cfg: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """``val_set_size`` rows (a fraction < 1, or a count) held out of ``data``, chosen by the seed."""
    val_set_size = cfg.val_set_size
    if not val_set_size:
        return data, None
    test_size = val_set_size if val_set_size < 1 else int(val_set_size)
    if test_size >= len(data) or (test_size < 1 and int(test_size * len(data)) < 1):
        raise UserError(f"val_set_size={val_set_size} leaves no training or no validation rows out of {len(data)}")
    split = data.train_test_split(test_size=test_size, seed=cfg.seed)
    return split["train"], split["test"]
