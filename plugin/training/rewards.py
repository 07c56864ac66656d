"""Verifiable rewards for ``rl: grpo`` (``trl.reward_funcs: [plugin.training.rewards.chosen_option]``), called as TRL's
GRPOTrainer calls reward functions: the completions, then each dataset column by name."""

from __future__ import annotations


def _text(completion) -> str:
    return (completion[-1]["content"] if isinstance(completion, list) else completion).strip().lower()


def exact_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion is the row's ``answer`` (case and surrounding space aside), else 0.0."""
    return [float(_text(c) == str(a).strip().lower()) for c, a in zip(completions, answer)]


def chosen_option(completions, answer, choices, **kwargs) -> list[float]:
    """1.0 where the completion names the row's ``answer`` and no other of its ``choices`` (a multiple-choice answer
    checked, however the model phrases it), else 0.0."""
    rewards = []
    for completion, right, options in zip(completions, answer, choices):
        text = _text(completion)
        named = {o.strip().lower() for o in options if o.strip().lower() in text}
        rewards.append(float(named == {str(right).strip().lower()}))
    return rewards
