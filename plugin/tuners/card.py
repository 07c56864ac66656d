"""Sections of an adapter's model card (README.md): which method it is and how to load it; ``plugin.train`` adds
its training setup and scores (``plugin.training.card``).

PEFT's ``save_pretrained`` writes a card that names only PEFT and the base model; without ``import plugin`` such an
adapter fails to load (``KeyError: 'MOR'``). Our configs add the method section when they are saved (see
``LowRankConfig.save_pretrained``), after PEFT has written its card. A section sits between its own markers and is
replaced in place when written again; the rest of the card (the user's text, PEFT's metadata) is kept.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "plugin"  # the distribution and import name


def method_section(method: str, paper: str, base_model: str | None, merge_note: str) -> str:
    base = f" on `{base_model}`" if base_model else ""
    return f"""## {method} adapter

A **{method}** adapter ({paper}){base}. PEFT alone does not know this method: install the `{PACKAGE}` package and
import it before loading (without it PEFT raises `KeyError: '{method.upper()}'`).

```bash
pip install {PACKAGE}
```

```python
import {PACKAGE}  # registers MPLoRA, MoR and LoRATRF with PEFT
from peft import AutoPeftModelForCausalLM

model = AutoPeftModelForCausalLM.from_pretrained("<this folder or repo>")
```

Merging: {merge_note}
"""


def add_section(folder: str | Path, name: str, text: str, tags: list[str] = (), base_model: str | None = None,
                first: bool = False) -> None:
    """Put ``text`` as section ``name`` of ``folder``/README.md (created with PEFT's metadata when missing): in place
    of the section's earlier text, else at the top (``first``) or the end; ``tags`` are added to the metadata."""
    from huggingface_hub import ModelCard, ModelCardData

    path = Path(folder) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard.from_template(ModelCardData(library_name="peft"))
    card.data.tags = sorted(set(card.data.tags or []) | set(tags))
    if base_model and not card.data.base_model:
        card.data.base_model = base_model
    start, end = f"<!-- plugin:{name} -->", f"<!-- /plugin:{name} -->"
    block = f"{start}\n{text.strip()}\n{end}"
    if start in card.text and end in card.text:
        before, rest = card.text.split(start, 1)
        card.text = before + block + rest.split(end, 1)[1]
    else:
        card.text = f"{block}\n\n{card.text}" if first else f"{card.text.rstrip()}\n\n{block}\n"
    card.save(path)
