"""Shared test fixtures' builders: a tiny LLaMA with a real chat tokenizer, small chat data."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo" / "commonsense_chat.jsonl"


def make_tiny_model_dir(path: Path, hidden_size: int = 32) -> Path:
    """A random-init 2-layer LLaMA saved with the embedded SmolLM2 tokenizer (it has a chat template)."""
    from plugin.models.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
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
