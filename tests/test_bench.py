"""plugin.bench end to end on a tiny model: each method in its own process, rows as ratios to PEFT LoRA."""

import json

from plugin.bench import main as bench_main


def test_generation_rows_include_the_wide_lora_yardstick(tmp_path, capsys):
    out = tmp_path / "rows.json"
    args = ["--generate", "2", "--hidden", "64", "--layers", "1", "--vocab", "128", "--batch", "1", "--seq", "4",
            "--rank", "2", "--experts", "3", "--warmup", "0", "--steps", "1", "--methods", "lora,lora_wide",
            "--json", str(out)]
    assert bench_main(args) == 0
    rows = {row["method"]: row for row in json.loads(out.read_text())}
    # rank N*r: N times LoRA's trainable parameters
    assert rows["lora_wide"]["trainable"] == 3 * rows["lora"]["trainable"]
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
    assert "| lora_wide |" in capsys.readouterr().out
