"""``python -m plugin.bench --rl dpo`` (or ``grpo``): one optimiser step of the package's TRL trainer, as
``plugin.train`` runs it (DPO: the policy forward on chosen and rejected, the reference forward with the adapters off,
the loss and its auxiliary terms, the backward; GRPO: sampling a group per prompt, the rewards, the policy loss), on
the benchmark's random-init LLaMA-shaped model with the embedded tokenizer's vocabulary and synthetic rows."""

from __future__ import annotations

import itertools
import random

COMPLETION_TOKENS = 16  # GRPO: tokens sampled per completion (a group of --batch completions per prompt)


def _words(tokenizer, count: int, rng: random.Random) -> str:
    """About ``count`` tokens of text: single-token words drawn from the vocabulary."""
    vocab = [t for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()]
    return "".join(rng.choice(vocab) for _ in range(count)).replace("Ġ", " ").strip()


def _rows(stage: str, tokenizer, rows: int, seq: int) -> list[dict]:
    rng = random.Random(0)
    if stage == "grpo":
        return [{"prompt": _words(tokenizer, seq, rng)} for _ in range(rows)]
    half = max(seq // 2, 1)
    return [{"prompt": _words(tokenizer, half, rng), "chosen": _words(tokenizer, half, rng),
             "rejected": _words(tokenizer, half, rng)} for _ in range(rows)]


def _length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c)) for c in completions]


def build_rl_step(model, peft_config, args):
    """(one optimiser step of the stage's trainer over ``model`` (the base) with ``peft_config``; trainable count)."""
    import tempfile

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    from ..models.embedded import embedded_model_path
    from ..training.preference import AuxLossDPOTrainer, AuxLossGRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    common = dict(output_dir=tempfile.mkdtemp(prefix="plugin-bench-"), per_device_train_batch_size=args.batch,
                  learning_rate=1e-4, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0)
    rows = Dataset.from_list(_rows(args.rl, tokenizer, args.batch * 4, args.seq))
    if args.rl == "dpo":
        from trl import DPOConfig

        trainer = AuxLossDPOTrainer(model=model, args=DPOConfig(**common, max_length=args.seq * 2),
                                    peft_config=peft_config, train_dataset=rows, processing_class=tokenizer)
    else:
        from trl import GRPOConfig

        config = GRPOConfig(**common, num_generations=args.batch, max_completion_length=COMPLETION_TOKENS)
        trainer = AuxLossGRPOTrainer(model=model, args=config, reward_funcs=[_length_reward], peft_config=peft_config,
                                     train_dataset=rows, processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1  # what trainer.train() sets before its first step
    batches = itertools.cycle(trainer.get_train_dataloader())
    trainer.model.train()

    def step():
        trainer.training_step(trainer.model, next(batches), None)
        trainer.model.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
