"""LLaMA-Factory's own example YAMLs and dataset registry (tests/fixtures/peer_configs/, verbatim) mean here what
they mean upstream."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugin.config import chat_templates
from plugin.config import load_config
from plugin.train import main as train_main
from plugin.utils.errors import UserError

from ..helpers import FIXTURES_DIR, REPO, adapter_weights, write_yaml

LF = FIXTURES_DIR / "peer_configs" / "llamafactory"


@pytest.fixture
def in_lf_folder(monkeypatch):
    monkeypatch.chdir(LF)  # LLaMA-Factory resolves dataset_dir (default "data") from the working folder


def test_llamafactory_lora_example_means_what_upstream_means(in_lf_folder, capsys):
    cfg = load_config(LF / "qwen3_lora_sft.yaml", {"finetuning_type": "mor"})
    assert (cfg.base_model, cfg.adapter, cfg.lora_r, cfg.lora_target_modules) == (
        "Qwen/Qwen3-4B-Instruct-2507", "mor", 8, ["all-linear"])
    assert chat_templates.resolve(cfg.chat_template) == chat_templates.resolve("qwen3")
    assert [(Path(d.path).name, d.type, d.field_instruction, d.field_output, d.max_samples) for d in cfg.datasets] == [
        ("identity.json", "alpaca", "instruction", "output", 1000), ("alpaca_en_demo.json", "alpaca", "instruction", "output", 1000)]
    assert (cfg.sequence_len, cfg.micro_batch_size, cfg.gradient_accumulation_steps, cfg.learning_rate,
            cfg.num_epochs, cfg.warmup_ratio, cfg.bf16, cfg.trust_remote_code) == (2048, 1, 8, 1e-4, 3.0, 0.1, True, True)
    assert "note: ignoring keys that do not change training here: dataloader_num_workers, ddp_timeout" in capsys.readouterr().err


def test_llamafactory_qlora_example_loads_4bit(in_lf_folder):
    cfg = load_config(LF / "qwen3_lora_sft_otfq.yaml", {"finetuning_type": "mor"})
    assert cfg.load_in_4bit and not cfg.load_in_8bit


def test_sharegpt_registry_entry_maps_tags(tmp_path):
    import json

    from plugin.config.llamafactory import registry_datasets

    info = json.loads((LF / "data" / "dataset_info.json").read_text())
    (tmp_path / "dataset_info.json").write_text(json.dumps({"tools": info["glaive_toolcall_en_demo"]}))
    (tmp_path / "glaive_toolcall_en_demo.json").write_text("[]")
    (spec,) = registry_datasets("tools", str(tmp_path))
    assert spec["type"] == "sharegpt" and spec["field_messages"] == "conversations"
    assert spec["roles"]["assistant"] == ["gpt", "function_call"] and spec["roles"]["tool"] == ["observation"]


@pytest.mark.slow
def test_llamafactory_example_trains_two_steps(tiny_model_dir, tmp_path):
    """Only the base model, the dataset folder and the adapter replaced (plus a CPU-sized run)."""
    import yaml

    keys = yaml.safe_load((LF / "qwen3_lora_sft.yaml").read_text())
    keys.update(model_name_or_path=str(tiny_model_dir), dataset_dir=str(LF / "data"), finetuning_type="mor",
                output_dir=str(tmp_path / "out"), max_steps=2, bf16=False, trust_remote_code=False,
                gradient_accumulation_steps=1, max_samples=8, cutoff_len=256)
    assert train_main([str(write_yaml(tmp_path / "lf.yaml", **keys))]) == 0
    weights = adapter_weights(tmp_path / "out")
    assert any("mor_A" in k and "q_proj" in k for k in weights) and any("down_proj" in k for k in weights)


AX = FIXTURES_DIR / "peer_configs" / "axolotl"


def test_axolotl_instruct_lora_example_means_what_upstream_means(capsys):
    cfg = load_config(AX / "llama-3_instruct-lora-8b.yml", {"adapter": "mor"})
    assert (cfg.adapter, cfg.load_in_8bit, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == ("mor", True, 32, 16, 0.05)
    assert cfg.lora_target_modules == ["all-linear"]  # lora_target_linear: true
    assert chat_templates.resolve(cfg.chat_template) == chat_templates.resolve("llama3")
    assert (cfg.datasets[0].path, cfg.datasets[0].type) == ("fozziethebeat/alpaca_messages_2k_test", "chat_template")
    assert (cfg.evals_per_epoch, cfg.saves_per_epoch, cfg.val_set_size, cfg.optimizer) == (4, 1, 0.05, "adamw_bnb_8bit")
    assert cfg.special_tokens == {"pad_token": "<|end_of_text|>"} and cfg.attn_implementation == "flash_attention_2"
    assert "ignoring keys that do not change training here: model_type, tf32, tokenizer_type" in capsys.readouterr().err


@pytest.mark.slow
def test_axolotl_qlora_example_trains_two_steps_as_mor(tiny_model_dir, tmp_path):
    """adapter: qlora -> mor on the same 4-bit base, sample packing, adamw_bnb_8bit, evals_per_epoch: only the base
    model, the data, the adapter, the llama-3 pad token (the tiny model's tokenizer lacks it) and the run length
    replaced."""
    cfg = load_config(AX / "llama-3_qlora-1b.yml", {"adapter": "mor"})
    assert (cfg.adapter, cfg.load_in_4bit, cfg.sample_packing) == ("mor", True, True)
    assert cfg.lora_target_modules == ["gate_proj", "down_proj", "up_proj", "q_proj", "v_proj", "k_proj", "o_proj"]
    data = LF / "data" / "alpaca_en_demo.json"
    assert train_main([str(AX / "llama-3_qlora-1b.yml"), "--adapter", "mor", "--base_model", str(tiny_model_dir),
                       "--datasets", f"[{{path: {data}, type: alpaca}}]", "--special_tokens",
                       "{pad_token: '<|im_end|>'}", "--max_steps", "2", "--sequence_len", "512",
                       "--output_dir", str(tmp_path / "out")]) == 0
    assert any("mor_omega_B" in k for k in adapter_weights(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["peft_type"] == "MOR"


def test_llamafactory_pretrain_example_trains_on_plain_text(in_lf_folder, tiny_model_dir):
    """stage: pt reads the registry entry's prompt column as text; every token is trained, each document whole (split
    into cutoff_len chunks), eos closing it."""
    from plugin.data.loader import load_training_data
    from plugin.models.loader import tokenizer_for

    cfg = load_config(LF / "qwen3_lora_pretrain.yaml", {"finetuning_type": "mor", "model_name_or_path": str(tiny_model_dir),
                                                        "cutoff_len": 64})
    (spec,) = cfg.datasets
    assert (Path(spec.path).name, spec.type, spec.field, spec.max_samples) == ("c4_demo.jsonl", "text", "text", 1000)
    tokenizer = tokenizer_for(cfg)
    data, _ = load_training_data(cfg, tokenizer)
    texts = [json.loads(line)["text"] for line in (LF / "data" / "c4_demo.jsonl").read_text().splitlines()]
    chunks = sum(-(-(len(tokenizer(text)["input_ids"]) + 1) // 64) for text in texts)  # + eos, in 64-token rows
    assert len(data) == chunks and data[0]["input_ids"] == tokenizer(texts[0])["input_ids"][:64]
    assert all(row["labels"] == row["input_ids"] for row in data)
    short = [row for row in data if len(row["input_ids"]) < 64]
    assert all(row["input_ids"][-1] == tokenizer.eos_token_id for row in short)


def test_llamafactory_pretrain_refuses_chat_entries(in_lf_folder):
    with pytest.raises(UserError, match="dataset 'identity': stage: pt reads one text column"):
        load_config(LF / "qwen3_lora_pretrain.yaml", {"dataset": "identity"})


def test_axolotl_gemma2_example_drops_the_system_turn(tiny_model_dir, tmp_path):
    """drop_system_message and eot_tokens with Axolotl's meaning; only the data path, base model and (for the tiny
    model's ChatML tokenizer) the template and its end-of-turn token replaced."""
    from plugin.data.loader import load_training_data
    from plugin.models.loader import tokenizer_for

    chat = [{"from": "system", "value": "SYSTEM-PROMPT"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    data_file = tmp_path / "orca.jsonl"
    data_file.write_text(json.dumps({"conversations": chat}) + "\n")
    keep = load_config(AX / "gemma2_qlora.yml", {"adapter": "mor"}).datasets[0]
    assert (keep.type, keep.drop_system_message, keep.field_messages) == ("chat_template", True, "conversations")
    dataset = {k: v for k, v in vars(keep).items() if v is not None} | {"path": str(data_file)}
    cfg = load_config(AX / "gemma2_qlora.yml", {"adapter": "mor", "base_model": str(tiny_model_dir), "datasets": [dataset],
                                                "chat_template": "chatml", "eot_tokens": ["<|im_end|>"]})
    tokenizer = tokenizer_for(cfg)
    data, _ = load_training_data(cfg, tokenizer)
    text = tokenizer.decode(data[0]["input_ids"])
    assert "SYSTEM-PROMPT" not in text and "hi" in text
    trained = tokenizer.decode([t for t in data[0]["labels"] if t != -100])
    assert trained == "hello<|im_end|>"


@pytest.mark.slow
def test_axolotl_deduplicate_example_keeps_each_row_once(tiny_model_dir, tmp_path):
    """The upstream file lists the same dataset twice with dataset_exact_deduplication: true."""
    from plugin.data.loader import load_training_data
    from plugin.models.loader import tokenizer_for

    upstream = load_config(AX / "llama-3_lora-1b-deduplicate-sft.yml", {"adapter": "mor"})
    assert upstream.dataset_exact_deduplication and [d.path for d in upstream.datasets] == ["mhenrichsen/alpaca_2k_test"] * 2
    local = [{"path": str(LF / "data" / "alpaca_en_demo.json"), "type": "alpaca"}] * 2
    overrides = {"adapter": "mor", "base_model": str(tiny_model_dir), "datasets": local,
                 "special_tokens": {"pad_token": "<|im_end|>"}}
    cfg = load_config(AX / "llama-3_lora-1b-deduplicate-sft.yml", overrides)
    data, _ = load_training_data(cfg, tokenizer_for(cfg))
    both = load_config(AX / "llama-3_lora-1b-deduplicate-sft.yml", {**overrides, "dataset_exact_deduplication": False})
    doubled, _ = load_training_data(both, tokenizer_for(both))
    assert len(doubled) == 40 and len(data) == 20
    assert {tuple(r["input_ids"]) for r in data} == {tuple(r["input_ids"]) for r in doubled}


@pytest.mark.parametrize("key,value,expected", [
    ("cosine_constant_lr_ratio", 0, None),  # off: Axolotl's FSDP2 examples leave it at 0
    ("test_value", True, "ignoring keys that do not change training here: test_value"),
    ("torch_compile_mode", "max-autotune", "ignoring keys that do not change training here: torch_compile_mode"),
])
def test_inert_upstream_keys_are_accepted(tmp_path, capsys, key, value, expected):
    cfg_file = write_yaml(tmp_path / "c.yaml", datasets=[{"path": "data/demo/tulu_sample.jsonl"}], **{key: value})
    load_config(cfg_file)
    err = capsys.readouterr().err
    assert (expected in err) if expected else key not in err


def test_prequantised_base_is_refused_before_loading(tiny_model_dir, tmp_path):
    """LLaMA-Factory's train_qlora AWQ/GPTQ/AQLM examples: packed kernels our layers cannot wrap."""
    import shutil

    from plugin.models.loader import load_base_model

    awq = shutil.copytree(tiny_model_dir, tmp_path / "awq")
    config = json.loads((awq / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
    (awq / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="is pre-quantised with awq: .* use the full-precision base with load_in_4bit"):
        load_base_model(str(awq))


def test_axolotl_schedule_and_optimizer_keys_reach_the_trainer(tmp_path):
    """warmup_steps, adam_*, cosine_min_lr_ratio (Axolotl: cosine from 1 down to the ratio), curriculum_sampling."""
    import math

    from transformers import get_scheduler

    from plugin.training.run import training_arguments

    cfg_file = write_yaml(tmp_path / "c.yaml", datasets=[{"path": "data/demo/tulu_sample.jsonl"}], warmup_steps=2,
                          adam_beta2=0.95, adam_eps=1e-6, cosine_min_lr_ratio=0.1, curriculum_sampling=True,
                          learning_rate=1.0, max_steps=10)
    args = training_arguments(load_config(cfg_file), has_eval=False, use_cpu=True)
    assert (args.warmup_steps, args.adam_beta2, args.adam_epsilon, args.train_sampling_strategy) == (2, 0.95, 1e-6, "sequential")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=2, num_training_steps=10,
                             scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [s / 2 for s in range(2)] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert lrs == pytest.approx(expected)


# Published scale-out examples (verbatim): the TrainingArguments plugin.train builds from each, all in one fresh
# process (building them with deepspeed or fsdp exports ACCELERATE_USE_* and keeps a DeepSpeed config for the rest
# of the process: each example starts from the environment the process began with). Replaced: the adapter.
_ARGS_OF = """
import contextlib, io, json, os, sys
from transformers.integrations.deepspeed import unset_hf_deepspeed_config
from plugin.config import load_config
from plugin.training.run import training_arguments
clean, start, built = dict(os.environ), os.getcwd(), {}
for example, folder in json.loads(sys.argv[1]).items():
    os.environ.clear(), os.environ.update(clean), os.chdir(folder), unset_hf_deepspeed_config()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        cfg = load_config(example, {"adapter": "mor"})
        args = training_arguments(cfg, has_eval=False, use_cpu=True)  # as train() builds them on this CPU machine
    ds = getattr(args, "hf_deepspeed_config", None)
    built[example] = {"fsdp": bool(args.fsdp), "fsdp_config": args.fsdp_config, "load_in_4bit": cfg.load_in_4bit,
                      "deepspeed": args.deepspeed, "ds": ds.config if ds else None,
                      "plugin": getattr(args, "fsdp_plugin_args", None), "stderr": err.getvalue()}
print(json.dumps(built, default=str))
"""
SCALE_OUT = ["axolotl/llama-2_qlora-fsdp.yml", "axolotl/llama-3_qlora-fsdp-70b.yaml",
             "axolotl/jamba_qlora_deepspeed.yaml", "llamafactory/qwen3_lora_sft_ds3.yaml"]


@pytest.fixture(scope="module")
def scale_out_arguments(tmp_path_factory):
    folders = {str(FIXTURES_DIR / "peer_configs" / example): str(LF if example.startswith("llamafactory")
                                                                 else tmp_path_factory.mktemp("scale_out"))
               for example in SCALE_OUT}
    proc = subprocess.run([sys.executable, "-c", _ARGS_OF, json.dumps(folders)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(path).relative_to(FIXTURES_DIR / "peer_configs").as_posix(): built
            for path, built in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.slow
@pytest.mark.parametrize("example", SCALE_OUT)
def test_published_scale_out_examples_reach_the_trainer(example, scale_out_arguments):
    built = scale_out_arguments[example]
    stderr = built["stderr"]
    if "fsdp" in example:  # Axolotl's fsdp_-prefixed keys, as the HF Trainer reads them
        assert built["fsdp"] and built["load_in_4bit"] and built["deepspeed"] is None
        assert "use_reentrant: true is run as use_reentrant: false" in stderr
        # what accelerate's FSDP plugin gets, as Axolotl would set it: FSDP1 (its default), params offloaded (Axolotl's
        # offload_params is the Trainer's cpu_offload; under its own name transformers would drop it silently)
        assert "fsdp_version is not set: FSDP1, as Axolotl runs this file" in stderr
        plugin = built["plugin"]
        assert (plugin["fsdp_version"], plugin["cpu_offload"], plugin["use_orig_params"]) == (1, True, False)
        assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
        assert (plugin["auto_wrap_policy"], plugin["state_dict_type"]) == ("TRANSFORMER_BASED_WRAP", "FULL_STATE_DICT")
        assert plugin["limit_all_gathers"] and plugin["sync_module_states"] and plugin["cpu_ram_efficient_loading"]
        assert plugin["reshard_after_forward"] == "full_shard"
    else:  # the shipped copy of the named file, its "auto" values filled from the YAML
        stage = 2 if "jamba" in example else 3
        assert built["deepspeed"].endswith(("zero2.json", "ds_z3_config.json"))
        assert "using the copy of it this package ships" in stderr
        assert built["ds"]["zero_optimization"]["stage"] == stage and not built["fsdp"]
        micro, accumulation = (1, 4) if "jamba" in example else (1, 2)
        assert (built["ds"]["train_micro_batch_size_per_gpu"], built["ds"]["gradient_accumulation_steps"]) == (
            micro, accumulation)


def test_fsdp_keys_are_checked_before_anything_loads(tmp_path):
    base = {"base_model": "x", "datasets": [{"path": str(LF / "data" / "alpaca_en_demo.json"), "type": "alpaca"}]}
    for keys, message in [({"fsdp": ["full_shard", "autowrap"]}, "fsdp: unknown option 'autowrap'; did you mean "
                                                                   "'auto_wrap'?"),
                          ({"fsdp_version": 2}, "fsdp_version is set but FSDP is not"),
                          ({"fsdp_config": {"fsdp_offload_params": True}, "deepspeed": {"zero_optimization": {}}},
                           "fsdp and deepspeed are both set"),
                          ({"fsdp_config": {}, "fsdp_version": 3}, "fsdp_version must be 1 or 2"),
                          ({"fsdp_config": {"fsdp_ofload_params": True}}, "fsdp_config.fsdp_ofload_params is not an "
                                                                          "FSDP setting the Trainer reads; did you mean "
                                                                          "'offload_params'"),
                          ({"fsdp_config": {"fsdp_sharding_strategy": "SHARD_GRAD_OP"}},
                           "fsdp_config.fsdp_sharding_strategy: SHARD_GRAD_OP disagrees with fsdp"),
                          ({"fsdp_config": {"mixed_precision_policy": "bf16"}, "fsdp_version": 2},
                           "fsdp_config.mixed_precision_policy: a custom FSDP2 mixed-precision policy")]:
        with pytest.raises(UserError, match=message):
            load_config(write_yaml(tmp_path / "c.yaml", **base, **keys))
    cfg = load_config(write_yaml(tmp_path / "c.yaml", **base, fsdp_config={"offload_params": False}, fsdp_version=2))
    assert cfg.fsdp == ["full_shard", "auto_wrap"] and cfg.fsdp_config == {"cpu_offload": False, "version": 2}
    cfg = load_config(write_yaml(tmp_path / "c.yaml", **base, fsdp="full_shard auto_wrap",
                                 fsdp_config={"transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}))
    assert "version" not in cfg.fsdp_config  # the HF Trainer's own spelling keeps the Trainer's default (FSDP2)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_llamafactory_zero3_example_trains_two_steps_as_mor_on_two_processes(torchrun_launch):
    """LLaMA-Factory's qwen3_lora_sft_ds3.yaml, unchanged but for the model, the adapter and the run length, under
    torchrun on 2 CPU processes (tests/launches.py): its deepspeed: names examples/deepspeed/ds_z3_config.json, which
    the shipped copy stands in for."""
    output = torchrun_launch.output("lf-zero3")
    assert torchrun_launch.rc("lf-zero3") == 0, output[-3000:]
    assert "using the copy of it this package ships" in output
    assert torchrun_launch.engine("lf-zero3") == "DEEPSPEED zero3"
    out = torchrun_launch.out("lf-zero3")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "MOR"
    assert json.loads((out / "run_summary.json").read_text())["steps"] == 2


@pytest.mark.multiprocess
@pytest.mark.slow
def test_axolotl_jamba_zero2_example_trains_two_steps_as_mor_on_two_processes(torchrun_launch):
    """Axolotl's jamba/qlora_deepspeed.yaml (4-bit base, paged_adamw_8bit, deepspeed: deepspeed_configs/zero2.json)
    under torchrun on 2 CPU processes, with only the model (a tiny random Jamba: mamba + attention layers, routed
    experts), the data, the adapter, the pad token and the run length replaced (tests/launches.py)."""
    from ..launches import deepspeed_runs_zero2

    if not deepspeed_runs_zero2():
        pytest.skip(deepspeed_runs_zero2.__doc__)
    output = torchrun_launch.output("jamba-zero2")
    assert torchrun_launch.rc("jamba-zero2") == 0, output[-3000:]
    assert "deepspeed: deepspeed_configs/zero2.json is not in" in output
    assert "routed-expert weight tensors" in output  # the experts stay unadapted, and it is said
    assert torchrun_launch.engine("jamba-zero2") == "DEEPSPEED zero2"
    out = torchrun_launch.out("jamba-zero2")
    assert json.loads((out / "run_summary.json").read_text())["steps"] == 2
    assert any("mor_omega_B" in k for k in adapter_weights(out))
