"""Named chat templates, as Axolotl's ``chat_template:`` and LLaMA-Factory's ``template:`` name them.

A name is never stored as the template itself: known names resolve to Jinja text (TRL's shipped templates where TRL
has the family, ours for chatml and LLaMA-2 / Mistral), Jinja text is taken as is, anything else is an error
listing the names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ..utils.errors import UserError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Meta's LLaMA-2 chat format (system folded into the first user turn); Mistral v1 is the same without <<SYS>>
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = none %}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] in ['user', 'system'] %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
OURS = {"chatml": CHATML, "llama2": LLAMA2, "mistral": MISTRAL}
# upstream names -> a template name here (Axolotl's and LLaMA-Factory's registries spell families differently)
ALIASES = {"llama-2": "llama2", "mistral_v1": "mistral", "qwen": "qwen2_5", "qwen2": "qwen2_5", "qwen25": "qwen2_5",
           "qwen3_nothink": "qwen3", "phi_3": "phi3", "phi": "phi3", "llama3_1": "llama3", "gemma2": "gemma"}
SPECIAL = ("tokenizer_default", "jinja")  # the tokenizer's own; Axolotl's chat_template_jinja text


@cache
def _trl_templates() -> dict[str, Path]:
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    return {p.stem: p for p in folder.glob("*.jinja") if not p.stem.endswith("_training")}


def known_names() -> list[str]:
    return sorted({*OURS, *ALIASES, *SPECIAL, *_trl_templates()})


def is_jinja(value: str) -> bool:
    return "{%" in value or "{{" in value


def check_name(value: str | None, jinja_text: str | None) -> None:
    """Fail early (at config time) on a name that is neither known nor Jinja."""
    if value is None or is_jinja(value):
        return
    if value == "jinja" and not jinja_text:
        raise UserError("chat_template: jinja needs the template text in chat_template_jinja")
    if value not in known_names():
        raise UserError(f"chat_template '{value}' is not a known template name; use one of "
                        f"{', '.join(known_names())}, tokenizer_default, or Jinja text")


def resolve(value: str | None, jinja_text: str | None = None) -> str | None:
    """The Jinja text for ``value``; None keeps the tokenizer's own template."""
    check_name(value, jinja_text)
    if value in (None, "tokenizer_default"):
        return None
    if value == "jinja":
        return jinja_text
    if is_jinja(value):
        return value
    name = ALIASES.get(value, value)
    return OURS[name] if name in OURS else _trl_templates()[name].read_text()
