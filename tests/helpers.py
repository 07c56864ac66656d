"""What the tests share: the one builder of tiny models, the per-method config table, small data."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

import plugin

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo" / "commonsense_chat.jsonl"
FIXTURES_DIR = REPO / "tests" / "fixtures"  # upstream files kept verbatim, with their sources (README.md there)
# bitsandbytes 0.50.2 on AVX512-BF16 CPUs repacks 4-bit weights in eval mode and fails below 64 input features
# (docs/training.md): every model that may load in 4 bits is at least this wide
QUANTIZABLE_WIDTH = 64
TINY_LLAMA = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=70,  # 70 is not divisible by 4 or 8: unequal MPLoRA blocks get exercised
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
# per method, the config the tests share: small, and with every parameter non-zero so that each one acts
METHOD_CONFIGS = {
    "lora": lambda **kw: LoraConfig(**{"r": 4, "init_lora_weights": False, **kw}),
    "mplora": lambda **kw: plugin.MPLoraConfig(**{"r": 4, "num_paths": 3, "init_weights": False, **kw}),
    "mor": lambda **kw: plugin.MoRConfig(**{"r": 4, "num_experts": 3, "init_weights": False, **kw}),
    "loratrf_output": lambda **kw: plugin.LoRATRFConfig(**{"r": 4, "init_weights": False, **kw}),
    "loratrf_input": lambda **kw: plugin.LoRATRFConfig(**{"r": 4, "trf_mode": "input", "init_weights": False, **kw}),
}


def save_adapters(model_dir, root: Path, configs: dict) -> Path:
    """One adapter per ``configs`` entry (name -> config factory) on the model saved at ``model_dir``, each saved in
    ``root / name`` with its own seed (its index), so the adapters differ."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    for seed, (name, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config()).save_pretrained(root / name)
    return root


def method_config(name: str, **overrides):
    """``METHOD_CONFIGS[name]`` with some fields changed, e.g. ``method_config("mor", num_experts=5)``."""
    return METHOD_CONFIGS[name](**overrides)


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A random-init LLaMA, 32 wide unless ``overrides`` say otherwise (``TINY_LLAMA``), in eval mode."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).eval()


def make_tiny_model_dir(path: Path, hidden_size: int = QUANTIZABLE_WIDTH) -> Path:
    """A random-init 2-layer LLaMA saved with the embedded SmolLM2 tokenizer (it has a chat template); wide enough
    to load in 4 bits on every CPU."""
    from plugin.models.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    tiny_llama(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
               max_position_embeddings=512, tie_word_embeddings=True).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_bert_dir(path: Path) -> Path:
    """A random-init 2-layer BERT with the embedded encoder's tokenizer (BERT's uncased WordPiece vocabulary)."""
    from transformers import BertConfig, BertModel

    from plugin.models.embedded import embedded_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_encoder_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_chat_rows(path: Path, n: int) -> Path:
    rows = DEMO_DATA.read_text().splitlines()[:n]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_yaml(path: Path, **keys) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(keys))
    return path


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def one_error_line(capsys, call) -> str:
    """Run a command's ``main``: it must exit 2 with one ``error:`` line last on stderr and no traceback."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def preference_rows(n: int) -> list[dict]:
    """TRL's conversational preference rows from the bundled commonsense chats: the right option chosen, the first
    wrong option listed in the question rejected."""
    import json

    rows = []
    for line in DEMO_DATA.read_text().splitlines()[:n]:
        user, answer = json.loads(line)["messages"]
        options = [o[2:] for o in user["content"].splitlines() if o.startswith("- ")]
        wrong = next(o for o in options if o != answer["content"])
        rows.append({"prompt": [user], "chosen": [answer], "rejected": [{"role": "assistant", "content": wrong}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
