"""LLaMA-Factory's dataset registry: ``dataset: identity,alpaca_en_demo`` names entries of
``<dataset_dir>/dataset_info.json`` (default ``data``), each a file or hub id with its formatting (alpaca or
sharegpt), column names and role tags. Each entry becomes one of our ``datasets:`` specs with the same meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import UserError

# LLaMA-Factory's defaults (its data/README.md)
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


def _entry_spec(name: str, entry: dict, dataset_dir: Path, as_text: bool) -> dict:
    if "file_name" in entry:
        path = dataset_dir / entry["file_name"]
        if not path.exists():
            raise UserError(f"dataset '{name}': {path} (from {dataset_dir / 'dataset_info.json'}) not found")
        spec: dict = {"path": str(path)}
    elif "hf_hub_url" in entry:
        spec = {"path": entry["hf_hub_url"], "split": entry.get("split", "train")}
        if entry.get("subset"):
            spec["name"] = entry["subset"]
    else:
        raise UserError(f"dataset '{name}' in {dataset_dir / 'dataset_info.json'} has neither file_name nor "
                        "hf_hub_url; only those two sources are supported")
    columns = entry.get("columns", {})
    media = [c for c in ("images", "videos", "audios") if c in columns]
    if media:
        raise UserError(f"dataset '{name}' has {media[0]}: vision and audio training is not supported, plugin.train "
                        "trains causal language models on text")
    if as_text:  # stage: pt reads each row's prompt column as plain text (LLaMA-Factory's pretrain processor)
        if entry.get("formatting", "alpaca") != "alpaca" or "prompt" not in columns or "query" in columns:
            raise UserError(f"dataset '{name}': stage: pt reads one text column, named by columns: {{prompt: COLUMN}} "
                            "in dataset_info.json (as c4_demo does); use chat and instruction data with stage: sft")
        spec.update(type="text", field=columns["prompt"])
        return spec
    if entry.get("ranking") or "kto_tag" in columns:  # preference pairs (stage: dpo) or KTO's tagged answers
        return _preference_spec(spec, entry, columns)
    if entry.get("formatting", "alpaca") == "alpaca":
        mapped = {**ALPACA_COLUMNS, **columns}
        spec.update(type="alpaca", field_instruction=mapped["prompt"], field_input=mapped["query"],
                    field_output=mapped["response"], field_system=mapped.get("system"),
                    field_history=mapped.get("history"))
        return spec
    spec.update(type="sharegpt", field_messages=columns.get("messages", "conversations"), **_sharegpt_roles(entry))
    return spec


def _sharegpt_roles(entry: dict) -> dict:
    tags = {**SHAREGPT_TAGS, **entry.get("tags", {})}
    return dict(message_property_mappings={"role": tags["role_tag"], "content": tags["content_tag"]},
                roles={"user": [tags["user_tag"]], "assistant": [tags["assistant_tag"], tags["function_tag"]],
                       "tool": [tags["observation_tag"]], "system": [tags["system_tag"]]})


def _preference_spec(spec: dict, entry: dict, columns: dict) -> dict:
    """``ranking: true`` rows (a prompt, a chosen and a rejected answer) as type preference; a ``kto_tag`` column's
    rows (a chat ending in the answer, and whether it is good) as type kto."""
    kto = "kto_tag" in columns
    spec["type"] = "kto" if kto else "preference"
    if kto:
        spec["field_label"] = columns["kto_tag"]
    if entry.get("formatting", "alpaca") == "alpaca":
        mapped = {**ALPACA_COLUMNS, **columns}
        spec.update(field_prompt=mapped["prompt"], field_input=mapped["query"], field_system=mapped.get("system"))
        if kto:
            spec["field_completion"] = mapped["response"]
    else:
        spec.update(field_prompt=columns.get("messages", "conversations"), **_sharegpt_roles(entry))
    if not kto:
        spec.update(field_chosen=columns.get("chosen", "chosen"), field_rejected=columns.get("rejected", "rejected"))
    return spec


def registry_datasets(names, dataset_dir: str, as_text: bool = False) -> list[dict]:
    """``dataset: a,b`` -> our ``datasets:`` entries, read from ``dataset_dir/dataset_info.json``; ``as_text``
    (``stage: pt``) reads them as plain text."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if str(n).strip()]
    info_file = Path(dataset_dir) / "dataset_info.json"
    if not info_file.is_file():
        raise UserError(f"dataset: {', '.join(wanted)} names entries of {info_file}, which does not exist; set "
                        "dataset_dir to the folder holding LLaMA-Factory's dataset_info.json, or use datasets:")
    try:
        info = json.loads(info_file.read_text())
    except ValueError as err:
        raise UserError(f"{info_file} is not valid JSON: {err}") from None
    unknown = [n for n in wanted if n not in info]
    if unknown:
        raise UserError(f"dataset '{unknown[0]}' is not in {info_file}")
    return [_entry_spec(name, info[name], info_file.parent, as_text) for name in wanted]
