"""Nothing silent in the data (issue: every row trains what the user meant, or the run says why). Each class of
mistake on a minimal row, read back as the trainer gets it: input_ids and labels through the tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from plugin.config import load_config
from plugin.config import chat_templates
from plugin.data.chat_labels import IGNORE, LabelPolicy, tokenize_conversation
from plugin.data.loader import load_training_data
from plugin.utils.errors import UserError


MARKERS = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>"]


@pytest.fixture(scope="module")
def smol():
    from plugin.models.embedded import embedded_model_path

    tok = AutoTokenizer.from_pretrained(embedded_model_path())
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    return tok


def trained_text(tok, ids, labels) -> str:
    return tok.decode([t for t, label in zip(ids, labels) if label != IGNORE])


@pytest.mark.parametrize("template,eot", [(None, "<|im_end|>"), ("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_end_of_turn_text_inside_an_answer_does_not_cut_it(smol, template, eot):
    answer = "Price: <s>10</s> now 8 euros; the token <|im_end|> and <|eot_id|> close turns."
    chat = [{"role": "user", "content": "Price?"}, {"role": "assistant", "content": answer}]
    ids, labels = tokenize_conversation(smol, chat, LabelPolicy(), template=chat_templates.resolve(template))
    assert trained_text(smol, ids, labels) == answer + eot  # the whole answer, then the template's own end of turn


def prepared(tmp_path, model_dir, rows, spec: dict | None = None, **keys):
    """The rows as the trainer gets them (truncation marks kept), via a YAML like a user's."""
    from plugin.models.loader import tokenizer_for

    data_file = tmp_path / "rows.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = load_config(None, {"base_model": str(model_dir), "datasets": [{"path": str(data_file), **(spec or {})}],
                             "output_dir": str(tmp_path / "out"), **keys})
    tokenizer = tokenizer_for(cfg)
    data, _ = load_training_data(cfg, tokenizer, keep_marks=True)
    return data, tokenizer


def chat(answer: str, question: str = "Hi") -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


LONG = " ".join(f"word{i}" for i in range(120))


@pytest.mark.parametrize("strategy", [None, "drop", "truncate", "raise"])
def test_rows_longer_than_sequence_len_follow_excess_length_strategy(tiny_model_dir, tmp_path, capfd, strategy):
    rows = [chat("Short answer."), chat(LONG)]
    keys = {"sequence_len": 64, **({"excess_length_strategy": strategy} if strategy else {})}
    if strategy == "raise":
        with pytest.raises(UserError, match="row 1 \\(counting from 0\\): is \\d+ tokens and trains tokens past "
                                            "sequence_len 64; raise sequence_len"):
            prepared(tmp_path, tiny_model_dir, rows, **keys)
        return
    data, tok = prepared(tmp_path, tiny_model_dir, rows, **keys)
    err = capfd.readouterr().err
    if strategy == "truncate":
        assert len(data) == 2 and data[1]["truncated"] and len(data[1]["input_ids"]) == 64
        assert "truncated 1 of 2 rows to sequence_len 64" in err and "(rows 1)" in err
    else:  # Axolotl's default: drop
        assert len(data) == 1 and tok.decode(data[0]["input_ids"]).count("Short answer.") == 1
        assert "dropped 1 of 2 rows with trained tokens past sequence_len 64 (rows 1)" in err


def test_a_long_document_is_split_into_trained_chunks(tiny_model_dir, tmp_path, capfd):
    data, tok = prepared(tmp_path, tiny_model_dir, [{"text": LONG}, {"text": "A short one."}], {"type": "text"},
                         sequence_len=64)
    whole = tok(LONG)["input_ids"] + [tok.eos_token_id]
    chunks = [row["input_ids"] for row in data][:-1]
    assert [len(c) for c in chunks] == [64] * (len(whole) // 64) + ([len(whole) % 64] if len(whole) % 64 else [])
    assert sum(chunks, []) == whole and all(row["labels"] == row["input_ids"] for row in data)  # all of it trained
    assert "split 1 documents longer than sequence_len 64 into" in capfd.readouterr().err


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  - path: a.jsonl\n    type: messages\n    type: alpaca\nlearning_rate: 1e-4\n")
    with pytest.raises(UserError, match="key 'type' is written twice in one mapping \\(lines 3 and 4\\)"):
        load_config(path)
    path.write_text("datasets: [{path: a.jsonl}]\nlearning_rate: 1e-4\ndatasets: [{path: b.jsonl}]\n")
    with pytest.raises(UserError, match="key 'datasets' is written twice in one mapping \\(lines 1 and 3\\)"):
        load_config(path)


@pytest.mark.parametrize("row,message", [
    ({"instruction": "City?", "input": "", "output": {"city": "Paris"}}, "'output' is dict {\"city\": \"Paris\"}"),
    ({"instruction": ["a", "b"], "input": "", "output": "x"}, "'instruction' is list"),
    ({"instruction": "Is it?", "input": "", "output": True}, "'output' is bool"),
])
def test_alpaca_values_that_are_not_text_are_refused(tiny_model_dir, tmp_path, row, message):
    with pytest.raises(UserError, match=f"row 0 \\(counting from 0\\): {message}"):
        prepared(tmp_path, tiny_model_dir, [row], {"type": "alpaca"})


def test_alpaca_numbers_are_their_text_and_empty_answers_are_dropped(tiny_model_dir, tmp_path, capfd):
    rows = [{"instruction": "Add one to", "input": 0, "output": 1},
            {"instruction": "Say nothing", "input": "", "output": None},
            {"instruction": "Say nothing", "input": "", "output": "   "}]
    data, tok = prepared(tmp_path, tiny_model_dir, rows, {"type": "alpaca"})
    assert len(data) == 1 and "Add one to\n\n0" in tok.decode(data[0]["input_ids"])
    assert trained_text(tok, data[0]["input_ids"], data[0]["labels"]) == "1<|im_end|>"
    assert "dropped 2 of 3 rows with an empty 'output' (rows 1, 2)" in capfd.readouterr().err


@pytest.mark.slow
def test_empty_chats_answers_and_documents_are_dropped_and_counted(tiny_model_dir, tmp_path, capfd):
    rows = [chat("Fine."), chat("  \n "), {"messages": []}]
    data, _ = prepared(tmp_path, tiny_model_dir, rows)
    err = capfd.readouterr().err
    assert len(data) == 1 and "with an empty or whitespace-only answer (rows 1)" in err and "an empty chat (rows 2)" in err
    data, _ = prepared(tmp_path, tiny_model_dir, [{"text": "Some text."}, {"text": None}, {"text": " "}, {"text": 42}],
                       {"type": "text"})
    assert len(data) == 2 and "dropped 2 of 4 rows with an empty document (rows 1, 2)" in capfd.readouterr().err
    sharegpt = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": answer}]}
                for answer in ("Hello.", " ", 7)]
    data, tok = prepared(tmp_path, tiny_model_dir, sharegpt, {"type": "sharegpt"})
    assert [trained_text(tok, r["input_ids"], r["labels"]) for r in data] == ["Hello.<|im_end|>", "7<|im_end|>"]
    assert "dropped 1 of 3 rows with an empty or whitespace-only answer (rows 1)" in capfd.readouterr().err
    with pytest.raises(UserError, match="row 0 \\(counting from 0\\): 'text' is dict"):
        prepared(tmp_path, tiny_model_dir, [{"text": {"a": 1}}], {"type": "text"})
    with pytest.raises(UserError, match="no row is left to train \\(1 with an empty or whitespace-only answer\\)"):
        prepared(tmp_path, tiny_model_dir, [chat("")])


TOOL_CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}


def test_tool_calls_the_template_cannot_render_are_refused(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Weather in Paris?"}, TOOL_CALL]}]
    with pytest.raises(UserError, match="row 0 .*does not render message 1's tool_calls \\(get_weather\\)"):
        prepared(tmp_path, tiny_model_dir, rows)
    data, tok = prepared(tmp_path, tiny_model_dir, rows, chat_template="qwen2_5")
    assert "get_weather" in trained_text(tok, data[0]["input_ids"], data[0]["labels"])


def test_a_message_training_flag_overrides_its_role(tiny_model_dir, tmp_path):
    row = {"messages": [{"role": "user", "content": "Teach me", "training": True},
                        {"role": "assistant", "content": "Lesson one.", "training": False},
                        {"role": "user", "content": "More"}, {"role": "assistant", "content": "Lesson two."}]}
    data, tok = prepared(tmp_path, tiny_model_dir, [row], {"train_on_eos": "none"})
    assert trained_text(tok, data[0]["input_ids"], data[0]["labels"]) == "Teach meLesson two."


def test_the_same_dataset_twice_is_said(tiny_model_dir, tmp_path, capfd):
    from plugin.models.loader import tokenizer_for

    data_file = tmp_path / "rows.jsonl"
    data_file.write_text(json.dumps(chat("Once.")) + "\n")
    cfg = load_config(None, {"base_model": str(tiny_model_dir), "datasets": [{"path": str(data_file)}] * 2})
    data, _ = load_training_data(cfg, tokenizer_for(cfg))
    assert len(data) == 2 and "is listed 2 times with the same settings: its rows are trained 2 times" in \
        capfd.readouterr().err


@pytest.mark.parametrize("keys,message", [
    ({"lora_alpha": 0}, "lora_alpha must be > 0, got 0"),
    ({"lora_alpha": -8}, "lora_alpha must be > 0, got -8"),
    ({"seed": -1}, "seed must be in \\[0, 2\\*\\*32 - 1\\]"),
    ({"adam_beta2": 1.0}, "adam_beta2 must be in \\[0, 1\\)"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ({"save_total_limit": 0}, "save_total_limit must be > 0"),
])
def test_numeric_keys_outside_their_range_are_refused(keys, message):
    with pytest.raises(UserError, match=message):
        load_config(None, {"datasets": [{"path": "x.jsonl"}], **keys})
