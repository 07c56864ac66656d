"""One offline vLLM engine over one exported folder, in its own process (a second ``vllm.LLM`` in one process
serves the first one's model): ``python -m tests.vllm_serving.engine_worker FOLDER PROMPTS.json OUT.json``.

float32, eager, the engine and worker in this process (the tests' references are float32; a process start-up is
~13 s here), or a worker process per rank at the job's ``tensor_parallel_size``. Greedy: each completion prompt's
first ``tokens`` tokens (EOS suppressed, as the reference's ``min_new_tokens``), each chat's answer (to EOS)."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("MKL_NUM_THREADS", "1")  # its TP ranks share the 2 cores: one MKL thread each


def main(folder: str, prompts_file: str, out_file: str) -> None:
    from vllm import LLM, SamplingParams

    job = json.loads(open(prompts_file).read())
    tp = job.get("tensor_parallel_size", 1)
    llm = LLM(folder, dtype="float32", enforce_eager=True, max_model_len=512, tensor_parallel_size=tp,
              distributed_executor_backend="uni" if tp == 1 else "mp", seed=0)
    n = job["tokens"]
    completions = llm.generate(job["completions"], SamplingParams(temperature=0, max_tokens=n, min_tokens=n),
                               use_tqdm=False)
    chats = llm.chat(job["chats"], SamplingParams(temperature=0, max_tokens=n), use_tqdm=False)
    with open(out_file, "w") as out:
        json.dump({"completions": [list(o.outputs[0].token_ids) for o in completions],
                   "chats": [list(o.outputs[0].token_ids) for o in chats]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
