"""task: sequence_classification: GLUE rows on a tiny BERT for each adapter (head trained, saved, reloaded in a fresh
process), the papers' metrics against hand computations, the embedded encoder, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from plugin.evaluation.classification import classification_metrics
from plugin.config import load_config
from plugin.utils.errors import UserError
from plugin.training.run import train

from ..helpers import REPO, adapter_weights, make_tiny_bert_dir

RTE = REPO / "data" / "glue" / "rte"
TARGETS = {"lora": ["query", "value"], "mplora": ["query", "value"], "mor": ["intermediate.dense", "output.dense"],
           "loratrf": ["value", "intermediate.dense", "output.dense"]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert_dir(tmp_path_factory.mktemp("tiny_bert"))


def _cfg(tiny_bert, tmp_path, **keys):
    return load_config(None, {
        "task": "sequence_classification", "num_labels": 2, "base_model": str(tiny_bert), "lora_r": 4,
        "datasets": [{"path": str(RTE / "train.jsonl"), "max_samples": 16}],
        "test_datasets": [{"path": str(RTE / "test.jsonl"), "max_samples": 12}],
        "sequence_len": 64, "micro_batch_size": 4, "max_steps": 3, "learning_rate": 0.01, "logging_steps": 1,
        "save_steps": 100, "output_dir": str(tmp_path / "out"), **keys})


RELOAD = """
import json, sys, torch, plugin
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
batch = AutoTokenizer.from_pretrained(sys.argv[1])(["A man sleeps.", "Dogs bark at night."], ["He is awake.", "Dogs bark."],
                                                   padding=True, return_tensors="pt")
for seed in (1, 2):
    torch.manual_seed(seed)  # a head not read from the file would differ between seeds
    base = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=2)
    model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
    with torch.no_grad():
        print(json.dumps(model(**batch).logits.tolist()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("adapter", list(TARGETS))
def test_each_adapter_trains_a_classifier_saved_with_its_head(tiny_bert, tmp_path, adapter):
    extra = {"mplora_num_paths": 2, "mplora_orth_weight": 1.0} if adapter == "mplora" else {}
    out = train(_cfg(tiny_bert, tmp_path, adapter=adapter, lora_target_modules=TARGETS[adapter], **extra))
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert {"eval_accuracy", "eval_f1", "eval_matthews_correlation"} <= metrics.keys()
    assert 0 <= metrics["eval_accuracy"] <= 1
    saved = adapter_weights(out)
    assert any("classifier" in k for k in saved), sorted(saved)  # the new head is trained and saved
    reloaded = subprocess.run([sys.executable, "-c", RELOAD, str(tiny_bert), str(out)], capture_output=True,
                              text=True, timeout=300, check=True).stdout.strip().splitlines()
    logits = [json.loads(line) for line in reloaded[-2:]]
    assert len(reloaded) >= 2 and logits[0] == logits[1]


def test_full_fine_tuning_ceiling_and_per_item_outcomes(tiny_bert, tmp_path):
    """adapter: full trains every weight (the study's ceiling); eval_items.json holds each held-out row's outcome,
    in order, and agrees with the accuracy."""
    from transformers import AutoModelForSequenceClassification

    out = train(_cfg(tiny_bert, tmp_path, adapter="full", lora_target_modules=None))
    metrics = json.loads((out / "eval_metrics.json").read_text())
    correct = json.loads((out / "eval_items.json").read_text())["correct"]
    assert len(correct) == 12 and metrics["eval_accuracy"] == pytest.approx(sum(correct) / 12)
    trained = AutoModelForSequenceClassification.from_pretrained(out)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert not torch.equal(trained.bert.encoder.layer[0].attention.self.query.weight,
                           base.bert.encoder.layer[0].attention.self.query.weight)
    with pytest.raises(UserError, match="adapter: full .* runs with task: sequence_classification only"):
        _cfg(tiny_bert, tmp_path, adapter="full", task="causal_lm", num_labels=None)


def _hand_mcc(labels, predictions):
    """Matthews correlation as the correlation of the one-hot label and prediction matrices (Gorodkin)."""
    classes = sorted(set(labels) | set(predictions))
    x = np.array([[float(v == c) for c in classes] for v in labels])
    y = np.array([[float(v == c) for c in classes] for v in predictions])
    x, y = x - x.mean(0), y - y.mean(0)
    return (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())


def test_metrics_match_hand_computations():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    predictions = np.array([1, 0, 0, 1, 1, 0, 1, 0])  # tp 3, tn 3, fp 1, fn 1
    logits = np.stack([1 - predictions, predictions], axis=1).astype(float)
    got = classification_metrics(2)(EvalPrediction(predictions=logits, label_ids=labels))
    assert got["accuracy"] == pytest.approx(6 / 8)
    assert got["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert got["matthews_correlation"] == pytest.approx((3 * 3 - 1 * 1) / np.sqrt(4 * 4 * 4 * 4))
    three = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0])
    guess = np.array([0, 2, 2, 2, 1, 1, 0, 1, 0])
    got = classification_metrics(3)(EvalPrediction(predictions=np.eye(3)[guess], label_ids=three))
    assert got["matthews_correlation"] == pytest.approx(_hand_mcc(three.tolist(), guess.tolist()))
    assert "f1" not in got and got["accuracy"] == pytest.approx(6 / 9)
    scores, truth = np.array([[0.1], [0.4], [0.35], [0.8]]), np.array([0.0, 0.5, 0.2, 1.0])
    a, b = scores.ravel() - scores.mean(), truth - truth.mean()
    got = classification_metrics(1)(EvalPrediction(predictions=scores, label_ids=truth))
    assert got["pearson"] == pytest.approx((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_embedded_encoder_is_minilm():
    """all-MiniLM-L6-v2 from its PyPI package: BERT, 6 layers, hidden 384, about 22.7M parameters (SPEC.md 7)."""
    from transformers import AutoModelForSequenceClassification

    from plugin.config.schema import EMBEDDED_ENCODER
    from plugin.models.loader import resolve_model_path

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(EMBEDDED_ENCODER), num_labels=2)
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert sum(p.numel() for n, p in model.named_parameters() if "classifier" not in n) == pytest.approx(22.7e6, rel=0.01)


def test_the_encoder_is_the_default_base(tmp_path):
    cfg = load_config(None, {"task": "sequence_classification", "num_labels": 2,
                             "datasets": [{"path": str(RTE / "train.jsonl")}]})
    assert cfg.base_model == "embedded:all-minilm-l6-v2"


@pytest.mark.parametrize("keys,message", [
    ({"num_labels": None}, "task: sequence_classification needs num_labels >= 1"),
    ({"task": "causal_lm"}, "num_labels is for task: sequence_classification"),
    ({"sample_packing": True}, "sample_packing does not go with task: sequence_classification"),
    ({"val_set_size": 0.2}, "test_datasets and val_set_size both choose the held-out rows"),
])
def test_config_errors(tiny_bert, tmp_path, keys, message):
    with pytest.raises(UserError, match=message):
        _cfg(tiny_bert, tmp_path, **keys)


def test_data_errors(tiny_bert, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(UserError, match="reads sentence1 \\+ sentence2 \\(pairs\\) or sentence / text, and label"):
        train(_cfg(tiny_bert, tmp_path, datasets=[{"path": str(chat)}]))
    three = tmp_path / "three_labels.jsonl"
    three.write_text('{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 2}\n')
    with pytest.raises(UserError, match="label 2 is not a class in 0..1; set num_labels"):
        train(_cfg(tiny_bert, tmp_path, datasets=[{"path": str(three)}]))
    # the held-out split and its check are the causal LM path's own
    with pytest.raises(UserError, match="val_set_size=40.0 leaves no training or no validation rows out of 16"):
        train(_cfg(tiny_bert, tmp_path, test_datasets=[], val_set_size=40))


def test_loratrf_task_vectors_from_the_first_rows(tiny_bert, tmp_path, capsys):
    out = train(_cfg(tiny_bert, tmp_path, adapter="loratrf", loratrf_mode="input", max_steps=1,
                     lora_target_modules=TARGETS["loratrf"], loratrf_task_vector_init="input_mean"))
    # 2 layers x value, intermediate.dense, output.dense and attention.output.dense (PEFT matches name suffixes)
    assert "LoRATRF: 8 task vectors set to the mean gate input of the first 4 rows" in capsys.readouterr().out
    assert json.loads((out / "adapter_config.json").read_text())["trf_task_vector_init"] == "input_mean"


def test_preview_shows_each_row_with_its_label(tiny_bert, tmp_path, capsys):
    from plugin.data.preview import preview_data

    preview_data(_cfg(tiny_bert, tmp_path), 2, as_json=True)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = json.loads((RTE / "train.jsonl").read_text().splitlines()[0])
    assert [r["row"] for r in rows] == [0, 1] and rows[0]["label"] == first["label"]
    preview_data(_cfg(tiny_bert, tmp_path), 1)
    text = capsys.readouterr().out
    assert "label" in text and first["sentence2"].split()[0].lower() in text
