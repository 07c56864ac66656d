"""Verifiable rewards for ``rl: grpo`` (``trl.reward_funcs: [plugin.training.rewards.exact_answer]``), called as TRL's
GRPOTrainer calls reward functions: the completions, then each dataset column by name."""

from __future__ import annotations


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion  # a chat or text completion


def exact_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion is the row's ``answer`` (case and surrounding space aside), else 0.0."""
    return [float(_text(c).strip().lower() == str(a).strip().lower()) for c, a in zip(completions, answer)]
