"""Every key the peers' own schemas declare is handled here: honoured, translated, handed to the Trainer, ignored with
a note, or refused with its reason in one line naming it — never "unknown key", never a crash.

The keys are read from the tools themselves: Axolotl 0.19's pydantic schema (in .venv-axolotl, as the integration
tests), LLaMA-Factory's argument dataclasses (its installed sources, parsed, not imported: its imports need its own
pinned stack) and transformers' Seq2SeqTrainingArguments, which LLaMA-Factory's arguments extend.
"""

import ast
import dataclasses
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from plugin.config import peer_keys
from plugin.config.loader import load_config
from plugin.utils.errors import UserError

from ..helpers import REPO

AXOLOTL_PYTHON = REPO / ".venv-axolotl" / "bin" / "python"
AXOLOTL_KEYS = """
import json
from axolotl.utils.schemas.config import AxolotlInputConfig
from axolotl.utils.schemas.datasets import SFTDataset
names = lambda model: sorted(f.alias or n for n, f in model.model_fields.items())
print(json.dumps({"top": names(AxolotlInputConfig), "dataset": names(SFTDataset)}))
"""
# a value that switches any key on: refusals must then speak, translations must check it
ON = True


def _axolotl_keys() -> dict:
    if not AXOLOTL_PYTHON.exists():
        pytest.skip("Axolotl not set up: run bash scripts/setup_axolotl.sh")
    out = subprocess.run([str(AXOLOTL_PYTHON), "-c", AXOLOTL_KEYS], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def _llamafactory_keys() -> set[str]:
    spec = importlib.util.find_spec("llamafactory")
    if spec is None:
        pytest.skip("llamafactory's sources are not installed (bash scripts/setup.sh installs them)")
    keys = set()
    for source in (Path(spec.submodule_search_locations[0]) / "hparams").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "dataclass"
                                                      for d in node.decorator_list):
                keys |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return keys


def _unhandled(keys, entry) -> list[str]:
    """The keys the loader calls unknown or crashes on, each with what it said."""
    wrong = []
    for key in sorted(keys):
        try:
            load_config(None, entry(key))
        except UserError as err:
            message = str(err)
            if message.startswith("unknown key") or key not in message:  # the user's spelling, not only ours
                wrong.append(f"{key}: {message}")
        except Exception as err:  # noqa: BLE001 - a crash is what this test looks for
            wrong.append(f"{key}: {type(err).__name__}: {err}")
    return wrong


def _top(key):
    return {"datasets": [{"path": "data.jsonl"}], key: ON}


def _dataset(key):
    return {"datasets": [{"path": "data.jsonl", key: ON}]}


@pytest.mark.slow
def test_every_axolotl_key_is_handled(capsys):
    keys = _axolotl_keys()
    assert len(keys["top"]) > 300 and len(keys["dataset"]) > 30  # the schema was read, not an empty shell
    assert _unhandled(keys["top"], _top) == []
    assert _unhandled(keys["dataset"], _dataset) == []


def test_every_llamafactory_and_trainer_key_is_handled(capsys):
    from transformers import Seq2SeqTrainingArguments

    keys = _llamafactory_keys()
    assert {"finetuning_type", "lora_rank", "cutoff_len", "pissa_init"} <= keys
    trainer = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}
    assert _unhandled(keys | trainer, _top) == []


def test_the_tables_do_not_overlap():
    tables = {"IGNORED": set(peer_keys.IGNORED), "REFUSED": set(peer_keys.REFUSED),
              "REFUSED_WHEN_ON": set(peer_keys.REFUSED_WHEN_ON), "TRANSLATED": set(peer_keys.TRANSLATED),
              "TRAINER_KEYS": peer_keys.TRAINER_KEYS}
    for a, keys_a in tables.items():
        for b, keys_b in tables.items():
            assert a == b or not keys_a & keys_b, (a, b, keys_a & keys_b)


def test_trainer_keys_reach_the_trainer_with_their_meaning():
    from plugin.training.run import training_arguments

    cfg = load_config(None, {"datasets": [{"path": "data.jsonl"}], "neftune_noise_alpha": 5, "save_strategy": "epoch",
                             "noisy_embedding_alpha": None, "lr_scheduler": "cosine", "cosine_min_lr_ratio": 0.1,
                             "lr_scheduler_kwargs": {"num_cycles": 0.5}, "label_smoothing_factor": 0.1})
    args = training_arguments(cfg, has_eval=False, use_cpu=True)
    assert args.neftune_noise_alpha == 5 and args.save_strategy == "epoch" and args.label_smoothing_factor == 0.1
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.1, "num_cycles": 0.5}


@pytest.mark.parametrize(("raw", "expected"), [
    ({"flash_attn": "fa2"}, {"attn_implementation": "flash_attention_2"}),
    ({"flash_attn": "auto"}, {"attn_implementation": None}),
    ({"eager_attention": True}, {"attn_implementation": "eager"}),
    ({"flex_attention": True}, {"attn_implementation": "flex_attention"}),
    ({"evaluation_strategy": "no"}, {"eval_strategy": "no"}),
    ({"disable_shuffling": True}, {"curriculum_sampling": True}),
    ({"train_on_prompt": True}, {"train_on_inputs": True}),
    ({"lora_rank_pattern": {"q_proj": 2}}, {"lora_rank_pattern": {"q_proj": 2}}),
    ({"context_parallel_size": 1, "dpo_beta": None, "use_dora": False}, {}),
])
def test_peer_spellings_take_their_meaning(raw, expected):
    cfg = load_config(None, {"datasets": [{"path": "data.jsonl"}], **raw})
    assert {key: getattr(cfg, key) for key in expected} == expected


@pytest.mark.parametrize(("raw", "names"), [
    ({"flash_attn": "fa9"}, "flash_attn: 'fa9': choose one of auto, disabled"),
    ({"use_dora": True}, "use_dora: True: this adapter kind"),
    ({"context_parallel_size": 2}, "context_parallel_size: 2: tensor, context and sequence parallelism"),
    ({"base_model_config": "other/model"}, "base_model_config: other/model: a model config from elsewhere"),
    ({"adapter_name_or_path": "saves/lora"}, "lora_model_dir (adapter_name_or_path): saves/lora holds no adapter_config"),
    ({"cutoff_len": "long"}, "cutoff_len (sequence_len) must be an integer"),
])
def test_peer_keys_refused_in_one_line(raw, names):
    with pytest.raises(UserError) as err:
        load_config(None, {"datasets": [{"path": "data.jsonl"}], **raw})
    assert str(err.value).startswith(names) and "\n" not in str(err.value)
