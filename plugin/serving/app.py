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
        ids = served.tokenizer.apply_chat_template(body.chat(), add_generation_prompt=True, return_dict=True)
        return await _complete(body, served, list(ids["input_ids"]), chat=True)

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        body = parse(CompletionRequest, await _body(request))
        served = registry.get(body.model)
        return await _complete(body, served, served.tokenizer(body.text())["input_ids"], chat=False)

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

    async def _complete(body, served, prompt_ids: list[int], chat: bool):
        limit = body.token_limit()
        room = max_model_len - len(prompt_ids)
        if room <= 0 or (limit is not None and limit > room):
            raise APIError(400, f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                                f"{len(prompt_ids) + (limit or 0)} tokens ({len(prompt_ids)} in the prompt, {limit or 0} "
                                "for the completion). Please reduce the length of the prompt or completion.",
                           "messages" if chat else "prompt", code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Request(served.adapter, prompt_ids, limit or room, served.tokenizer,
                      emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                      temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stop_strings(),
                      ignore_eos=body.ignore_eos)
        engine.submit(job)
        reply = _Reply(body, served.id, chat, len(prompt_ids), job)
        if body.stream:
            return StreamingResponse(reply.stream(events), media_type="text/event-stream")
        try:
            return await reply.whole(events)
        finally:
            job.cancel()  # a client gone before the answer frees its row too

    return app


class _Reply:
    """One request's answer in OpenAI's shapes: whole, or as server-sent chunks."""

    def __init__(self, body, model_id: str, chat: bool, prompt_tokens: int, job: Request) -> None:
        self.body, self.model_id, self.chat, self.job = body, model_id, chat, job
        self.prompt_tokens = prompt_tokens
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def usage(self) -> dict:
        done = len(self.job.generated)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": self.prompt_tokens + done}

    def _choice(self, text: str | None, finish: str | None, delta: bool) -> dict:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        content = {"role": "assistant", "content": text} if not delta or text is not None else {}
        return {"index": 0, ("delta" if delta else "message"): content, "logprobs": None, "finish_reason": finish}

    def _envelope(self, choices: list, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id, "choices": choices}

    async def whole(self, events: asyncio.Queue) -> dict:
        parts = []
        while True:
            event = await events.get()
            if "error" in event:
                raise APIError(500, event["error"])
            if "text" in event:
                parts.append(event["text"])
            if "finish_reason" in event:
                return {**self._envelope([self._choice("".join(parts), event["finish_reason"], delta=False)], False),
                        "usage": self.usage()}

    async def stream(self, events: asyncio.Queue):
        try:
            while True:
                event = await events.get()
                if "error" in event:
                    yield _sse({"error": APIError(500, event["error"]).body()["error"]})
                    break
                if "text" in event:
                    yield _sse(self._envelope([self._choice(event["text"], None, delta=True)], True))
                if "finish_reason" in event:
                    yield _sse(self._envelope([self._choice(None, event["finish_reason"], delta=True)], True))
                    if self.body.include_usage():
                        yield _sse({**self._envelope([], True), "usage": self.usage()})
                    break
            yield "data: [DONE]\n\n"
        finally:
            self.job.cancel()  # the client hung up (or the answer is complete): its row leaves the batch


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
