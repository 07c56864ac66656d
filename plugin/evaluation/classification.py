"""The metrics GLUE papers report for a sequence classifier (accuracy, F1, Matthews correlation; Pearson for
regression), and each held-out row's outcome for paired comparisons."""

from __future__ import annotations

import numpy as np


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
