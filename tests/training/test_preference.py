"""Preference and online-RL training (rl:): TRL's own trainers with the adapters, through the package's trainer
classes and through plugin.train; the auxiliary term counted once per optimiser step; the reference is the base."""

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import plugin
from plugin.config import load_config
from plugin.data.preference import load_preference_data
from plugin.train import main as train_main
from plugin.utils.errors import UserError

from ..helpers import FIXTURES_DIR, adapter_weights, method_config, preference_rows, write_jsonl, write_yaml

LF = FIXTURES_DIR / "peer_configs" / "llamafactory"
AX = FIXTURES_DIR / "peer_configs" / "axolotl"


def length_reward(completions, **kwargs):
    """A reward with spread inside every group (so GRPO's advantages are not all zero): longer text scores more."""
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) for c in completions]


def _datasets():
    from datasets import Dataset

    pairs = preference_rows(8)
    return {
        "pairs": Dataset.from_list(pairs),
        "kto": Dataset.from_list([{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
                                  for r in pairs for k in ("chosen", "rejected")]),
        "prompts": Dataset.from_list([{"prompt": r["prompt"]} for r in pairs]),
    }


def _trainer(stage: str, model_dir, peft_config, tmp_path, ga: int = 1, callbacks=(), trainer_cls=None, **config):
    """One of the package's trainers (or ``trainer_cls``) on the tiny model, as a Python user builds it."""
    from transformers import AutoModelForSequenceClassification
    from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, RLOOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    data = _datasets()
    cls, args_cls, rows, extra = {
        "dpo": (plugin.DPOTrainer, DPOConfig, "pairs", {}),
        "kto": (plugin.KTOTrainer, KTOConfig, "kto", {"train_sampling_strategy": "sequential"}),
        "orpo": (plugin.ORPOTrainer, ORPOConfig, "pairs", {}),
        "simpo": (plugin.CPOTrainer, CPOConfig, "pairs", {"loss_type": "simpo"}),
        "grpo": (plugin.GRPOTrainer, GRPOConfig, "prompts", {"num_generations": 2, "max_completion_length": 6}),
        "rloo": (plugin.RLOOTrainer, RLOOConfig, "prompts", {"num_generations": 2, "max_completion_length": 6}),
        "rm": (plugin.RewardTrainer, RewardConfig, "pairs", {}),
    }[stage]
    args = args_cls(**{**dict(output_dir=str(tmp_path / f"{stage}_{ga}"), per_device_train_batch_size=2,
                              gradient_accumulation_steps=ga, max_steps=1, learning_rate=1e-3, max_grad_norm=0.0,
                              bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no", seed=0,
                              use_cpu=True, logging_steps=1), **extra, **config})
    kwargs = {"reward_funcs": [length_reward]} if stage in ("grpo", "rloo") else {}
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1) if stage == "rm" else \
        AutoModelForCausalLM.from_pretrained(model_dir)
    if stage == "rm":
        peft_config.task_type = "SEQ_CLS"  # PEFT trains the new score head too (modules_to_save)
    return (trainer_cls or cls)(model=model, args=args,
                                train_dataset=data[rows], processing_class=AutoTokenizer.from_pretrained(model_dir),
                                peft_config=peft_config, callbacks=list(callbacks), **kwargs)


STAGES = ["dpo", "kto", "orpo", "simpo", "grpo", "rloo", "rm"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("method", ["mplora", "mor", "loratrf_output"])
def test_each_trainer_trains_each_adapter_and_no_base_weight(tiny_model_dir, tmp_path, stage, method):
    trainer = _trainer(stage, tiny_model_dir, method_config(method), tmp_path)
    model = trainer.model
    assert "ref" not in model.peft_config  # the reference is the base with the adapter off: no copied adapter
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".default" in n for n in trained) and moved <= trained
    # every kind of adapter tensor trains (one layer's may not: LoRATRF's clamped gate can be shut for every token)
    kind = lambda name: name.split(".")[-3]  # noqa: E731 - e.g. mor_router, trf_t
    assert {kind(n) for n in moved} == {kind(n) for n in trained}


class _GradsBeforeStep(TrainerCallback):
    """The accumulated adapter gradients just before the optimiser step."""

    def __init__(self):
        self.grads = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _orthogonality(blocks: list[torch.Tensor]) -> torch.Tensor:
    """SPEC 1, written here independently: sum over i < j of ||B_i^T B_j||_F^2."""
    return sum((blocks[i].T @ blocks[j]).pow(2).sum() for i in range(len(blocks)) for j in range(i + 1, len(blocks)))


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_auxiliary_term_counts_once_per_optimiser_step(tiny_model_dir, tmp_path, stage):
    """The gradient with weight w minus the gradient with weight 0 is w * d(orthogonality)/dB, at accumulation 1 and
    2 alike, for every trainer (GRPO scales its own loss for accumulation; the others let the Trainer do it)."""
    weight, paths = 3.0, 2
    for ga in (1, 2):
        grads = {}
        for w in (weight, 0.0):
            seen = _GradsBeforeStep()
            # the shared config starts B non-zero (at zero the orthogonality gradient is zero too)
            trainer = _trainer(stage, tiny_model_dir, method_config("mplora", num_paths=paths, orth_weight=w),
                               tmp_path, ga, [seen])
            b = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "mplora_B" in n}
            trainer.train()
            grads[w] = seen.grads
        for name, value in b.items():
            rows = value.clone().requires_grad_(True)
            _orthogonality(list(rows.chunk(paths, dim=0))).backward()
            expected = weight * rows.grad
            got = grads[weight][name] - grads[0.0][name]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{stage} GA {ga} {name}")


@pytest.mark.slow
def test_generation_takes_the_inference_path_and_records_nothing(tiny_model_dir, tmp_path):
    trainer = _trainer("grpo", tiny_model_dir, method_config("mplora", num_paths=2), tmp_path)
    modes = []
    from plugin.tuners.mplora import MPLoraLayer

    layer = next(m for m in trainer.model.modules() if isinstance(m, MPLoraLayer))
    layer.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    trainer.train()
    # the sampling forwards ran in eval mode (one per decoded token), the loss forward in train mode
    assert modes.count(False) >= 6 and True in modes
    assert not layer.pending_aux.get("default")  # the loss forward's term was handed out


@pytest.mark.slow
def test_a_plain_trl_trainer_says_once_that_the_term_is_not_applied(tiny_model_dir, tmp_path):
    import warnings

    from trl import DPOTrainer

    from plugin.tuners.base import UnappliedAuxLoss

    trainer = _trainer("dpo", tiny_model_dir, method_config("mplora", num_paths=2), tmp_path, trainer_cls=DPOTrainer,
                       max_steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own default: once per place
        trainer.train()
    said = [w for w in caught if issubclass(w.category, UnappliedAuxLoss)]
    assert len(said) == 1 and "plugin.DPOTrainer" in str(said[0].message)
    with warnings.catch_warnings(record=True) as caught:  # the package's trainer hands every term out
        warnings.simplefilter("always")
        _trainer("dpo", tiny_model_dir, method_config("mplora", num_paths=2), tmp_path, max_steps=3).train()
    assert not [w for w in caught if issubclass(w.category, UnappliedAuxLoss)]


def _pairs_file(tmp_path, rows=None):
    return write_jsonl(tmp_path / "pairs.jsonl", rows if rows is not None else preference_rows(8))


def _cli_keys(tiny_model_dir, tmp_path, rl, data, **keys):
    return {**dict(base_model=str(tiny_model_dir), adapter="mor", lora_r=4, lora_alpha=8, rl=rl,
                   datasets=[{"path": str(data)}], sequence_len=128, micro_batch_size=2, max_steps=2,
                   learning_rate=1e-3, logging_steps=1, save_steps=1, report_to="none",
                   output_dir=str(tmp_path / "out")), **keys}


@pytest.mark.slow
def test_dpo_through_the_cli_saves_an_sft_like_adapter(tiny_model_dir, tmp_path, capsys):
    from peft import PeftModel

    cfg = write_yaml(tmp_path / "dpo.yaml", **_cli_keys(tiny_model_dir, tmp_path, "dpo", _pairs_file(tmp_path),
                                                          rl_beta=0.2, rpo_alpha=0.5))
    assert train_main([str(cfg)]) == 0
    out = tmp_path / "out"
    assert not (out / "ref").exists() and (out / "finished.json").exists()
    logged = {k for entry in json.loads((out / "train_metrics.json").read_text()) for k in entry}
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= logged
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert list(model.peft_config) == ["default"] and type(model.peft_config["default"]) is plugin.MoRConfig
    card = (out / "README.md").read_text()
    assert "| rl | `dpo` |" in card and "| rl_beta | `0.2` |" in card and "| rpo_alpha | `0.5` |" in card
    assert any(v.abs().sum() > 0 for k, v in adapter_weights(out).items() if "mor_B" in k)
    from plugin.plot import main as plot_main

    assert plot_main([str(out)]) == 0
    assert (out / "plots" / "rewards.png").read_bytes().startswith(b"\x89PNG")
    args = torch.load(out / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.beta, args.loss_type, args.loss_weights, args.bf16) == (0.2, ["sigmoid", "sft"], [1.0, 0.5], False)


def test_bad_preference_rows_are_dropped_and_counted_or_refused(tmp_path, capsys):
    good = preference_rows(4)
    same = {**good[0], "rejected": good[0]["chosen"]}
    empty = {**good[1], "chosen": [{"role": "assistant", "content": "  "}]}
    data = _pairs_file(tmp_path, [*good, same, empty])
    cfg = load_config(None, {"rl": "dpo", "datasets": [{"path": str(data)}]})
    train, held_out = load_preference_data(cfg)
    assert len(train) == 4 and held_out is None
    err = capsys.readouterr().err
    assert "dropped 1 of 6 rows with the chosen answer equal to the rejected one (rows 4)" in err
    assert "dropped 1 of 6 rows with an empty chosen or rejected answer (rows 5)" in err
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "Q", "chosen": "A"}])
    with pytest.raises(UserError, match="has no column 'rejected'"):
        load_preference_data(load_config(None, {"rl": "dpo", "datasets": [{"path": str(missing)}]}))


def test_axolotl_and_trl_row_formats_become_trl_rows(tmp_path):
    intel = write_jsonl(tmp_path / "intel.jsonl", [{"system": "Be brief.", "question": "Q?", "chosen": "yes",
                                                    "rejected": "no"}])
    ultra = write_jsonl(tmp_path / "ultra.jsonl", [{"prompt": "Q?", "chosen": [
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}], "rejected": [
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "no"}]}])
    argilla = write_jsonl(tmp_path / "argilla.jsonl", [{"chosen": [
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}], "rejected": [
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "no"}]}])
    text = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "Q?", "chosen": "yes", "rejected": "no"}])
    user, yes, no = ({"role": "user", "content": "Q?"}, [{"role": "assistant", "content": "yes"}],
                     [{"role": "assistant", "content": "no"}])
    for path, kind, prompt in [(intel, "chatml.intel", [{"role": "system", "content": "Be brief."}, user]),
                               (ultra, "llama3.ultra", [user]), (argilla, "chatml.argilla_chat", [user])]:
        rows = load_preference_data(load_config(None, {"rl": "dpo", "datasets": [{"path": str(path),
                                                                                  "type": kind}]}))[0]
        assert rows[0] == {"prompt": prompt, "chosen": yes, "rejected": no}, kind
    rows = load_preference_data(load_config(None, {"rl": "orpo", "datasets": [{"path": str(text)}]}))[0]
    assert rows[0] == {"prompt": "Q?", "chosen": "yes", "rejected": "no"}  # TRL's standard (text) format kept


def test_llamafactory_dpo_and_kto_examples_mean_what_upstream_means(monkeypatch):
    monkeypatch.chdir(LF)  # its dataset_dir default, data/, is beside the YAMLs
    dpo = load_config(LF / "qwen3_lora_dpo.yaml", {"finetuning_type": "mor"})
    assert (dpo.rl, dpo.rl_beta, dpo.adapter, dpo.datasets[0].type) == ("dpo", 0.1, "mor", "preference")
    rows, _ = load_preference_data(dpo)
    assert len(rows) == 20 and rows[0]["prompt"][-1]["role"] == "user" and rows[0]["chosen"][0]["role"] == "assistant"
    with pytest.raises(UserError, match="micro_batch_size: 2 or more"):  # TRL's KTO takes each KL answer from the batch
        load_config(LF / "qwen3_lora_kto.yaml", {"finetuning_type": "mor"})
    kto = load_config(LF / "qwen3_lora_kto.yaml", {"finetuning_type": "mor", "per_device_train_batch_size": 2})
    assert (kto.rl, kto.rl_beta, kto.datasets[0].type) == ("kto", 0.1, "kto")
    rows, _ = load_preference_data(kto)
    upstream = json.loads((LF / "data" / "kto_en_demo.json").read_text())
    assert [r["label"] for r in rows] == [r["label"] for r in upstream]
    assert rows[0]["completion"] == [{"role": "assistant", "content": upstream[0]["messages"][-1]["content"]}]


@pytest.mark.parametrize("keys,message", [
    ({"rl_beta": 0.1}, "rl_beta is set but rl is not"),
    ({"rl": "dpo", "orpo_alpha": 0.2}, "orpo_alpha is set but rl: dpo does not read it"),
    ({"rl": "kto", "micro_batch_size": 1}, "set micro_batch_size: 2 or more"),
    ({"rl": "grpo"}, "add trl: {reward_funcs"),
    ({"rl": "grpo", "trl": {"reward_funcs": ["m.f"], "use_vllm": True}}, "trl.use_vllm"),
    ({"rl": "grpo", "rl_beta": 0.1, "trl": {"reward_funcs": ["m.f"], "beta": 0.2}}, "are the same setting"),
    ({"stage": "ppo"}, "stage: ppo: sft, pt, dpo, kto and rm run here"),
    ({"stage": "rm", "eval": {"tasks": ["piqa"]}}, "rl: rm trains a reward model"),
    ({"stage": "dpo", "pref_loss": "hinge"}, "pref_loss: hinge: choose one of sigmoid, ipo, orpo, simpo"),
    ({"rl": "dpo", "datasets": [{"path": "d.jsonl", "type": "alpaca"}]}, "type: alpaca is not a format rl: dpo reads"),
    ({"datasets": [{"path": "d.jsonl", "type": "chatml.intel"}]}, "holds preference data, read by rl:"),
    ({"rl": "dpo", "datasets": [{"path": "d.jsonl", "type": "chatml.intell"}]}, "did you mean 'chatml.intel'?"),
    ({"datasets": [{"path": "d.jsonl", "type": "rewards.prompt_transform"}]},
     "a transform function (module.function) prepares rl: data"),
    ({"rl": "dpo", "datasets": [{"path": "d.jsonl", "type": "no_such_module.transform"}]},
     "datasets[].type: no_such_module.transform: cannot import no_such_module"),
    ({"rl": "grpo", "trl": {"reward_funcs": ["no_such_module.f"]}}, "trl.reward_funcs: no_such_module.f: cannot import"),
    ({"rl": "grpo", "trl": {"reward_funcs": ["plugin.training.rewards.exact_answer"], "advantage_estimator": "rloo",
                            "scale_rewards": "batch"}}, "trl.scale_rewards is GRPO's; advantage_estimator: rloo"),
    ({"rl": "grpo", "trl": {"reward_funcs": ["m.f"], "advantage_estimator": "reinforce_plus_plus"}},
     "trl.advantage_estimator must be 'grpo' or 'rloo'"),
    ({"rl": "grpo", "vllm": {"host": "0.0.0.0"}}, "generating with a vLLM server during training is not supported"),
])
def test_preference_config_mistakes_are_one_line(keys, message):
    with pytest.raises(UserError, match=re.escape(message)):
        cfg = load_config(None, {"datasets": [{"path": "d.jsonl"}], **keys})
        load_preference_data(cfg)  # the dataset types are checked where they are read


GRPO_EXAMPLE = AX / "grpo"  # Axolotl's examples/grpo: the YAML, its rewards.py, and GSM8K rows in its hub layout


def test_axolotl_grpo_transform_makes_the_rows_upstream_means(tiny_model_dir, monkeypatch, tmp_path, capsys):
    """Axolotl's examples/grpo/advantage_estimator.yaml, verbatim: refused in one line for its vLLM server (with the
    way out), and without it its own transform (rewards.prompt_transform, imported from the launch folder) makes
    GRPO's rows, each a system + user chat with the answer kept for the rewards, and RLOO's TRL config."""
    import yaml

    from plugin.training.preference import preference_arguments

    monkeypatch.chdir(GRPO_EXAMPLE)
    monkeypatch.syspath_prepend(str(GRPO_EXAMPLE))  # what python -m from this folder gives
    for published in ("advantage_estimator.yaml", AX / "grpo_code_r1_acecode.yaml"):  # the GRPO cookbook's too
        with pytest.raises(UserError, match="drop the vllm: section and trl.use_vllm"):
            load_config(published)
    keys = yaml.safe_load((GRPO_EXAMPLE / "advantage_estimator.yaml").read_text())
    with pytest.raises(UserError, match="unknown key 'truest_remote_code'; did you mean 'trust_remote_code'"):
        load_config(None, {**keys, "vllm": None})  # upstream's typo, which Axolotl passes over
    del keys["vllm"], keys["truest_remote_code"]
    keys["trl"]["use_vllm"] = False
    keys["datasets"][0].update(path="gsm8k_main_test_first8.jsonl", split="train")
    keys["base_model"] = str(tiny_model_dir)  # its tokenizer reaches the row function, which names one
    cfg = load_config(None, keys)
    assert "ignoring trl.vllm_server_host: it is read with use_vllm only" in capsys.readouterr().err
    rows, held_out = load_preference_data(cfg)
    upstream = [json.loads(line) for line in (GRPO_EXAMPLE / "gsm8k_main_test_first8.jsonl").read_text().splitlines()]
    assert held_out is None and sorted(rows.column_names) == ["answer", "prompt"]
    system = "Answer the question. Put the final answer in <answer></answer> tags."
    assert rows.to_list() == [{"prompt": [{"role": "system", "content": system},
                                          {"role": "user", "content": r["question"]}], "answer": r["answer"]}
                              for r in upstream]
    args = preference_arguments(cfg, False, use_cpu=True)
    assert type(args).__name__ == "RLOOConfig" and (args.num_generations, args.temperature) == (8, 0.7)
    assert type(preference_arguments(load_config(None, {**keys, "trl": {**keys["trl"], "advantage_estimator": "grpo"}}),
                                     False, use_cpu=True)).__name__ == "GRPOConfig"
    bad = write_jsonl(tmp_path / "no_question.jsonl", [{"query": "2 + 2?", "answer": "4"}])
    keys["datasets"][0]["path"] = str(bad)
    with pytest.raises(UserError, match="rewards.prompt_transform failed on its rows: KeyError"):
        load_preference_data(load_config(None, keys))


def _hub_rows_like(kind: str, pairs: list[dict]) -> list[dict]:
    """Local rows in the column layout of the hub dataset an upstream YAML names (its own data is not offline)."""
    if kind == "conversation":  # fozziethebeat/alpaca_messages_2k_dpo_test
        return [{"conversation": r["prompt"], "chosen": r["chosen"][0], "rejected": r["rejected"][0]} for r in pairs]
    if kind == "kto":  # argilla/ultrafeedback-binarized-preferences-cleaned-kto
        return [{"prompt": r["prompt"][0]["content"], "completion": r[k][0]["content"], "label": k == "chosen"}
                for r in pairs for k in ("chosen", "rejected")]
    return [{"prompt": r["prompt"][0]["content"], "chosen": r["prompt"] + r["chosen"],  # ...-preferences-cleaned
             "rejected": r["prompt"] + r["rejected"]} for r in pairs]


@pytest.mark.slow
def test_upstream_preference_yamls_train_two_steps(tiny_model_dir, tmp_path, monkeypatch):
    """LLaMA-Factory's DPO and KTO examples and Axolotl's DPO, KTO, ORPO and GRPO examples, verbatim but for the base
    model, the data's location (same layout), the adapter and a CPU-sized run (GRPO: without its vLLM server and
    upstream's misspelt key); each saves a loadable adapter."""
    from peft import PeftModel

    pairs = preference_rows(8)
    cpu = dict(max_steps=2, bf16=False, gradient_accumulation_steps=1, save_steps=1, sequence_len=256,
               load_in_4bit=False, load_in_8bit=False)
    lf = dict(model_name_or_path=str(tiny_model_dir), dataset_dir=str(LF / "data"), trust_remote_code=False,
              max_samples=8, per_device_train_batch_size=2)
    runs = {
        "lf_dpo": (LF / "qwen3_lora_dpo.yaml", dict(lf, finetuning_type="mor")),
        "lf_kto": (LF / "qwen3_lora_kto.yaml", dict(lf, finetuning_type="mplora")),
        "ax_dpo": (AX / "llama-3_instruct-dpo-lora-8b.yml", dict(conversation="conversation", val_set_size=0.25)),
        "ax_kto": (AX / "llama-3_qlora-1b-kto.yaml", dict(conversation="kto")),
        "ax_orpo": (AX / "mistral_orpo_mistral-qlora-orpo.yml", dict(conversation="argilla", val_set_size=0)),
        "ax_grpo": (GRPO_EXAMPLE / "advantage_estimator.yaml",  # RLOO; its generation batch: 2 x 4 = 8 completions
                    dict(conversation="gsm8k", adapter="mor", vllm=None, truest_remote_code=None,
                         attn_implementation=None, gradient_accumulation_steps=4)),
    }
    import yaml

    monkeypatch.chdir(GRPO_EXAMPLE)  # the GRPO example's transform and reward are imported from its folder
    monkeypatch.syspath_prepend(str(GRPO_EXAMPLE))

    for name, (path, changes) in runs.items():
        keys = yaml.safe_load(path.read_text())
        if "conversation" in changes:  # an Axolotl file: its dataset entry kept, pointed at local rows
            kind = changes.pop("conversation")
            rows = GRPO_EXAMPLE / "gsm8k_main_test_first8.jsonl" if kind == "gsm8k" else \
                write_jsonl(tmp_path / f"{name}.jsonl", _hub_rows_like(kind, pairs))
            keys["datasets"][0]["path"] = str(rows)
            keys["datasets"][0].pop("split", None)
            if kind == "gsm8k":
                keys["trl"].update(use_vllm=False, max_completion_length=8)
            changes = {"base_model": str(tiny_model_dir), "adapter": "loratrf", **cpu, "micro_batch_size": 2,
                       "special_tokens": None, **changes}
        else:
            changes = {**changes, "max_steps": 2, "bf16": False, "gradient_accumulation_steps": 1,
                       "cutoff_len": 256, "save_steps": 1}
        keys.update(changes, output_dir=str(tmp_path / name))
        keys = {k: v for k, v in keys.items() if v is not None or k == "special_tokens"}
        assert train_main([str(write_yaml(tmp_path / f"{name}.yaml", **keys))]) == 0, name
        out = tmp_path / name
        assert not (out / "ref").exists(), name
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
        assert list(model.peft_config) == ["default"], name
    metrics = json.loads((tmp_path / "ax_grpo" / "train_metrics.json").read_text())
    assert "rewards/format_reward/mean" in metrics[0]  # upstream's own reward scored the sampled completions


def test_preview_shows_each_answer_scored_and_the_prompt_not(tiny_model_dir, tmp_path, capsys):
    from plugin.data.preview import preview_data

    pairs = preference_rows(2)
    cfg = load_config(None, {"rl": "dpo", "base_model": str(tiny_model_dir),
                             "datasets": [{"path": str(_pairs_file(tmp_path, pairs))}]})
    preview_data(cfg, 1, as_json=True)
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["sequence"] for s in shown] == ["chosen", "rejected"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for sequence in shown:
        scored = [t for t, label in zip(sequence["input_ids"], sequence["labels"]) if label != -100]
        answer = pairs[0][sequence["sequence"]][0]["content"]
        assert tokenizer.decode(scored) == answer + "<|im_end|>\n"  # SmolLM2's template closes the turn so
        assert pairs[0]["prompt"][0]["content"] in tokenizer.decode(sequence["input_ids"])


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("name,one_process", [("ddp-dpo-mplora", {"micro_batch_size": 4}),
                                              ("zero3-dpo-mor", {"gradient_accumulation_steps": 2})])
def test_dpo_on_two_processes_matches_one(torchrun_launch, tmp_path, name, one_process):
    """DPO under DDP (MPLoRA, its orthogonality term on) and ZeRO-3 (MoR, its balance loss on) on 2 CPU processes
    equals one process on the same global batch (the reference forward, adapters off, included)."""
    from plugin.training.run import train

    assert torchrun_launch.rc(name) == 0, torchrun_launch.output(name)[-3000:]
    assert torchrun_launch.engine(name) == ("MULTI_CPU" if name.startswith("ddp") else "DEEPSPEED zero3")
    keys = {k: v for k, v in torchrun_launch.keys[name].items() if k != "deepspeed"}
    one = adapter_weights(train(load_config(None, {**keys, **one_process, "output_dir": str(tmp_path / "one")})))
    two = torchrun_launch.weights(name)
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_dpo_from_an_sft_adapter_continues_it_with_it_as_the_reference(base_cfg, tiny_model_dir, tmp_path):
    """SFT, then DPO with lora_model_dir: the starting adapter is the reference, so the first step's rewards are
    exactly 0 (the policy is the reference); the result is one adapter, loadable as an SFT run's."""
    from peft import PeftModel

    from plugin.training.run import train

    sft = train(load_config(None, {**base_cfg, "adapter": "mplora", "mplora_num_paths": 2}))
    assert any(v.abs().sum() > 0 for k, v in adapter_weights(sft).items() if "mplora_B" in k)  # not the base
    keys = {**_cli_keys(tiny_model_dir, tmp_path, "dpo", _pairs_file(tmp_path), lora_model_dir=str(sft)),
            "output_dir": str(tmp_path / "dpo")}
    keys.pop("adapter")
    out = train(load_config(None, keys))
    # the policy starts as the SFT adapter: with it as the reference, not the base, the first rewards are exactly 0
    first = next(row for row in json.loads((out / "train_metrics.json").read_text()) if "loss" in row)
    assert float(first["rewards/chosen"]) == 0 and float(first["rewards/rejected"]) == 0
    assert not (out / "ref").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert list(model.peft_config) == ["default"] and type(model.peft_config["default"]) is plugin.MPLoraConfig
    before, after = adapter_weights(sft), adapter_weights(out)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_reward_model_keys_of_both_tools(tmp_path):
    data = _pairs_file(tmp_path)
    for keys in ({"stage": "rm"}, {"reward_model": True}, {"rl": "rm"}):
        cfg = load_config(None, {"datasets": [{"path": str(data)}], **keys})
        assert cfg.rl == "rm" and load_preference_data(cfg)[0].column_names == ["prompt", "chosen", "rejected"]
    from plugin.config.peft_mapping import build_peft_config

    assert build_peft_config(cfg).task_type == "SEQ_CLS"  # the score head trains and is saved with the adapter


def test_shipped_verifiable_rewards():
    from plugin.training.rewards import chosen_option, exact_answer

    chat = [[{"role": "assistant", "content": "It is the Television."}]]
    assert chosen_option(chat, ["television"], [["radio", "television"]]) == [1.0]
    assert chosen_option(["radio or television"], ["television"], [["radio", "television"]]) == [0.0]  # both named
    assert chosen_option(["a radio"], ["television"], [["radio", "television"]]) == [0.0]
    assert exact_answer([" Television\n", "the television"], ["television", "television"]) == [1.0, 0.0]
