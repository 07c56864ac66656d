"""``task: sequence_classification``: GLUE-style rows -> tokenised inputs with labels (plugin.data picks the held-out
rows as for causal LMs), and the metrics the papers report (accuracy, F1, Matthews correlation; Pearson for
regression).

Rows carry GLUE's own columns: ``sentence1`` + ``sentence2`` (pairs: MRPC, RTE, ...) or ``sentence`` / ``text``
(single sentences: SST-2, CoLA, ...), and ``label`` (an integer class, or a float score when ``num_labels: 1``).
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from .config import DatasetSpec
from .errors import UserError

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


def matthews_correlation(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K; binary: the usual MCC); 0 when undefined."""
    classes = np.union1d(labels, predictions)
    confusion = np.array([[np.sum((labels == t) & (predictions == p)) for p in classes] for t in classes], float)
    total, correct = confusion.sum(), np.trace(confusion)
    true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
    numerator = correct * total - predicted_counts @ true_counts
    denominator = np.sqrt((total**2 - predicted_counts @ predicted_counts) * (total**2 - true_counts @ true_counts))
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(num_labels: int):
    """A Trainer ``compute_metrics``: accuracy, Matthews correlation and (two classes) F1 of class 1, as GLUE reports
    them; Pearson correlation for a regression head (num_labels 1)."""

    def compute(eval_prediction) -> dict[str, float]:
        logits, labels = eval_prediction.predictions, eval_prediction.label_ids
        if num_labels == 1:
            return {"pearson": float(np.corrcoef(np.ravel(logits), labels)[0, 1])}
        predictions = np.argmax(logits, axis=-1)
        metrics = {"accuracy": float(np.mean(predictions == labels)),
                   "matthews_correlation": matthews_correlation(labels, predictions)}
        if num_labels == 2:
            tp = np.sum((predictions == 1) & (labels == 1))
            predicted, actual = np.sum(predictions == 1), np.sum(labels == 1)
            metrics["f1"] = float(2 * tp / (predicted + actual)) if predicted + actual else 0.0
        return metrics

    return compute


def per_item_outcomes(prediction, num_labels: int) -> dict:
    """Each held-out row's outcome, in order (for paired differences between runs): correct or not, or the
    predicted score for a regression head. ``prediction`` is what ``Trainer.predict`` returns."""
    if num_labels == 1:
        return {"prediction": np.ravel(prediction.predictions).tolist(), "label": prediction.label_ids.tolist()}
    return {"correct": (np.argmax(prediction.predictions, -1) == prediction.label_ids).astype(int).tolist()}
