"""plugin.bench end to end on a tiny model: rows as ratios to PEFT LoRA, in rounds; bad arguments as one line."""

import json

import pytest

from plugin.bench import main as bench_main
# two new tokens from 4-token prompts on a one-layer model: the cheapest generation run
TINY_GENERATION = ["--generate", "2", "--hidden", "64", "--layers", "1", "--vocab", "128", "--seq", "4", "--rank", "2",
                   "--warmup", "0", "--steps", "1"]


@pytest.mark.slow
def test_generation_rounds_in_one_process_include_the_wide_lora_yardstick(tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = [*TINY_GENERATION, "--batch", "1", "--experts", "3", "--methods", "lora,lora_wide", "--repeats", "2",
            "--json", str(out)]
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["round"]) for r in rows] == [("lora", 0), ("lora_wide", 0), ("lora", 1), ("lora_wide", 1)]
    lora, wide = rows[0], rows[1]
    # rank N*r: N times LoRA's trainable parameters
    assert wide["trainable"] == 3 * lora["trainable"]
    assert all(row["tokens_per_s"] > 0 for row in rows)
    assert "| lora_wide |" in capsys.readouterr().out


@pytest.mark.slow
def test_mixed_generation_spreads_the_batch_over_k_adapters(tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = [*TINY_GENERATION, "--batch", "4", "--experts", "2", "--methods", "lora,mor,loratrf", "--mixed", "3",
            "--json", str(out)]
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["lora", "mor", "loratrf"]
    assert all(row["tokens_per_s"] > 0 for row in rows) and "| mor |" in capsys.readouterr().out


@pytest.mark.slow
def test_repeats_run_in_rounds_and_ratios_pair_each_round(tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = ["--layer_only", "--hidden", "32", "--batch", "1", "--seq", "4", "--rank", "2", "--experts", "2",
            "--warmup", "0", "--steps", "1", "--methods", "lora,mor", "--repeats", "2", "--json", str(out)]
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["round"]) for r in rows] == [("lora", 0), ("mor", 0), ("lora", 1), ("mor", 1)]
    per_round = sorted(rows[i + 1]["step_s"] / rows[i]["step_s"] for i in (0, 2))
    mor_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| mor |"))
    # the time ratio cell: median of the two rounds' ratios, then their range
    median = (per_round[0] + per_round[1]) / 2
    assert f"| {median:.2f}x ({per_round[0]:.2f}-{per_round[1]:.2f}) |" in mor_line


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo"])  # --rl grpo differs only in the trainer's config (tests/training: GRPO)
def test_rl_step_of_each_method_against_lora(tmp_path, capsys, stage):
    """One optimiser step of the package's DPO trainer per method, in its own process, as a ratio to LoRA."""
    out = tmp_path / "rows.json"
    args = ["--rl", stage, "--methods", "lora,mor", "--hidden", "32", "--layers", "1", "--batch", "2", "--seq", "8",
            "--warmup", "0", "--steps", "1", "--json", str(out)]
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["lora", "mor"] and all(r["step_s"] > 0 for r in rows)
    assert rows[1]["trainable"] > rows[0]["trainable"]  # MoR's experts and router on top of the same targets
    shown = capsys.readouterr().out
    assert f"one {stage} step of the package's TRL trainer" in shown and "| mor |" in shown


@pytest.mark.parametrize("argv, message", [
    (["--methods", "mor,loratrf"], "name lora (the yardstick) and each method once"),
    (["--methods", "lora,mor,lora"], "name lora (the yardstick) and each method once"),
    (["--targets", "up_proj,c_fc"], "--targets: 'c_fc' is not a layer of the benchmark's LLaMA blocks"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--mixed", "2"], "--mixed 2: K adapters in one generated batch needs --generate"),
    (["--generate", "2", "--batch", "2", "--mixed", "3"], "1 <= K <= --batch (2)"),
    (["--rl", "dpo", "--generate", "4"], "--rl dpo times the trainer's whole step on one process"),
])
def test_bad_arguments_stop_with_one_line_before_any_process_starts(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
