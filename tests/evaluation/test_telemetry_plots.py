"""Router / orthogonality telemetry written during training, and the plots drawn from it."""

import json
import math

import pytest

from plugin.config import load_config
from plugin.plot import main as plot_main
from plugin.training.run import train

from ..helpers import read_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(out):
    return [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]


@pytest.fixture
def mor_run(base_cfg):
    return train(load_config(None, {**base_cfg, "adapter": "mor", "mor_num_experts": 4, "max_steps": 3}))


@pytest.mark.slow
def test_mor_router_telemetry_per_layer(mor_run):
    rows = _rows(mor_run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert len(row["router_mean"]) == 2 * 3  # 2 blocks x gate/up/down
        for weights in row["router_mean"].values():
            assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=1e-4)
        for entropy in row["router_entropy"].values():
            assert 0 < entropy <= math.log(4) + 1e-6
    logged = [e for e in read_json(mor_run / "train_metrics.json") if "router_entropy_mean" in e]
    assert len(logged) == 3


@pytest.mark.slow
def test_mplora_orthogonality_per_layer_adds_up_to_the_logged_loss(base_cfg):
    out = train(load_config(None, {**base_cfg, "adapter": "mplora", "mplora_num_paths": 4, "max_steps": 3,
                                   "learning_rate": 0.05}))
    rows = _rows(out)
    logged = {e["step"]: e["orth_loss"] for e in read_json(out / "train_metrics.json") if "orth_loss" in e}
    assert len(rows[-1]["orth_loss"]) == 2 * 2  # q_proj, v_proj in 2 blocks
    # both hold the loss of each step's training forward (computed there, where sharding engines have B in full)
    assert len(rows) == len(logged) == 3
    for row, step in zip(rows, sorted(logged)):
        assert sum(row["orth_loss"].values()) == pytest.approx(logged[step], rel=1e-4, abs=1e-9)
    assert sum(rows[-1]["orth_loss"].values()) > 0


@pytest.mark.slow
def test_plots_are_drawn(mor_run, tmp_path, capsys):
    assert plot_main([str(mor_run), "--output", str(tmp_path / "plots"), "--num_texts", "4", "--layer", "up_proj"]) == 0
    for name in ("router_weights.png", "router_entropy.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert "router_weights.png" in capsys.readouterr().out


def test_plot_errors(tmp_path, capsys):
    for argv, message in [([str(tmp_path / "none")], "output folder not found"),
                          ([str(tmp_path)], "has no telemetry.jsonl")]:
        with pytest.raises(SystemExit) as exit_info:
            plot_main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
