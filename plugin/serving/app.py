"""OpenAI's HTTP API, as vLLM serves it, over the continuous-batching engine (FastAPI + uvicorn, what
``transformers serve`` is built on; its own server loads models by id only, not adapter folders).

Routes: ``GET /health``, ``GET /metrics`` (requests running and waiting), ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (``stream``:
server-sent events ending with ``data: [DONE]``), vLLM's ``POST /v1/load_lora_adapter`` and
``POST /v1/unload_lora_adapter``. Every error is OpenAI's error object with a 4xx status; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..utils.errors import UserError
from .engine import Engine, Request
from .protocol import APIError, ChatCompletionRequest, CompletionRequest, LoadAdapterRequest, UnloadAdapterRequest, parse
from .registry import Registry


def build_app(registry: Registry, engine: Engine, max_model_len: int, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="plugin.serve", docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def _api_error(_, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def _unexpected(_, err: Exception):  # never a traceback to the client
        return JSONResponse(APIError(500, f"internal error: {type(err).__name__}").body(), status_code=500)

    @app.middleware("http")
    async def _authenticate(request: HTTPRequest, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                error = APIError(401, "missing or wrong API key: send Authorization: Bearer KEY", code="invalid_api_key")
                return JSONResponse(error.body(), status_code=401)
        return await call_next(request)

    async def _body(request: HTTPRequest):
        try:
            return json.loads(await request.body())
        except ValueError:
            raise APIError(400, "the request body is not valid JSON") from None

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():  # vLLM's gauges, in Prometheus' text format
        text = (f"# TYPE plugin:num_requests_running gauge\nplugin:num_requests_running {engine.running}\n"
                f"# TYPE plugin:num_requests_waiting gauge\nplugin:num_requests_waiting {engine.waiting}\n")
        return PlainTextResponse(text)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": "plugin", "root": m.path or m.id,
             "parent": m.parent, "max_model_len": max_model_len} for m in registry.models.values()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HTTPRequest):
        body = parse(ChatCompletionRequest, await _body(request))
        served = registry.get(body.model)
        if served.tokenizer.chat_template is None:
            raise APIError(400, f"{body.model} has no chat template; use /v1/completions", "model")
        body.logprob_count()  # top_logprobs without logprobs: 400 before anything runs
        ids = served.tokenizer.apply_chat_template(body.chat(), add_generation_prompt=True, return_dict=True)
        return await _complete(body, served, [list(ids["input_ids"])], chat=True)

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        body = parse(CompletionRequest, await _body(request))
        served = registry.get(body.model)
        prompts = [served.tokenizer(p)["input_ids"] if isinstance(p, str) else p for p in body.prompts()]
        vocab = len(served.tokenizer)
        if any(not ids for ids in prompts):
            raise APIError(400, "prompt must not be empty", "prompt")
        if any(not 0 <= token < vocab for ids in prompts for token in ids):
            raise APIError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
        return await _complete(body, served, prompts, chat=False)

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: HTTPRequest):
        body = parse(LoadAdapterRequest, await _body(request))
        folder = registry.allowed_folder(body.lora_path)
        try:
            with engine.lock:  # between two steps of the running batch
                registry.add(body.lora_name, folder)
        except UserError as err:
            raise APIError(400, str(err), "lora_path") from None
        return {"status": "ok", "message": f"adapter {body.lora_name} loaded"}

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: HTTPRequest):
        body = parse(UnloadAdapterRequest, await _body(request))
        with engine.lock:
            registry.remove(body.lora_name)
        return {"status": "ok", "message": f"adapter {body.lora_name} unloaded"}

    async def _complete(body, served, prompts: list[list[int]], chat: bool):
        limit = body.token_limit()
        for prompt_ids in prompts:
            room = max_model_len - len(prompt_ids)
            if room <= 0 or (limit is not None and limit > room):
                raise APIError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                                    f"requested {len(prompt_ids) + (limit or 0)} tokens ({len(prompt_ids)} in the "
                                    f"prompt, {limit or 0} for the completion). Please reduce the length of the prompt "
                                    "or completion.", "messages" if chat else "prompt", code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        jobs = []
        for prompt_ids in prompts:  # choice index = prompt * n + sample, as vLLM numbers them
            for sample in range(body.n):
                index = len(jobs)
                seed = None if body.seed is None else body.seed + sample  # n seeded samples differ, reproducibly
                emit = lambda event, i=index: loop.call_soon_threadsafe(events.put_nowait, (i, event))  # noqa: E731
                jobs.append(Request(served.adapter, prompt_ids, limit or max_model_len - len(prompt_ids),
                                    served.tokenizer, emit=emit,
                                    temperature=body.temperature, top_p=body.top_p, seed=seed,
                                    stop=body.stop_strings(), ignore_eos=body.ignore_eos,
                                    logprobs=body.logprob_count(), prompt_logprobs=body.prompt_logprobs()))
        for job in jobs:
            engine.submit(job)
        reply = _Reply(body, served, chat, jobs)
        if body.stream:
            return StreamingResponse(reply.stream(events), media_type="text/event-stream")
        try:
            return await reply.whole(events)
        finally:
            for job in jobs:
                job.cancel()  # a client gone before the answer frees its rows too

    return app


class _Reply:
    """One request's answer in OpenAI's shapes, a choice per job: whole, or as server-sent chunks."""

    def __init__(self, body, served, chat: bool, jobs: list[Request]) -> None:
        self.body, self.served, self.chat, self.jobs = body, served, chat, jobs
        self.echo = getattr(body, "echo", False)
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def usage(self) -> dict:
        prompt = sum(len(ids) for ids in {id(job.prompt_ids): job.prompt_ids for job in self.jobs}.values())
        done = sum(len(job.generated) for job in self.jobs)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def _logprobs(self, entries: list, offset: int = 0):
        """OpenAI's logprobs of ``entries`` ((token, logprob, top); logprob None for an echoed first prompt token):
        the completions API's parallel lists (``offset``: characters before the first token), or chat's content."""
        if self.body.logprob_count() is None:
            return None
        decode = self.served.tokenizer.decode
        if self.chat:
            def item(token, logprob):
                text = decode([token])
                return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
            return {"content": [{**item(token, logprob), "top_logprobs": [item(t, lp) for t, lp in top]}
                                for token, logprob, top in entries], "refusal": None}
        tokens = [decode([token]) for token, _, _ in entries]
        offsets = [offset + len("".join(tokens[:i])) for i in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": [logprob for _, logprob, _ in entries],
                "top_logprobs": [None if logprob is None else {decode([t]): lp for t, lp in [*top, (token, logprob)]}
                                 for token, logprob, top in entries],
                "text_offset": offsets}

    def _prompt_part(self, job: Request) -> tuple[str, list]:
        """What an echoed answer starts with: the prompt's text and its tokens' entries (the engine scores the
        prompt before it emits the job's first event)."""
        if not self.echo:
            return "", []
        return self.served.tokenizer.decode(job.prompt_ids), job.prompt_token_logprobs or []

    def _choice(self, index: int, text: str | None, entries: list, finish: str | None, delta: bool,
                offset: int = 0) -> dict:
        logprobs = self._logprobs(entries, offset)
        if not self.chat:
            return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        content = {"role": "assistant", "content": text} if not delta or text is not None else {}
        return {"index": index, ("delta" if delta else "message"): content, "logprobs": logprobs,
                "finish_reason": finish}

    def _envelope(self, choices: list, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.served.id, "choices": choices}

    async def whole(self, events: asyncio.Queue) -> dict:
        texts, entries = [[] for _ in self.jobs], [[] for _ in self.jobs]
        finishes: dict[int, str] = {}
        while len(finishes) < len(self.jobs):
            index, event = await events.get()
            if "error" in event:
                raise APIError(500, event["error"])
            if "text" in event:
                texts[index].append(event["text"])
                entries[index] += event["logprobs"]
            if "finish_reason" in event:
                finishes[index] = event["finish_reason"]
        choices = []
        for index, job in enumerate(self.jobs):
            text, prompt_entries = self._prompt_part(job)
            choices.append(self._choice(index, text + "".join(texts[index]), prompt_entries + entries[index],
                                        finishes[index], delta=False))
        return {**self._envelope(choices, False), "usage": self.usage()}

    async def stream(self, events: asyncio.Queue):
        try:
            offsets: dict[int, int] = {}  # characters sent per choice, from its first event on
            finished, failed = 0, False
            while finished < len(self.jobs):
                index, event = await events.get()
                if "error" in event:
                    yield _sse({"error": APIError(500, event["error"]).body()["error"]})
                    failed = True
                    break
                if index not in offsets:
                    text, entries = self._prompt_part(self.jobs[index])
                    offsets[index] = len(text)
                    if text:
                        yield _sse(self._envelope([self._choice(index, text, entries, None, delta=True)], True))
                if "text" in event:
                    yield _sse(self._envelope([self._choice(index, event["text"], event["logprobs"], None, delta=True,
                                                            offset=offsets[index])], True))
                    offsets[index] += len(event["text"])
                if "finish_reason" in event:
                    finished += 1
                    yield _sse(self._envelope([self._choice(index, None, [], event["finish_reason"], delta=True)],
                                              True))
            if self.body.include_usage() and not failed:
                yield _sse({**self._envelope([], True), "usage": self.usage()})
            yield "data: [DONE]\n\n"
        finally:
            for job in self.jobs:
                job.cancel()  # the client hung up (or the answer is complete): its rows leave the batch


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
