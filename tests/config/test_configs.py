"""Every shipped YAML validates against the schema (catches typos in configs/ before a user does)."""

from pathlib import Path

import pytest

from plugin.config import load_config
from plugin.utils.errors import UserError

from ..helpers import REPO

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.startswith("study_"))  # study configs: tests/test_study.py


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.datasets and cfg.output_dir.startswith("outputs/")


def test_paper_setups_match_the_papers():
    mor = load_config(CONFIGS[0].parent / "mor_tulu.yaml")
    assert (mor.lora_r, mor.lora_alpha, mor.lora_dropout, mor.method_value("mor_num_experts"), mor.learning_rate) == (8, 32, 0.05, 8, 2e-4)
    assert mor.micro_batch_size * mor.gradient_accumulation_steps == 8 and mor.sequence_len == 1024
    trf = load_config(CONFIGS[0].parent / "loratrf_llama7b.yaml")
    assert trf.lora_r == 32 and trf.lora_target_modules == ["o_proj", "up_proj", "down_proj"]


# --- upstream meanings of chat_template names, targets and adapter: qlora (issue: peer YAMLs) ------------------

def _cfg(tmp_path, **keys):
    from ..helpers import write_yaml

    return load_config(write_yaml(tmp_path / "c.yaml", datasets=[{"path": "x.jsonl"}], **keys))


def test_named_chat_templates_resolve_to_templates_never_to_the_name(tmp_path):
    import trl

    from plugin.config import chat_templates

    trl_dir = Path(trl.__file__).parent / "chat_templates"
    assert chat_templates.resolve("llama3") == (trl_dir / "llama3.jinja").read_text()
    assert chat_templates.resolve("qwen3_nothink") == (trl_dir / "qwen3.jinja").read_text()
    assert chat_templates.resolve("tokenizer_default") is None
    assert chat_templates.resolve("jinja", "{{ messages }}") == "{{ messages }}"
    with pytest.raises(UserError, match="chat_template 'llama9' is not a known template name; use one of .*llama3"):
        _cfg(tmp_path, chat_template="llama9")
    with pytest.raises(UserError, match="chat_template: jinja needs the template text in chat_template_jinja"):
        _cfg(tmp_path, chat_template="jinja")


# the turn markers of these families, special tokens in their own tokenizers (SmolLM2's lacks them)
MARKERS = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>", "<start_of_turn>",
           "<end_of_turn>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<think>", "</think>"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chatml", "llama2", "mistral", "llama3", "gemma", "phi3", "qwen2_5", "qwen3"])
def test_named_templates_train_every_answer(name):
    """TRL's shipped templates (and ours): every answer trained, nothing else, each turn's end marker per option."""
    from transformers import AutoTokenizer

    from plugin.config import chat_templates
    from plugin.data.chat_labels import IGNORE, LabelPolicy, tokenize_conversation
    from plugin.data.loader import training_template
    from plugin.models.embedded import embedded_model_path

    tok = AutoTokenizer.from_pretrained(embedded_model_path())
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    tok.chat_template = chat_templates.resolve(name)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
            {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]
    template = training_template(tok)  # Qwen3 re-renders past turns: TRL's training version
    assert (template is not None) == (name == "qwen3")
    ids, labels = tokenize_conversation(tok, chat, LabelPolicy(train_on_eos="none"), template=template)
    trained = tok.decode([t for t, label in zip(ids, labels) if label != IGNORE]).replace(" ", "")
    think = "<think>\n\n</think>\n\n" if name == "qwen3" else ""  # Qwen3 writes an empty thought first
    assert trained == f"{think}Hellothere{think}Seeyou"
    ids, labels = tokenize_conversation(tok, chat, LabelPolicy(train_on_eos="turn"), template=template)
    ends = [t for t, label in zip(ids, labels) if label != IGNORE and t in tok.all_special_ids]
    assert len(ends) == 2 + 4 * (name == "qwen3") and len(set(ends) - set(tok.convert_tokens_to_ids(["<think>", "</think>"]))) == 1


def test_axolotl_and_llama_factory_targets_and_qlora(tmp_path):
    from plugin.config.peft_mapping import build_peft_config

    for keys in ({"lora_target_linear": True}, {"lora_target": "all"}):
        cfg = _cfg(tmp_path, adapter="mor", **keys)
        assert build_peft_config(cfg).target_modules == "all-linear"
    qlora = _cfg(tmp_path, adapter="qlora", lora_model_dir=None)  # empty upstream keys mean absent
    assert (qlora.adapter, qlora.load_in_4bit) == ("lora", True)
    with pytest.raises(UserError, match="adapter: qlora means a 4-bit base"):
        _cfg(tmp_path, adapter="qlora", load_in_8bit=True)


def test_all_linear_wraps_every_linear_layer_with_our_method():
    from peft import get_peft_model

    from plugin.config import load_config
    from plugin.config.peft_mapping import build_peft_config

    from ..helpers import tiny_llama

    cfg = load_config(None, {"datasets": [{"path": "x.jsonl"}], "adapter": "mor", "lora_target_linear": True})
    model = get_peft_model(tiny_llama(), build_peft_config(cfg))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "mor_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_peer_keys_ignored_with_a_notice_refused_with_the_way_out(tmp_path, capsys):
    cfg = _cfg(tmp_path, wandb_project="p", strict=False, max_samples=5)
    assert "note: ignoring keys that do not change training here: strict, wandb_project" in capsys.readouterr().err
    assert cfg.datasets[0].max_samples == 5  # LLaMA-Factory's top-level max_samples, not a typo of max_steps
    # honoured now (TrainingArguments.deepspeed / .fsdp_config): a missing file is the error, with the shipped names
    with pytest.raises(UserError, match="deepspeed: ds_z3.json: no such file .* ds_z3_config.json"):
        _cfg(tmp_path, deepspeed="ds_z3.json")
    assert _cfg(tmp_path, fsdp_config={"fsdp_version": 2}).fsdp == ["full_shard", "auto_wrap"]
    with pytest.raises(UserError, match=r"lora_model_dir \(adapter_name_or_path\): old/adapter holds no adapter_config.json"):
        _cfg(tmp_path, lora_model_dir="old/adapter")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "adapter_config.json").write_text('{"peft_type": "MOR"}')
    assert _cfg(tmp_path, lora_model_dir=str(saved)).adapter == "mor"  # the saved adapter's method
    with pytest.raises(UserError, match="adapter: mplora, but lora_model_dir .* holds a mor adapter"):
        _cfg(tmp_path, lora_model_dir=str(saved), adapter="mplora")


def test_empty_upstream_keys_mean_absent_but_null_keeps_its_meaning_where_it_has_one(tmp_path):
    cfg = _cfg(tmp_path, lora_r=None, learning_rate=None, resume_from_checkpoint=None, fp16=True)
    assert (cfg.lora_r, cfg.learning_rate) == (8, 2e-4)  # defaults, as if the keys were not written
    assert cfg.resume_from_checkpoint is None  # null: do not resume (a meaning of its own)
    with pytest.raises(UserError, match="bf16 and fp16 are both true"):
        _cfg(tmp_path, fp16=True, bf16=True)


def test_accelerate_configs_load_with_accelerate():
    """The shipped multi-GPU configs parse as accelerate's own config classes and point at what exists."""
    import json

    from accelerate.commands.config.config_args import load_config_from_file

    folder = REPO / "configs" / "accelerate"
    expected = {"ddp.yaml": "MULTI_GPU", "fsdp_qlora.yaml": "FSDP", "fsdp2.yaml": "FSDP",
                "deepspeed_zero3.yaml": "DEEPSPEED"}
    assert {p.name for p in folder.glob("*.yaml")} == set(expected)
    for name, kind in expected.items():
        config = load_config_from_file(str(folder / name))
        assert config.distributed_type.value == kind, name
    assert load_config_from_file(str(folder / "fsdp_qlora.yaml")).fsdp_config["fsdp_use_orig_params"] is False
    assert load_config_from_file(str(folder / "fsdp2.yaml")).fsdp_config["fsdp_version"] == 2
    ds = load_config_from_file(str(folder / "deepspeed_zero3.yaml")).deepspeed_config["deepspeed_config_file"]
    assert json.loads((REPO / ds).read_text())["zero_optimization"]["stage"] == 3
