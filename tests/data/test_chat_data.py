"""Chat data: every assistant turn trained, no prompt token trained, end-of-turn tokens per ``train_on_eos``.

References are independent of ``plugin.chat_labels``: each assistant message tokenised on its own, and
transformers' own assistant mask from a ``{% generation %}``-tagged template.
"""

import json
import re

import pytest
from transformers import AutoTokenizer

from plugin.data.chat_labels import IGNORE, LabelPolicy, tokenize_conversation
from plugin.config import DatasetSpec, load_config
from plugin.data.loader import tokenize_dataset, _load_raw
from plugin.utils.errors import UserError

from ..helpers import REPO, write_yaml

TULU = REPO / "data" / "demo" / "tulu_sample.jsonl"
GLAIVE = REPO / "tests" / "fixtures" / "chat" / "glaive_toolcall_en_demo_first4.json"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "You are welcome."},
]


@pytest.fixture(scope="module")
def smol():
    from plugin.models.embedded import embedded_model_path

    return AutoTokenizer.from_pretrained(embedded_model_path())


def trained(ids, labels):
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels))  # labels are the input ids, unshifted
    return [token for token, label in zip(ids, labels) if label != IGNORE]


def expected(tok, contents, eot_id, eots):
    """What should be trained: each answer tokenised alone, followed by its end-of-turn token where asked."""
    out = []
    for content, with_eot in zip(contents, eots):
        out += tok.encode(content, add_special_tokens=False) + ([eot_id] if with_eot else [])
    return out


@pytest.mark.parametrize("train_on_eos", ["turn", "last", "none"])
def test_every_assistant_turn_is_trained_and_nothing_else(smol, train_on_eos):
    ids, labels = tokenize_conversation(smol, CHAT, LabelPolicy(train_on_eos=train_on_eos))
    answers = [m["content"] for m in CHAT if m["role"] == "assistant"]
    eots = {"turn": [True] * 3, "last": [False, False, True], "none": [False] * 3}[train_on_eos]
    assert trained(ids, labels) == expected(smol, answers, smol.convert_tokens_to_ids("<|im_end|>"), eots)
    assert ids == smol.apply_chat_template(CHAT, tokenize=True, return_dict=False)  # the text TRL would see


def test_train_on_eos_all_trains_every_turns_end(smol):
    ids, labels = tokenize_conversation(smol, CHAT, LabelPolicy(train_on_eos="all"))
    im_end = smol.convert_tokens_to_ids("<|im_end|>")
    assert [t for t in trained(ids, labels) if t == im_end] == [im_end] * len(CHAT)


def test_roles_to_train_and_train_on_inputs(smol):
    ids, labels = tokenize_conversation(smol, CHAT, LabelPolicy(roles_to_train=("user",), train_on_eos="none"))
    users = [m["content"] for m in CHAT if m["role"] == "user"]
    assert trained(ids, labels) == expected(smol, users, None, [False] * 3)
    ids, labels = tokenize_conversation(smol, CHAT, LabelPolicy(train_on_inputs=True))
    assert labels == ids


def test_matches_transformers_assistant_mask_of_a_generation_tagged_template(smol):
    tagged = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    reference = smol.apply_chat_template(CHAT, chat_template=tagged, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
    ids, labels = tokenize_conversation(smol, CHAT, LabelPolicy(), template=tagged)
    assert ids == reference["input_ids"]
    assert [int(label != IGNORE) for label in labels] == reference["assistant_masks"]


def tiny_word_tokenizer(texts):
    """A word-level tokenizer with a LLaMA-2 style template: a different shape (BOS, </s> as end of turn)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()} | {"[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<s>", "</s>"]})
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '<s> [INST] ' + m['content'] + ' [/INST]' }}"
        "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' </s>' }}"
        "{% else %}{{ '<<SYS>> ' + m['content'] + ' <</SYS>> ' }}{% endif %}{% endfor %}"
    )
    return tok


def test_tiny_llama2_style_tokenizer():
    tok = tiny_word_tokenizer([m["content"] for m in CHAT])
    ids, labels = tokenize_conversation(tok, CHAT, LabelPolicy())
    answers = [m["content"] for m in CHAT if m["role"] == "assistant"]
    assert trained(ids, labels) == expected(tok, answers, tok.eos_token_id, [True] * 3)
    assert tok.convert_tokens_to_ids("[/INST]") not in trained(ids, labels)


def _answers(rows, column, role_key, content_key, roles):
    return [[m[content_key] for m in row[column] if m[role_key] in roles] for row in rows]


def test_tulu_rows_as_published(smol):
    spec = DatasetSpec(path=str(TULU))
    data = tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 1024)
    rows = [json.loads(line) for line in TULU.read_text().splitlines()]
    assert {"dataset", "id", "messages"} <= set(rows[0]) and sum(len(r["messages"]) > 3 for r in rows) >= 6
    im_end = smol.convert_tokens_to_ids("<|im_end|>")
    for row, answers in zip(data, _answers(rows, "messages", "role", "content", {"assistant"})):
        assert trained(row["input_ids"], row["labels"]) == expected(smol, answers, im_end, [True] * len(answers))


@pytest.mark.parametrize("tokenizer", ["smol", "tiny"])
def test_sharegpt_upstream_rows(smol, tokenizer):
    """LLaMA-Factory's published ShareGPT demo (human/gpt/function_call/observation roles, a tools column)."""
    rows = json.loads(GLAIVE.read_text())
    tok = smol if tokenizer == "smol" else tiny_word_tokenizer(
        [m["value"] for r in rows for m in r["conversations"]])
    spec = DatasetSpec(path=str(GLAIVE), type="sharegpt")
    data = tokenize_dataset(_load_raw(spec), spec, tok, LabelPolicy(), 4096)
    eot = smol.convert_tokens_to_ids("<|im_end|>") if tokenizer == "smol" else tok.eos_token_id
    answers = _answers(rows, "conversations", "from", "value", {"gpt", "function_call"})
    assert len(data) == 4 and any("function_call" in [m["from"] for m in r["conversations"]] for r in rows)
    for row, want in zip(data, answers):
        assert trained(row["input_ids"], row["labels"]) == expected(tok, want, eot, [True] * len(want))


def test_axolotl_field_messages_and_property_mappings(smol, tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps({"dialog": [{"speaker": "human", "text": "Hi"}, {"speaker": "bot", "text": "Hey"}]}) + "\n")
    spec = DatasetSpec(path=str(path), type="chat_template", field_messages="dialog",
                       message_property_mappings={"role": "speaker", "content": "text"},
                       roles={"user": ["human"], "assistant": ["bot"]})
    (row,) = tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 256)
    assert trained(row["input_ids"], row["labels"]) == expected(smol, ["Hey"], smol.eos_token_id, [True])


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": "hi"}], "row 1 (counting from 0): no assistant turn to train on"),
    ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}], "row 1 (counting from 0): message 0 has unknown role 'robot'"),
    ([{"role": "user", "content": {"a": 3}}, {"role": "assistant", "content": "x"}], "row 1 (counting from 0): message 0 (user) has no text"),
])
def test_bad_rows_are_named(smol, tmp_path, messages, message):
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"messages": messages}) + "\n")
    spec = DatasetSpec(path=str(path))
    with pytest.raises(UserError, match=re.escape(message)):
        tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 256)


def test_truncation_drops_are_counted_and_all_dropped_is_an_error(smol, tmp_path, capsys):
    long_prompt = "word " * 300
    path = tmp_path / "long.jsonl"
    rows = [[{"role": "user", "content": "short"}, {"role": "assistant", "content": "ok"}],
            [{"role": "user", "content": long_prompt}, {"role": "assistant", "content": "ok"}]]
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    spec = DatasetSpec(path=str(path))
    data = tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 128)
    assert len(data) == 1 and max(len(r["input_ids"]) for r in data) <= 128
    assert "dropped 1 of 2 rows with trained tokens past sequence_len 128 (rows 1)" in capsys.readouterr().err
    with pytest.raises(UserError, match="no row is left to train \\(2 with trained tokens past sequence_len 20\\)"):
        tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 20)


@pytest.mark.slow
def test_preview_data_cli_shows_rows_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    from plugin.train import main as train_main

    out = tmp_path / "out"
    cfg = write_yaml(tmp_path / "c.yaml", base_model=str(tiny_model_dir), datasets=[{"path": str(TULU)}],
                     output_dir=str(out), max_steps=1)
    assert train_main([str(cfg), "--preview-data", "2"]) == 0
    shown = capsys.readouterr().out
    first = json.loads(TULU.read_text().splitlines()[0])["messages"]
    assert shown.count("--- row") == 2
    for answer in (m["content"] for m in first if m["role"] == "assistant"):
        assert f"[[{answer}<|im_end|>]]" in shown
    assert train_main([str(cfg), "--preview-data", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["input_ids"]) == len(rows[0]["labels"]) and IGNORE in rows[0]["labels"]
    assert not out.exists()


def test_text_and_chat_datasets_mix(smol, tmp_path):
    from plugin.data.loader import load_training_data

    text = tmp_path / "t.jsonl"
    text.write_text('{"text": "Plain text is trained on every token."}\n')
    cfg = load_config(None, {"datasets": [{"path": str(TULU)}, {"path": str(text), "type": "text"}]})
    train, _ = load_training_data(cfg, smol)
    last = train[len(train) - 1]
    assert last["labels"] == last["input_ids"] and last["input_ids"][-1] == smol.eos_token_id
    assert len(train) == 13


def test_dataset_keys_validate(tmp_path):
    bad = write_yaml(tmp_path / "c.yaml", datasets=[{"path": "x.jsonl", "roles_to_train": ["gpt"]}])
    with pytest.raises(UserError, match="roles_to_train names unknown role 'gpt'"):
        load_config(bad)
    ok = write_yaml(tmp_path / "d.yaml", datasets=[{"path": "x.jsonl", "type": "sharegpt", "train_on_eos": "last",
                                                   "message_property_mappings": {"role": "from"}}])
    assert load_config(ok).datasets[0].message_property_mappings == {"role": "from"}


def test_assistant_only_chat_trains_its_turn(smol):
    ids, labels = tokenize_conversation(smol, [{"role": "assistant", "content": "Just me."}], LabelPolicy())
    assert trained(ids, labels) == expected(smol, ["Just me."], smol.eos_token_id, [True])


def test_alpaca_with_system_and_history_trains_every_answer(smol, tmp_path):
    """LLaMA-Factory's alpaca history: earlier answers are trained too (its data/README.md says so)."""
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"q": "And 3+3?", "in": "", "a": "6.", "sys": "Be brief.",
                                 "hist": [["What is 1+1?", "2."], ["And 2+2?", "4."]]}]))
    spec = DatasetSpec(path=str(path), type="alpaca", field_instruction="q", field_input="in", field_output="a",
                       field_system="sys", field_history="hist")
    (row,) = tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 512)
    assert trained(row["input_ids"], row["labels"]) == expected(smol, ["2.", "4.", "6."], smol.eos_token_id, [True] * 3)
    assert "Be brief." in smol.decode(row["input_ids"])


def test_split_slices_on_local_files(smol):
    spec = DatasetSpec(path=str(TULU), split="train[:25%]")
    assert len(tokenize_dataset(_load_raw(spec), spec, smol, LabelPolicy(), 512)) == 3  # 12 rows
