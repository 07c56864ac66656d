"""Preference data for the rl: stages -> the rows TRL's trainers read, tokenised by the trainers themselves.

Every format becomes one of TRL's: ``prompt`` / ``chosen`` / ``rejected`` (DPO, IPO, ORPO, SimPO), ``prompt`` /
``completion`` / ``label`` (KTO) or ``prompt`` (GRPO, other columns kept for the reward functions). Text stays text
(TRL's standard format: prompt + answer + EOS); a chat, a message or any Axolotl chat type becomes TRL's
conversational format, which TRL renders with the tokenizer's chat template. Rows that would train nothing or the
wrong thing (an empty answer, chosen equal to rejected) are dropped and counted on stderr, like the SFT data layer's.
"""

from __future__ import annotations

import functools
import inspect
import sys

from datasets import Dataset, concatenate_datasets

from ..config.loader import is_transform
from ..config.schema import RL_TYPES, DatasetSpec, TrainConfig
from ..models.loader import tokenizer_for
from ..utils.errors import UserError, first_line
from ..utils.imports import import_object
from .chat_labels import RowProblem
from .loader import ChatFormat, _first_rows, _load_raw, held_out_split

# the columns each format reads (Axolotl's prompt_strategies/dpo and kto): prompt, answers, system; an answer column
# that is also the prompt column holds the whole chat (argilla_chat: the prompt is the chat before the answer)
PAIR_COLUMNS = {
    "preference": ("prompt", "chosen", "rejected", None),
    "intel": ("question", "chosen", "rejected", "system"),
    "icr": ("input", "chosen", "rejected", None),
    "prompt_pairs": ("prompt", "chosen", "rejected", None),
    "ultra": ("prompt", "chosen", "rejected", None),
    "argilla_chat": ("chosen", "chosen", "rejected", None),
    "default": ("messages", "chosen", "rejected", None),  # chat_template.default: field_messages is the prompt
    "chat_template.argilla": ("chosen", "chosen", "rejected", None),  # Axolotl's ORPO type: argilla_chat's columns
}
KTO_COLUMNS = {"kto": "prompt", "intel": "question", "argilla": "instruction", "prompt_pairs": "prompt",
               "ultra": "prompt", "argilla_chat": "completion"}
STAGE_TYPES = {"pairs": [t for t in RL_TYPES if t in PAIR_COLUMNS or t.split(".")[-1] in PAIR_COLUMNS],
               "kto": [t for t in RL_TYPES if t.split(".")[-1] in KTO_COLUMNS], "prompt": ["prompt"]}
# what each stage reads when a dataset's type is left at its default
STAGE_FORMAT = {"dpo": "pairs", "ipo": "pairs", "orpo": "pairs", "simpo": "pairs", "rm": "pairs", "kto": "kto",
                "grpo": "prompt"}
DEFAULT_TYPE = {"pairs": "preference", "kto": "kto", "prompt": "prompt"}


def stage_type(spec: DatasetSpec, rl: str) -> str:
    """The row format of one dataset under stage ``rl``; an SFT format (or another stage's) is refused here. A
    transform's rows are in the stage's TRL format."""
    stage = STAGE_FORMAT[rl]
    kind = DEFAULT_TYPE[stage] if spec.type == "messages" or is_transform(spec.type) else spec.type
    if kind not in STAGE_TYPES[stage]:
        raise UserError(f"dataset {spec.path}: type: {spec.type} is not a format rl: {rl} reads; use one of "
                        f"{', '.join(STAGE_TYPES[stage])} (docs/preference.md)")
    return kind


class _Rows:
    """One dataset's rows in TRL's format, with the dropped ones counted by reason."""

    def __init__(self, spec: DatasetSpec, columns: list[str]):
        self.spec = spec
        self.fmt = ChatFormat.of(spec, columns)
        self.dropped: dict[str, list[int]] = {}

    def drop(self, index: int, why: str) -> None:
        self.dropped.setdefault(why, []).append(index)

    def messages(self, value, default_role: str) -> list[dict] | str:
        """A text stays text; a message or a chat becomes OpenAI messages in our role names."""
        if isinstance(value, str):
            return value
        chat = [value] if isinstance(value, dict) else value
        if not isinstance(chat, list) or not all(isinstance(m, dict) for m in chat):
            raise RowProblem(f"not text, a message or a list of messages: {value!r:.60}")
        renamed = {theirs: ours for ours, theirs in self.fmt.properties.items()}
        out = []
        for message in chat:
            message = {renamed.get(k, k): v for k, v in message.items() if v is not None}
            role = self.fmt.role_of.get(message.get("role"), None if "role" in message else default_role)
            if role is None:
                raise RowProblem(f"unknown role {message.get('role')!r} (known: {', '.join(self.fmt.role_of)}); map "
                                 "it with the dataset's 'roles:' key")
            out.append({"role": role, "content": str(message.get("content") or "")})
        return out


def _as_chat(value, role: str) -> list[dict]:
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def _answer(value) -> list[dict] | str:
    """An answer: text, or the assistant turns that end a chat (chatml.ultra's answers repeat the prompt)."""
    if isinstance(value, str):
        return value
    tail = []
    for message in reversed(value):
        if message["role"] != "assistant":
            break
        tail.insert(0, message)
    return tail


def _empty(answer) -> bool:
    return not (answer.strip() if isinstance(answer, str) else any(m["content"].strip() for m in answer))


def _require_columns(raw: Dataset, spec: DatasetSpec, kind: str, needed: list[str], fields: str) -> None:
    missing = [c for c in needed if c not in raw.column_names]
    if missing:
        raise UserError(f"dataset {spec.path} has no column '{missing[0]}' (columns: {', '.join(raw.column_names)}); "
                        f"type: {kind} reads {', '.join(dict.fromkeys(needed))} (set {fields} to name others)")


def _pairs(raw: Dataset, spec: DatasetSpec, kind: str) -> tuple[list[dict], _Rows]:
    prompt_col, chosen_col, rejected_col, system_col = PAIR_COLUMNS.get(kind) or PAIR_COLUMNS[kind.split(".")[-1]]
    prompt_col = spec.field_prompt or (spec.field_messages if kind == "chat_template.default" else None) or prompt_col
    chosen_col, rejected_col = spec.field_chosen or chosen_col, spec.field_rejected or rejected_col
    system_col = spec.field_system or system_col
    _require_columns(raw, spec, kind, [prompt_col, chosen_col, rejected_col], "field_prompt / field_chosen / "
                     "field_rejected")
    rows, kept = _Rows(spec, raw.column_names), []
    chat_type = kind != "preference"  # Axolotl's types always render through the chat template
    for index, row in enumerate(raw):
        try:
            prompt = rows.messages(row[prompt_col], "user")
            if spec.field_input and row.get(spec.field_input) and isinstance(prompt, str):  # alpaca ranking rows
                prompt = f"{prompt}\n{row[spec.field_input]}"
            chosen = _answer(rows.messages(row[chosen_col], "assistant"))
            rejected = _answer(rows.messages(row[rejected_col], "assistant"))
        except (RowProblem, TypeError) as err:
            raise UserError(f"dataset {spec.path} row {index}: {err}") from None
        if prompt_col == chosen_col and isinstance(prompt, list):  # the chat before its answer
            prompt = prompt[:len(prompt) - len(chosen)]
        if _empty(chosen) or _empty(rejected):
            rows.drop(index, "an empty chosen or rejected answer")
            continue
        if chosen == rejected:
            rows.drop(index, "the chosen answer equal to the rejected one")
            continue
        if chat_type or not all(isinstance(v, str) for v in (prompt, chosen, rejected)):
            prompt, chosen, rejected = (_as_chat(prompt, "user"), _as_chat(chosen, "assistant"),
                                        _as_chat(rejected, "assistant"))
            if system_col and row.get(system_col):
                prompt = [{"role": "system", "content": row[system_col]}, *prompt]
            if spec.drop_system_message and prompt and prompt[0]["role"] == "system":
                prompt = prompt[1:]
        kept.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return kept, rows


def _kto(raw: Dataset, spec: DatasetSpec, kind: str) -> tuple[list[dict], _Rows]:
    prompt_col = spec.field_prompt or (spec.field_messages if spec.field_messages else KTO_COLUMNS[kind.split(".")[-1]])
    answer_col = spec.field_completion
    _require_columns(raw, spec, kind, [prompt_col, spec.field_label], "field_prompt / field_completion / "
                     "field_label")
    rows, kept = _Rows(spec, raw.column_names), []
    for index, row in enumerate(raw):
        try:
            prompt = rows.messages(row[prompt_col], "user")
            if answer_col in row and answer_col != prompt_col:
                completion = _answer(rows.messages(row[answer_col], "assistant"))
            elif isinstance(prompt, list):  # a chat whose last assistant turns are the answer (LLaMA-Factory)
                completion = _answer(prompt)
                prompt = prompt[:len(prompt) - len(completion)]
            else:
                raise RowProblem(f"no '{answer_col}' column and the prompt is not a chat ending in an answer")
        except (RowProblem, TypeError) as err:
            raise UserError(f"dataset {spec.path} row {index}: {err}") from None
        label = row[spec.field_label]
        if not isinstance(label, bool):
            raise UserError(f"dataset {spec.path} row {index}: {spec.field_label} must be true or false, got "
                            f"{label!r}")
        if _empty(completion) or not prompt:
            rows.drop(index, "an empty prompt or answer")
            continue
        if isinstance(prompt, list) or isinstance(completion, list):
            prompt, completion = _as_chat(prompt, "user"), _as_chat(completion, "assistant")
        kept.append({"prompt": prompt, "completion": completion, "label": label})
    return kept, rows


def _prompts(raw: Dataset, spec: DatasetSpec) -> tuple[list[dict], _Rows]:
    column = spec.field_prompt or "prompt"
    _require_columns(raw, spec, "prompt", [column], "field_prompt")
    rows, kept = _Rows(spec, raw.column_names), []
    for index, row in enumerate(raw):
        try:
            prompt = rows.messages(row[column], "user")
        except (RowProblem, TypeError) as err:
            raise UserError(f"dataset {spec.path} row {index}: {err}") from None
        if _empty(prompt):
            rows.drop(index, "an empty prompt")
            continue
        kept.append({**{k: v for k, v in row.items() if k != column}, "prompt": prompt})
    return kept, rows


def _report(spec: DatasetSpec, rows: _Rows, total: int, kept: int) -> None:
    if not kept:
        reasons = "; ".join(f"{len(r)} with {why}" for why, r in rows.dropped.items()) or "it is empty"
        raise UserError(f"dataset {spec.path}: no row is left to train ({reasons})")
    for why, which in rows.dropped.items():
        print(f"dataset {spec.path}: dropped {len(which)} of {total} rows with {why} (rows {_first_rows(which)})",
              file=sys.stderr, flush=True)


def _transformed(raw: Dataset, spec: DatasetSpec, cfg: TrainConfig, index: int, tokenizer) -> Dataset:
    """Axolotl's own transform of an rl: dataset, called as Axolotl calls it: ``module.function(cfg, dataset_idx=i)``
    gives a row function (taking ``tokenizer=`` if it names one), or it and ``Dataset.map``'s arguments, where
    ``remove_columns`` leaves out columns the data lacks and ``"__all__"`` means every original column."""
    made = import_object(spec.type, f"datasets[{index}].type")(cfg, dataset_idx=index)
    row_function, map_kwargs = made if isinstance(made, tuple) else (made, {})
    if not callable(row_function):
        raise UserError(f"dataset {spec.path}: {spec.type} returned {type(row_function).__name__}, not a function of a "
                        "row (Axolotl's transforms return one, or it and Dataset.map's arguments)")
    map_kwargs = dict(map_kwargs)
    drop = map_kwargs.get("remove_columns")
    if drop is not None:
        map_kwargs["remove_columns"] = raw.column_names if drop == "__all__" else \
            [c for c in ([drop] if isinstance(drop, str) else drop) if c in raw.column_names]
    if "tokenizer" in inspect.signature(row_function).parameters:
        row_function = functools.partial(row_function, tokenizer=tokenizer or tokenizer_for(cfg))
    try:
        return raw.map(row_function, **map_kwargs, desc=spec.type)
    except Exception as err:  # the user's function on these rows (a column it expects and the data lacks, ...)
        raise UserError(f"dataset {spec.path}: {spec.type} failed on its rows: {type(err).__name__}: "
                        f"{first_line(err)}") from None


def preference_dataset(spec: DatasetSpec, cfg: TrainConfig, index: int = 0, tokenizer=None) -> Dataset:
    """One dataset entry (the ``index``-th of its list) as TRL's rows for ``cfg``'s stage."""
    rl = cfg.rl
    kind = stage_type(spec, rl)
    raw = _load_raw(spec)
    if spec.max_samples is not None:
        raw = raw.select(range(min(spec.max_samples, len(raw))))
    if is_transform(spec.type):
        raw = _transformed(raw, spec, cfg, index, tokenizer)
    stage = STAGE_FORMAT[rl]
    kept, rows = _kto(raw, spec, kind) if stage == "kto" else _prompts(raw, spec) if stage == "prompt" else \
        _pairs(raw, spec, kind)
    _report(spec, rows, len(raw), len(kept))
    return Dataset.from_list(kept)


def load_preference_data(cfg: TrainConfig, tokenizer=None) -> tuple[Dataset, Dataset | None]:
    """The training (and held-out) rows of an rl: run, in TRL's format; the trainer tokenises them (``tokenizer``:
    for a transform that asks for it; loaded if needed and not given)."""
    def build(specs: list[DatasetSpec]) -> Dataset:
        parts = [preference_dataset(spec, cfg, index, tokenizer) for index, spec in enumerate(specs)]
        return concatenate_datasets(parts) if len(parts) > 1 else parts[0]

    data = build(cfg.datasets)
    return (data, build(cfg.test_datasets)) if cfg.test_datasets else held_out_split(data, cfg)


def _ids(tokenizer, text_or_chat, generation_prompt: bool = False) -> list[int]:
    if isinstance(text_or_chat, str):
        return tokenizer(text_or_chat, add_special_tokens=False)["input_ids"]
    return tokenizer.apply_chat_template(text_or_chat, add_generation_prompt=generation_prompt, tokenize=True,
                                         return_dict=True)["input_ids"]


def trained_sequences(row: dict, tokenizer) -> list[tuple[str, list[int], list[int]]]:
    """(name, input_ids, labels) of each sequence a preference row trains, by TRL's rule: the answer is what
    follows the common prefix of the rendered prompt and prompt + answer (text answers end in EOS). A GRPO row is
    its prompt alone: its completions are sampled."""
    from .chat_labels import IGNORE

    prompt = row["prompt"]
    prompt_ids = _ids(tokenizer, prompt, generation_prompt=True)
    answers = [(k, row[k]) for k in ("chosen", "rejected", "completion") if k in row]
    if not answers:
        return [("prompt", prompt_ids, [IGNORE] * len(prompt_ids))]
    out = []
    for name, answer in answers:
        if isinstance(answer, str):
            eos = tokenizer.eos_token or ""
            full = _ids(tokenizer, prompt + answer + ("" if answer.endswith(eos) else eos))
        else:
            full = _ids(tokenizer, prompt + answer)
        common = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
        if name == "completion":
            name = f"completion ({'good' if row['label'] else 'bad'})"
        out.append((name, full, [IGNORE] * common + full[common:]))
    return out
