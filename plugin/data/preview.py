"""``python -m plugin.train CONFIG --preview-data N``: the first training rows exactly as the trainer gets them."""

from __future__ import annotations

import json
import sys

from .chat_labels import IGNORE
from ..config.loader import TrainConfig
from ..utils.errors import UserError

_GREEN, _RESET = "\033[32m", "\033[0m"


def marked_text(tokenizer, input_ids: list[int], labels: list[int], color: bool) -> str:
    """The row's text with trained stretches in green (terminal) or between [[ and ]] (pipe, file)."""
    start, end = (_GREEN, _RESET) if color else ("[[", "]]")
    pieces, run, trained = [], [], None
    for token, label in [*zip(input_ids, labels), (None, None)]:
        is_trained = label is not None and label != IGNORE
        if run and (token is None or is_trained != trained):
            text = tokenizer.decode(run)
            pieces.append(f"{start}{text}{end}" if trained else text)
            run = []
        run.append(token)
        trained = is_trained
    return "".join(pieces)


def preview_data(cfg: TrainConfig, rows: int, as_json: bool = False, out=None) -> None:
    from .loader import load_training_data
    from ..models.loader import tokenizer_for

    if rows <= 0:
        raise UserError(f"--preview-data needs a number of rows > 0, got {rows}")
    out = out or sys.stdout
    tokenizer = tokenizer_for(cfg)
    color = not as_json and out.isatty()
    if cfg.rl:
        return _preview_preference(cfg, tokenizer, rows, as_json, color, out)
    train_data, _ = load_training_data(cfg, tokenizer, keep_marks=True)
    if not as_json and cfg.task == "sequence_classification":
        print(f"{len(train_data)} training rows, each with its label\n", file=out)
    elif not as_json:
        print(f"{len(train_data)} training rows; trained tokens are shown "
              f"{_GREEN + 'in green' + _RESET if color else '[[between double brackets]]'}\n", file=out)
    for index, row in enumerate(train_data.select(range(min(rows, len(train_data))))):
        ids, labels = row["input_ids"], row["labels"]
        if cfg.task == "sequence_classification":  # one label for the whole row
            print(json.dumps({"row": index, "input_ids": ids, "label": labels}) if as_json else
                  f"--- row {index}: {len(ids)} tokens, label {labels} ---\n{tokenizer.decode(ids)}", file=out)
            continue
        truncated = row.get("truncated", False)
        if as_json:
            print(json.dumps({"row": index, "input_ids": ids, "labels": labels, "truncated": truncated}), file=out)
            continue
        trained = sum(label != IGNORE for label in labels)
        cut = f", truncated to sequence_len {cfg.sequence_len}" if truncated else ""
        print(f"--- row {index}: {len(ids)} tokens, {trained} trained{cut} ---", file=out)
        print(marked_text(tokenizer, ids, labels, color), file=out)


def _preview_preference(cfg: TrainConfig, tokenizer, rows: int, as_json: bool, color: bool, out) -> None:
    """Each preference row's sequences (chosen and rejected, KTO's completion, GRPO's prompt) as TRL tokenises them,
    the answer's tokens trained (scored against the reference) and the prompt's not."""
    from .preference import load_preference_data, trained_sequences

    train_data, _ = load_preference_data(cfg, tokenizer)
    if not as_json:
        print(f"{len(train_data)} training rows (rl: {cfg.rl}); the answers' tokens, which the loss scores, are shown "
              f"{_GREEN + 'in green' + _RESET if color else '[[between double brackets]]'}\n", file=out)
    for index, row in enumerate(train_data.select(range(min(rows, len(train_data))))):
        for name, ids, labels in trained_sequences(row, tokenizer):
            if as_json:
                print(json.dumps({"row": index, "sequence": name, "input_ids": ids, "labels": labels}), file=out)
                continue
            cut = f", longer than sequence_len {cfg.sequence_len}: TRL truncates it" if len(ids) > cfg.sequence_len else ""
            print(f"--- row {index} {name}: {len(ids)} tokens, {sum(label != IGNORE for label in labels)} "
                  f"scored{cut} ---", file=out)
            print(marked_text(tokenizer, ids, labels, color), file=out)
