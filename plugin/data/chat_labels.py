"""A conversation -> ``input_ids`` and ``labels`` with every trained turn's tokens, whatever the chat template.

Each turn is located by rendering the conversation up to it with the tokenizer's own chat template (the way
Axolotl's ``chat_template`` strategy does), so no ``{% generation %}`` tags are needed: the text of turn ``i`` is
what ``render(messages[:i + 1])`` adds to ``render(messages[:i])``. One tokenisation of the whole conversation with
character offsets then maps those spans to tokens. TRL's trainer takes the result as is (a ``labels`` column) and
does the rest: padding, packing, the loss.

Within a trained turn the loss covers the message (for the assistant: what follows the generation prompt, so tool
calls count too) and, per ``train_on_eos``, the end-of-turn token; headers and the newline after it never.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100
# end-of-turn markers of common templates, besides the tokenizer's eos_token
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")
# Axolotl's message_field_training: a message's own ``training: true/false`` overrides roles_to_train for it
TRAINING_FIELD = "training"


class RowProblem(ValueError):
    """What is wrong with one row; the caller names the row and stops."""


class EmptyRow(RowProblem):
    """A row with nothing to train (an empty chat, answer or document): dropped and counted, not an error."""


@dataclass(frozen=True)
class LabelPolicy:
    """Axolotl's options, with Axolotl's meaning."""

    roles_to_train: tuple[str, ...] = ("assistant",)
    train_on_eos: str = "turn"  # turn: each trained turn's; last: the conversation's last; all; none
    train_on_inputs: bool = False  # every token trained
    eot_tokens: tuple[str, ...] = ()  # Axolotl's eot_tokens: the markers that close a turn (default: common ones)

    def trains(self, message: dict) -> bool:
        """Whether the message's own text is trained: its ``training`` flag, else its role."""
        return message.get(TRAINING_FIELD, message["role"] in self.roles_to_train)


def _render(tokenizer, conversations: list[list[dict]], add_generation_prompt: bool, template: str | None,
            tools: list | None) -> list[str]:
    if not conversations:
        return []
    return tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=template, tools=tools)


def _end_of_turn(text: str, start: int, end: int, markers: tuple[str, ...]) -> tuple[int, int]:
    """The first end-of-turn marker in text[start:end] as (begin, end), or an empty span at ``end``. The first, not
    the last: some templates close the whole chat with one more token after the last turn's own marker (Phi-3)."""
    found = [(at, at + len(m)) for m in markers if (at := text.find(m, start, end)) >= 0]
    return min(found) if found else (end, end)


def _content_end(text: str, content, start: int, end: int) -> int:
    """Where the message's own text ends in the rendered turn (templates may trim it), else ``start``: the turn's
    end-of-turn marker is looked for after it, so an answer that mentions ``</s>`` or ``<|im_end|>`` is trained
    whole."""
    for candidate in (content, content.strip()) if isinstance(content, str) else ():
        at = text.find(candidate, start, end) if candidate else -1
        if at >= 0:
            return at + len(candidate)
    return start


def turn_spans(tokenizer, messages: list[dict], template: str | None = None, tools: list | None = None,
               eot_tokens: tuple[str, ...] = ()) -> tuple[str, list[tuple]]:
    """Render ``messages``; return the text and per turn (message, body_start, body_end, eot_start, eot_end) in
    chars."""
    prefixes = _render(tokenizer, [messages[: i + 1] for i in range(len(messages))], False, template, tools)
    text = prefixes[-1]
    answered = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]
    prompts = dict(zip(answered, _render(tokenizer, [messages[:i] for i in answered], True, template, tools)))
    markers = eot_tokens or tuple(dict.fromkeys(m for m in (tokenizer.eos_token, *_END_OF_TURN) if m))
    spans, start = [], 0
    for i, (message, prefix) in enumerate(zip(messages, prefixes)):
        if tokenizer.eos_token and prefix.endswith(tokenizer.eos_token) and not text.startswith(prefix):
            prefix = prefix[: -len(tokenizer.eos_token)]  # templates that close only the whole chat (Phi-3)
        end = len(prefix)
        if not text.startswith(prefix) or end < start:
            raise RowProblem("the chat template renders earlier turns differently once later turns follow, so the "
                             "turns cannot be located; use a prefix-preserving template (e.g. chat_template: chatml)")
        body = start
        prompt = prompts.get(i)
        if prompt is not None and text.startswith(prompt) and start <= len(prompt) <= end:
            body = len(prompt)  # the assistant's turn starts where the generation prompt ends
        elif isinstance(message.get("content"), str) and message["content"]:
            found = text.find(message["content"], start, end)
            body = found if found >= 0 else start
        eot = _end_of_turn(text, _content_end(text, message.get("content"), body, end), end, markers)
        unrendered = [name for name in _tool_call_names(message) if name not in text[body:eot[0]]]
        if unrendered:
            raise RowProblem(f"the chat template does not render message {i}'s tool_calls ({unrendered[0]}), so it "
                             "would train as an empty turn; use a template that renders them (e.g. chat_template: "
                             "qwen2_5 or llama3)")
        spans.append((message, body, eot[0], eot[0], eot[1]))
        start = end
    return text, spans


def _tool_call_names(message: dict) -> list[str]:
    calls = message.get("tool_calls") or []
    return [c["function"]["name"] for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)
            and isinstance(c["function"].get("name"), str)]


def trained_char_ranges(spans: list[tuple], policy: LabelPolicy) -> list[tuple[int, int]]:
    last = len(spans) - 1
    ranges = []
    for index, (message, body_start, body_end, eot_start, eot_end) in enumerate(spans):
        trained = policy.trains(message)
        if trained:
            ranges.append((body_start, body_end))
        eos = policy.train_on_eos
        if eos == "all" or (eos == "turn" and trained) or (eos == "last" and index == last):
            ranges.append((eot_start, eot_end))
    return [r for r in ranges if r[1] > r[0]]


def render_with_trained_ranges(tokenizer, messages: list[dict], policy: LabelPolicy, template: str | None = None,
                               tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character ranges whose tokens are trained."""
    text, spans = turn_spans(tokenizer, messages, template, tools, policy.eot_tokens)
    return text, [(0, len(text))] if policy.train_on_inputs else trained_char_ranges(spans, policy)


def label_tokens(ids: list[int], offsets: list[tuple[int, int]], ranges: list[tuple[int, int]]) -> list[int]:
    labels, r = [], 0
    for token, (begin, end) in zip(ids, offsets):
        while r < len(ranges) and begin >= ranges[r][1]:
            r += 1
        # a token overlapping a trained range is trained: a word's leading space may sit in the header
        labels.append(token if r < len(ranges) and ranges[r][0] < max(end, begin + 1) else IGNORE)
    return labels


def tokenize_conversation(tokenizer, messages: list[dict], policy: LabelPolicy, template: str | None = None,
                          tools: list | None = None) -> tuple[list[int], list[int]]:
    """``input_ids`` and ``labels`` (-100 where no loss is taken) of one conversation."""
    text, ranges = render_with_trained_ranges(tokenizer, messages, policy, template, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"], label_tokens(encoded["input_ids"], encoded["offset_mapping"], ranges)
