"""The requests of OpenAI's API as vLLM serves them, checked strictly: a wrong type, a missing field or an option
this server cannot honour is a 400 naming the field, never a silent default."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# accepted and without effect on the answer
_HARMLESS = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# would change the answer: refused while unsupported, rather than ignored
_UNSUPPORTED_WHEN_SET = ("logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
                         "response_format", "logit_bias", "echo", "best_of", "suffix", "presence_penalty",
                         "frequency_penalty", "prediction", "audio", "modalities")


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
    n: int = 1
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

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def chat(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(default=16, ge=1)  # OpenAI's default for text completions

    def token_limit(self) -> Optional[int]:
        return self.max_tokens

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise APIError(400, "one prompt per request is supported; send a list of one or a string", "prompt")
            return self.prompt[0]
        return self.prompt


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
    if getattr(request, "n", 1) != 1:
        raise APIError(400, "n must be 1: this server returns one choice per request", "n")
    unknown = set(request.model_extra or {}) - _HARMLESS - set(_UNSUPPORTED_WHEN_SET)
    if unknown:
        raise APIError(400, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
    return request
