"""The training CLI end to end on a tiny model: each adapter, gradient accumulation, resume, 4-bit, 2 processes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import plugin
from plugin.config import load_config
from plugin.training.run import train

from ..helpers import REPO, adapter_weights, read_json, write_yaml
from ..launches import DS_METHODS, deepspeed_runs_zero2, free_port, launch_env


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["lora", "mplora", "mor", "loratrf"])
def test_each_adapter_trains_saves_and_reloads(base_cfg, tmp_path, adapter):
    extra = {"mplora": {"mplora_num_paths": 2, "mplora_orth_weight": 1.0},
             "mor": {"mor_num_experts": 3, "mor_router_aux_loss_coef": 0.01},
             "loratrf": {"loratrf_mode": "input"}}.get(adapter, {})
    cfg = load_config(None, {**base_cfg, "adapter": adapter, **extra})
    out = train(cfg)
    saved = read_json(out / "adapter_config.json")
    assert saved["peft_type"] == {"lora": "LORA", "mplora": "MPLORA", "mor": "MOR", "loratrf": "LORATRF"}[adapter]
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["adapter"] == adapter
    logged = {k for entry in read_json(out / "train_metrics.json") for k in entry}
    if adapter == "mplora":
        assert "orth_loss" in logged
    if adapter == "mor":
        assert "router_balance_loss" in logged
    # the adapter trained: B moved away from its zero init
    assert any(v.abs().sum() > 0 for k, v in adapter_weights(out).items() if "_B" in k)
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg.base_model), out)
    expected_cls = plugin.tuners.METHODS[adapter][0] if adapter != "lora" else LoraConfig
    assert type(model.peft_config["default"]) is expected_cls


def _sgd_run(base_cfg, tmp_path, name, **keys):
    cfg = {**base_cfg, "optimizer": "sgd", "lr_scheduler": "constant", "max_grad_norm": 0.0, "learning_rate": 0.5,
           "output_dir": str(tmp_path / name), "save_steps": 100, **keys}
    return adapter_weights(train(load_config(None, cfg)))


@pytest.mark.slow
@pytest.mark.parametrize("adapter,extra,aux_key", [
    ("mplora", {"mplora_num_paths": 4, "mplora_orth_weight": 5.0}, "mplora_orth_weight"),
    # MoR's balance loss is a per-micro-batch statistic (as in Switch/Mixtral and TRL), so GA changes it by
    # design; with it off, the router and experts still get exactly the big-batch gradients
    ("mor", {"mor_num_experts": 3}, None),
])
def test_gradient_accumulation_matches_bigger_micro_batch(base_cfg, tmp_path, adapter, extra, aux_key):
    keys = {**base_cfg, "adapter": adapter, "max_steps": 2, **extra}
    big = _sgd_run(keys, tmp_path, "ga1", micro_batch_size=4, gradient_accumulation_steps=1)
    acc = _sgd_run(keys, tmp_path, "ga2", micro_batch_size=2, gradient_accumulation_steps=2)
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=1e-4, atol=1e-6)
    if aux_key:  # the auxiliary loss really entered the update (else the comparison proves little about it)
        no_aux = _sgd_run({**keys, aux_key: 0.0}, tmp_path, "noaux", micro_batch_size=4)
        assert any(not torch.allclose(big[k], no_aux[k], atol=1e-7) for k in big)


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(base_cfg, tmp_path, capsys):
    """A run killed (SIGKILL, no chance to clean up) after checkpoint-4 resumes from it: the same command, run again
    (in-process here: the entry point is the killed process), ends with the uninterrupted run's adapter."""
    from plugin.train import main as train_main

    keys = {**base_cfg, "adapter": "mor", "max_steps": 12, "save_steps": 2, "micro_batch_size": 2}
    cfg_file = write_yaml(tmp_path / "cfg.yaml", **{**keys, "output_dir": str(tmp_path / "killed")})
    cmd = [sys.executable, "-m", "plugin.train", str(cfg_file)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while not (tmp_path / "killed" / "checkpoint-4").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "adapter_config.json").exists(), "run finished before it could be killed"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run (OMP_NUM_THREADS=1): the same summation order, step after step
    try:
        full = train(load_config(None, {**keys, "output_dir": str(tmp_path / "full")}))
        capsys.readouterr()
        assert train_main([str(cfg_file)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "resuming from" in capsys.readouterr().out
    resumed, uninterrupted = adapter_weights(tmp_path / "killed"), adapter_weights(full)
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-5, atol=1e-6)
    # a finished run is not overwritten by the same command
    with pytest.raises(SystemExit) as again:
        train_main([str(cfg_file)])
    assert again.value.code == 2 and "already holds a finished run" in capsys.readouterr().err


def test_4bit_backbone_through_the_cli(base_cfg):
    out = train(load_config(None, {**base_cfg, "adapter": "mplora", "mplora_num_paths": 2, "load_in_4bit": True}))
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(torchrun_launch, tmp_path):
    """DDP under torchrun (2 processes, micro-batch 2, MPLoRA with its orthogonality term on) equals one process with
    micro-batch 4."""
    keys = torchrun_launch.keys["ddp-mplora"]
    assert torchrun_launch.rc("ddp-mplora") == 0, torchrun_launch.output("ddp-mplora")[-3000:]
    assert torchrun_launch.engine("ddp-mplora") == "MULTI_CPU"
    one = adapter_weights(train(load_config(None, {**keys, "micro_batch_size": 4, "output_dir": str(tmp_path / "one")})))
    two = torchrun_launch.weights("ddp-mplora")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_nodes_match_one_process(base_cfg, tmp_path):
    """A 2-node x 1-process job on this machine, as a multi-machine launch runs it: two torchrun processes with
    --nnodes 2 and --node_rank 0 / 1 meeting through c10d rendezvous on 127.0.0.1; one step equals one process."""
    keys = {**base_cfg, "optimizer": "sgd", "lr_scheduler": "constant", "max_grad_norm": 0.0, "learning_rate": 0.5,
            "max_steps": 1, "save_steps": 100, "adapter": "mor", "mor_num_experts": 3}
    one = adapter_weights(train(load_config(None, {**keys, "micro_batch_size": 4, "output_dir": str(tmp_path / "one")})))
    port = free_port()
    cfg_file = write_yaml(tmp_path / "nodes.yaml", **{**keys, "micro_batch_size": 2, "output_dir": str(tmp_path / "two")})
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
         str(rank), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "plugin-test",
         "-m", "plugin.train", str(cfg_file)],
        cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    two = adapter_weights(tmp_path / "two")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


AXOLOTL_ZERO3 = REPO / "tests" / "fixtures" / "peer_configs" / "axolotl" / "deepspeed_configs_zero3.json"


@pytest.mark.multiprocess
@pytest.mark.slow
def test_deepspeed_zero3_through_accelerate_matches_one_process(base_cfg, tmp_path):
    """The user's command with the shipped config: accelerate launch --config_file
    configs/accelerate/deepspeed_zero3.yaml --deepspeed_config_file <Axolotl's published zero3.json, verbatim> -m
    plugin.train (real DeepSpeed ZeRO-3, 2 CPU processes). The reference runs the same micro-batches in one process
    with gradient accumulation (MoR's balance loss is per micro-batch). The YAML's deepspeed: key is tested below
    for every method and stage."""
    pytest.importorskip("deepspeed")
    ds_json = AXOLOTL_ZERO3
    # DeepSpeed accepts only its tested optimizers with that file (AdamW)
    keys = {**base_cfg, "lr_scheduler": "constant", "max_grad_norm": 0.0, "max_steps": 2, "save_steps": 100,
            "adapter": "mor", "micro_batch_size": 2, "mor_num_experts": 3, "mor_router_aux_loss_coef": 1.0,
            "optimizer": "adamw_torch", "learning_rate": 0.01}
    one = adapter_weights(train(load_config(None, {**keys, "gradient_accumulation_steps": 2,
                                                   "output_dir": str(tmp_path / "one")})))
    cfg_file = write_yaml(tmp_path / "zero3.yaml", **{**keys, "output_dir": str(tmp_path / "zero3")})
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml"), "--main_process_port", str(free_port()),
         *(["--deepspeed_config_file", str(ds_json)] if ds_json else []), "-m", "plugin.train", str(cfg_file)],
        cwd=REPO, env=launch_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    zero3 = adapter_weights(tmp_path / "zero3")
    assert zero3.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(zero3[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("adapter", list(DS_METHODS))
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_key_in_the_yaml_under_torchrun_matches_one_process(torchrun_launch, tmp_path, stage, adapter):
    """`deepspeed: examples/deepspeed/ds_z{2,3}_config.json` as LLaMA-Factory's examples write it, launched with plain
    torchrun on 2 CPU processes: the shipped copies stand in (not in the working directory), the Trainer fills their
    "auto" values, and the adapter equals one process running the same micro-batches with gradient accumulation."""
    if stage == 2 and not deepspeed_runs_zero2():
        pytest.skip(deepspeed_runs_zero2.__doc__)
    name, ds_file = f"zero{stage}-{adapter}", f"examples/deepspeed/ds_z{stage}_config.json"
    output = torchrun_launch.output(name)
    assert torchrun_launch.rc(name) == 0, output[-3000:]
    assert f"note: deepspeed: {ds_file} is not in {torchrun_launch.root / 'ds_cwd'}; using the copy of it this " \
           "package ships" in output
    assert torchrun_launch.engine(name) == f"DEEPSPEED zero{stage}"  # the engine really ran
    keys = {k: v for k, v in torchrun_launch.keys[name].items() if k != "deepspeed"}
    one = adapter_weights(train(load_config(None, {**keys, "gradient_accumulation_steps": 2,
                                                   "output_dir": str(tmp_path / "one")})))
    two = torchrun_launch.weights(name)
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_sample_packing_and_alpaca_data(base_cfg, tmp_path):
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(
        f'{{"instruction": "Add {i} and {i}.", "input": "", "output": "{2 * i}"}}\n' for i in range(12)))
    out = train(load_config(None, {**base_cfg, "sample_packing": True,
                                   "datasets": [{"path": str(alpaca), "type": "alpaca"}]}))
    assert (out / "adapter_model.safetensors").is_file()
    assert read_json(out / "run_summary.json")["steps"] == 2


@pytest.mark.slow
def test_activation_offload_trains_exactly_like_checkpointing(base_cfg, tmp_path, monkeypatch):
    """Axolotl's gradient_checkpointing: offload: the saved activations really go through save_on_cpu, and the
    update is the same as with plain checkpointing."""
    entered = []
    real = torch.autograd.graph.save_on_cpu

    def spy(*args, **kwargs):
        entered.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", spy)
    keys = {**base_cfg, "adapter": "mor", "max_steps": 2}
    plain = _sgd_run(keys, tmp_path, "plain", gradient_checkpointing=True)
    assert not entered
    offload = _sgd_run(keys, tmp_path, "offload", gradient_checkpointing="offload")
    assert len(entered) == 2  # one per training step
    for key in plain:
        torch.testing.assert_close(offload[key], plain[key])
