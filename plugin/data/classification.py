"""``task: sequence_classification``: GLUE-style rows -> tokenised inputs with labels (``data.loader`` picks the
held-out rows as for causal LMs; the metrics are ``evaluation.classification``).

Rows carry GLUE's own columns: ``sentence1`` + ``sentence2`` (pairs: MRPC, RTE, ...) or ``sentence`` / ``text``
(single sentences: SST-2, CoLA, ...), and ``label`` (an integer class, or a float score when ``num_labels: 1``).
"""

from __future__ import annotations

from datasets import Dataset

from ..config import DatasetSpec
from ..utils.errors import UserError

PAIR_COLUMNS = ("sentence1", "sentence2")
SINGLE_COLUMNS = ("sentence", "text")


def _text_columns(columns: list[str], path: str) -> tuple[str, ...]:
    if all(c in columns for c in PAIR_COLUMNS):
        return PAIR_COLUMNS
    single = next((c for c in SINGLE_COLUMNS if c in columns), None)
    if single is None or "label" not in columns:
        raise UserError(f"dataset {path} has columns {', '.join(columns)}; task: sequence_classification reads "
                        "sentence1 + sentence2 (pairs) or sentence / text, and label")
    return (single,)


def tokenize_classification(raw: Dataset, spec: DatasetSpec, tokenizer, num_labels: int, max_length: int) -> Dataset:
    """input_ids (+ attention_mask, token_type_ids) truncated to ``max_length``, and ``labels``; padding is per
    batch (the collator), so sequences stay as short as the data."""
    columns = _text_columns(raw.column_names, spec.path)
    if spec.max_samples is not None:
        raw = raw.select(range(min(spec.max_samples, len(raw))))
    if num_labels > 1:
        bad = [v for v in raw["label"] if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < num_labels]
        if bad:
            raise UserError(f"dataset {spec.path}: label {bad[0]!r} is not a class in 0..{num_labels - 1}; set "
                            "num_labels to the number of classes (1 for a regression score)")

    def encode(batch):
        out = tokenizer(*(batch[c] for c in columns), truncation=True, max_length=max_length)
        out["labels"] = [float(v) for v in batch["label"]] if num_labels == 1 else batch["label"]
        return out

    return raw.map(encode, batched=True, remove_columns=raw.column_names, desc=f"Tokenizing {spec.path}")
