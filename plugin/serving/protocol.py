"""The requests of OpenAI's API as vLLM serves them, checked strictly: a wrong type, a missing field or an option
this server cannot honour is a 400 naming the field, never a silent default."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# accepted and without effect on the answer
_HARMLESS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# would change the answer: refused while unsupported, rather than ignored
_UNSUPPORTED_WHEN_SET = ("tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias",
                         "best_of", "suffix", "presence_penalty", "frequency_penalty", "prediction", "audio",
                         "modalities")
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


class APIError(Exception):
    """An error answered as OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                             404: "not_found_error"}.get(status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Sampling(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    max_tokens: Optional[int] = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    n: int = Field(default=1, ge=1, le=16)  # choices per prompt, each its own row of the running batch
    stream: bool = False
    stream_options: Optional[dict] = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[dict], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.get("type") != "text" for part in self.content):
                raise APIError(400, "only text content parts are supported", "messages")
            return "".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)

    def logprob_count(self) -> Optional[int]:
        """How many most likely tokens each answer token lists (None: no logprobs)."""
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def prompt_logprobs(self) -> bool:
        return False

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def chat(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling):
    # a text, token ids, or a list of either (lm-eval's local-completions sends [[ids]])
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(default=16, ge=1)  # OpenAI's default for text completions
    logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False  # the answer starts with the prompt (and, with logprobs, the prompt tokens' log-probabilities)

    def token_limit(self) -> Optional[int]:
        return self.max_tokens

    def logprob_count(self) -> Optional[int]:
        return self.logprobs

    def prompt_logprobs(self) -> bool:
        return self.echo and self.logprobs is not None

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt: a text or its token ids."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            return [prompt]
        if not prompt or any(not p for p in prompt):
            raise APIError(400, "prompt must not be empty", "prompt")
        return list(prompt)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    lora_name: str = Field(min_length=1)
    lora_int_id: Optional[int] = None  # vLLM's clients send it; names are what identify adapters here


def parse(model: type[BaseModel], body: Any) -> BaseModel:
    """``model`` from a decoded JSON body, or a 400 that names the first wrong field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param) from None
    for name in _UNSUPPORTED_WHEN_SET:
        if body.get(name) not in (None, False, 0, [], {}):
            raise APIError(400, f"{name} is not supported by this server", name)
    unknown = set(request.model_extra or {}) - _HARMLESS - set(_UNSUPPORTED_WHEN_SET)
    if unknown:
        raise APIError(400, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
    return request
