"""plugin.bench end to end on a tiny model: each method in its own process, rows as ratios to PEFT LoRA."""

import json

from plugin.bench import main as bench_main


def test_generation_rounds_in_one_process_include_the_wide_lora_yardstick(tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = ["--generate", "2", "--hidden", "64", "--layers", "1", "--vocab", "128", "--batch", "1", "--seq", "4",
            "--rank", "2", "--experts", "3", "--warmup", "0", "--steps", "1", "--methods", "lora,lora_wide",
            "--repeats", "2", "--json", str(out)]
    assert bench_main(args) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["round"]) for r in rows] == [("lora", 0), ("lora_wide", 0), ("lora", 1), ("lora_wide", 1)]
    lora, wide = rows[0], rows[1]
    # rank N*r: N times LoRA's trainable parameters
    assert wide["trainable"] == 3 * lora["trainable"]
    assert all(row["tokens_per_s"] > 0 for row in rows)
    assert "| lora_wide |" in capsys.readouterr().out


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


def test_methods_must_name_lora_once(capsys):
    from plugin.bench import main

    for methods in ("mor,loratrf", "lora,mor,lora"):
        try:
            main(["--methods", methods])
        except SystemExit as stop:
            assert stop.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "name lora (the yardstick) and each method once" in err[0]
