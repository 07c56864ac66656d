"""Time and peak memory to prepare a Tulu-sized multi-turn chat set, up to the first training batch.

    python benchmarks/data_prep.py --rows 300000 [--processes N]

Writes N synthetic rows (1-4 exchanges, some with a system turn) once to a JSONL file, then, in this process:
``plugin.data.loader.load_training_data`` with the embedded SmolLM2 tokenizer, and TRL's ``SFTTrainer`` built on a tiny
random model over the result (its own preparation included) and one batch drawn. Run from an older checkout, it
measures that code's path the same way (it then converts rows to prompt/completion and TRL tokenises them).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the checkout being measured


def synthetic_rows(path: Path, rows: int) -> Path:
    if path.is_file() and sum(1 for _ in path.open()) == rows:
        return path
    rng = random.Random(0)
    words = "the a model learns answer question data train token chat turn user assistant reply why how".split()
    say = lambda n: " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."  # noqa: E731
    with path.open("w") as f:
        for i in range(rows):
            messages = [{"role": "system", "content": say(8)}] if i % 5 == 0 else []
            for _ in range(rng.randint(1, 4)):
                messages += [{"role": "user", "content": say(rng.randint(5, 40))},
                             {"role": "assistant", "content": say(rng.randint(5, 80))}]
            f.write(json.dumps({"dataset": "synthetic", "id": f"synthetic_{i}", "messages": messages}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--processes", type=int, help="dataset_processes (default: the config's default)")
    parser.add_argument("--file", default=os.path.join(tempfile.gettempdir(), "plugin_bench_chat_{rows}.jsonl"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = tempfile.TemporaryDirectory()  # a cold datasets cache: measure the work, not a cache hit
    os.environ["HF_DATASETS_CACHE"] = cache.name
    data_file = synthetic_rows(Path(args.file.format(rows=args.rows)), args.rows)

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import plugin.data.loader as data
    from plugin.config import load_config
    from plugin.models.embedded import embedded_model_path
    from plugin.training.run import training_arguments
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    with tempfile.TemporaryDirectory() as out:
        overrides = {"datasets": [{"path": str(data_file)}], "output_dir": out, "max_steps": 1,
                     "sequence_len": 1024, "dataset_processes": args.processes}
        cfg = load_config(None, {k: v for k, v in overrides.items() if v is not None})
        start = time.perf_counter()
        if "tokenizer" in inspect.signature(data.load_training_data).parameters:
            train, _ = data.load_training_data(cfg, tokenizer)
        else:  # before: rows converted by a Python loop, tokenised by TRL
            train, _ = data.load_training_data(cfg.datasets, 0.0, cfg.seed)
        prepared = time.perf_counter()
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2))
        trainer = SFTTrainer(model=model, args=training_arguments(cfg, False, True), train_dataset=train,
                             processing_class=tokenizer)
        next(iter(trainer.get_train_dataloader()))
        done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest num_proc worker
    print(json.dumps({"rows": args.rows, "kept": len(trainer.train_dataset), "plugin_data_s": round(prepared - start, 1),
                      "trainer_s": round(done - prepared, 1), "total_s": round(done - start, 1),
                      "peak_rss_mb": round(peak), "worker_peak_rss_mb": round(worker)}))


if __name__ == "__main__":
    main()
