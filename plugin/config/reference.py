"""The configuration reference, read off the declarations: ``python -m plugin.train --help`` lists every key by
section, and ``python -m plugin.train --config-reference`` prints ``docs/configuration.md``."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING

from ..tuners import METHODS
from .loader import type_name
from .method_keys import method_keys
from .schema import ALIASES, SECTIONS, DatasetSpec, EvalSpec, TrainConfig, TrlSpec, yaml_fields


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    section: str
    key: str
    type: str
    default: str
    alias: str
    help: str


def _default(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        return "unset" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
    if f.default_factory is not MISSING:
        return str(f.default_factory()) if f.default_factory() else "[]"
    return "required"


def _docs(cls: type, prefix: str = "") -> list[KeyDoc]:
    hints = typing.get_type_hints(cls)
    aliases: dict[str, list[str]] = {}
    for alias, key in ALIASES.items():
        aliases.setdefault(key, []).append(alias)
    return [KeyDoc(f.metadata["section"], prefix + f.name, type_name(hints[f.name]), _default(f),
                   ", ".join(aliases.get(f.name, [])) if not prefix else "", f.metadata["help"])
            for f in yaml_fields(cls)]


def key_docs() -> list[KeyDoc]:
    """Every key, in section order: the schema's, each method's derived keys, dataset and eval entries."""
    derived = [KeyDoc("method", key, type_name(spec.type), "unset" if spec.default is None else str(spec.default), "",
                      f"{spec.method}: {spec.help}") for key, spec in method_keys().items()]
    everything = (_docs(TrainConfig) + derived + _docs(DatasetSpec, "datasets[].") + _docs(EvalSpec, "eval.")
                  + _docs(TrlSpec, "trl."))
    return sorted(everything, key=lambda doc: SECTIONS.index(doc.section))  # stable: declaration order kept


def help_text() -> str:
    """The keys for ``--help``: one line each, grouped by section, meaning then default, alias beside the key."""
    docs = key_docs()
    width = 36
    lines = ["configuration keys (in the YAML, or --key value on the command line; LLaMA-Factory aliases in "
             "brackets):"]
    for section in SECTIONS:
        lines.append(f"\n{section}:")
        for d in (d for d in docs if d.section == section):
            name = d.key + (f" ({d.alias})" if d.alias else "")
            lines.append(f"  {name:<{width - 2}}  {d.help} [default: {d.default}]")
    return "\n".join(lines)


def markdown() -> str:
    """docs/configuration.md."""
    out = ["# Configuration reference", "",
           "Generated from the declarations in `plugin/config/schema.py` and the tuners' configs by "
           "`python -m plugin.train --config-reference > docs/configuration.md`; a test fails when this page is "
           "stale. Keys follow Axolotl; the LLaMA-Factory names in the alias column are accepted too. Method keys are "
           f"derived from each method's config ({', '.join(f'`{name}`' for name in METHODS)}): "
           "`<method>_<field>`.", ""]
    docs = key_docs()
    for section in SECTIONS:
        out += [f"## {section}", "", "| key | type | default | alias | meaning |", "|---|---|---|---|---|"]
        out += [f"| `{d.key}` | {d.type} | `{d.default}` | {d.alias} | {d.help} |"
                for d in docs if d.section == section]
        out.append("")
    return "\n".join(out)
