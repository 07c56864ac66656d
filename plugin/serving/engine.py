"""Continuous batching over one base with many adapters: every request is a row of one running batch, routed to its
own adapter (``MultiAdapterModel.routed``); new requests join at step boundaries, finished or abandoned ones leave.

Each step is one forward of the whole batch over a shared key/value cache (transformers' ``DynamicCache``). A joining
group is prefilled on its own, then its cache is left-padded (or the running one is) to a common length and the two
are stacked; rows that leave are dropped from the cache, and columns no row needs any more are cut. Greedy decoding
gives the tokens ``model.generate(do_sample=False)`` gives for the same prompt (the positions and the masked padding
are the ones generate uses).
"""

from __future__ import annotations

import inspect
import queue
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..models.multi_adapter import MultiAdapterModel


@dataclass
class Request:
    adapter: str  # an adapter name, or "__base__"
    prompt_ids: list[int]
    max_tokens: int
    tokenizer: object
    emit: Callable[[dict], None]  # called from the engine thread with {"text": ...} or {"finish_reason": ...}
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # per generated token: its log-probability and this many most likely tokens
    prompt_logprobs: bool = False  # and for each prompt token (echo): one more forward of the prompt, all positions
    generated: list[int] = field(default_factory=list)
    token_logprobs: list[tuple] = field(default_factory=list)  # (token, logprob, [(token, logprob), ...])
    prompt_token_logprobs: list[tuple] | None = None  # the same per prompt token; the first's logprob is None
    cancelled: bool = False  # set by the HTTP side when the client hangs up
    finished: bool = False
    _sent: int = 0  # characters of the decoded text already emitted
    _sent_logprobs: int = 0  # entries of token_logprobs already emitted
    _generator: torch.Generator | None = None

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """Runs requests on ``multi`` in a background thread; ``submit`` may be called from any thread."""

    def __init__(self, multi: MultiAdapterModel, max_batch_size: int = 16) -> None:
        self.multi = multi
        self.model = multi.base
        self.max_batch_size = max_batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.lock = threading.Lock()  # adapters are added or removed between steps, never during one
        self._queue: queue.Queue[Request] = queue.Queue()
        self._rows: list[Request] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # (rows, cached columns): 1 where a real token sits
        self._thread = threading.Thread(target=self._run, name="plugin-serve-engine", daemon=True)
        # transformers >= 5.2x names the key/value cache ``cache`` (``past_key_values`` before, deprecated after)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self._stopping = False

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, request: Request) -> None:
        if request.seed is not None:
            request._generator = torch.Generator(device=self.model.device).manual_seed(request.seed)
        self._queue.put(request)

    # ---- the loop ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            joining = self._take_new(block=not self._rows)
            try:
                with self.lock, torch.no_grad():
                    if joining:
                        self._prefill(joining)
                    if self._rows:
                        self._decode_step()
            except Exception as err:  # a failed step fails its requests, never the server
                traceback.print_exc(file=sys.stderr)
                for request in self._rows + joining:
                    request.emit({"error": f"generation failed: {type(err).__name__}: {err}"})
                self._rows, self._cache, self._mask = [], None, None

    def _take_new(self, block: bool) -> list[Request]:
        taken = []
        try:
            if block:
                item = self._queue.get()
                if item is None:
                    return []
                taken.append(item)
            while len(self._rows) + len(taken) < self.max_batch_size:
                item = self._queue.get_nowait()
                if item is None:
                    break
                taken.append(item)
        except queue.Empty:
            pass
        return [request for request in taken if not request.cancelled]

    def _forward(self, adapters: list[str], cache=None, **inputs):
        """(last logits, cache) of one forward with row i routed to ``adapters[i]``."""
        if cache is not None:
            inputs[self._cache_arg] = cache
        with self.multi.routed(adapters):
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :], out[self._cache_arg]

    def _score_prompt(self, request: Request) -> None:
        """The log-probability of each prompt token given those before it (lm-eval's loglikelihood), unpadded."""
        ids = torch.tensor([request.prompt_ids], device=self.model.device)
        with self.multi.routed([request.adapter]):
            logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        first = (request.prompt_ids[0], None, [])  # nothing before it to predict it from
        request.prompt_token_logprobs = [first] + [
            _logprob_entry(logits[i - 1], request.prompt_ids[i], request.logprobs)
            for i in range(1, len(request.prompt_ids))]

    def _prefill(self, joining: list[Request]) -> None:
        for request in joining:
            if request.prompt_logprobs:
                self._score_prompt(request)
        device = self.model.device
        width = max(len(r.prompt_ids) for r in joining)
        ids = torch.zeros((len(joining), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(joining), width), dtype=torch.long, device=device)
        for row, request in enumerate(joining):  # left padding, as generate's batches
            ids[row, width - len(request.prompt_ids):] = torch.tensor(request.prompt_ids, device=device)
            mask[row, width - len(request.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward([r.adapter for r in joining], input_ids=ids, attention_mask=mask,
                                      position_ids=positions)
        self._join(joining, cache, mask)
        self._advance(joining, logits)

    def _join(self, joining: list[Request], cache, mask: torch.Tensor) -> None:
        if self._cache is None:
            self._rows, self._cache, self._mask = list(joining), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width, dim=2), _left_pad(new.keys, width, dim=2)])
            old.values = torch.cat([_left_pad(old.values, width, dim=2), _left_pad(new.values, width, dim=2)])
        self._mask = torch.cat([_left_pad(self._mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self._rows += joining

    def _decode_step(self) -> None:
        last = torch.tensor([[r.generated[-1]] for r in self._rows], device=self.model.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, torch.ones_like(last)], dim=1)
        logits, self._cache = self._forward([r.adapter for r in self._rows], self._cache, input_ids=last,
                                            attention_mask=self._mask, position_ids=positions)
        self._advance(self._rows, logits)

    def _advance(self, rows: list[Request], logits: torch.Tensor) -> None:
        """One new token per row; rows that finished (or whose client left) leave the batch."""
        for request, row_logits in zip(rows, logits):
            if not request.cancelled:
                token = _sample(row_logits, request)
                request.generated.append(token)
                if request.logprobs is not None:
                    request.token_logprobs.append(_logprob_entry(row_logits, token, request.logprobs))
                _emit_progress(request, token in self.eos_ids and not request.ignore_eos)
        keep = [i for i, r in enumerate(self._rows) if not (r.cancelled or r.finished)]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            if not self._rows:
                self._cache, self._mask = None, None
                return
            index = torch.tensor(keep, device=self._mask.device)
            self._cache.batch_select_indices(index)
            self._mask = self._mask[index]
            first = int((self._mask.sum(0) > 0).nonzero()[0])  # columns only departed rows used
            if first:
                self._mask = self._mask[:, first:]
                for layer in self._cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _sample(logits: torch.Tensor, request: Request) -> int:
    if request.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / request.temperature, dim=-1)
    if request.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > request.top_p  # keep the smallest set reaching top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0))
    return int(torch.multinomial(probs, 1, generator=request._generator))


def _logprob_entry(logits: torch.Tensor, token: int, top: int) -> tuple:
    """(token, its log-probability, the ``top`` most likely (token, log-probability)): of the model's own
    distribution, before temperature or top_p (vLLM's raw logprobs)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = logprobs.topk(top) if top else None
    return token, float(logprobs[token]), list(zip(best.indices.tolist(), best.values.tolist())) if best else []


def _emit_progress(request: Request, is_eos: bool) -> None:
    """Send the text that is now certain; finish on EOS, a stop string or max_tokens."""
    text = request.tokenizer.decode(request.generated, skip_special_tokens=True)
    finish = "stop" if is_eos else None
    for stop in request.stop:
        at = text.find(stop)
        if at != -1:
            text, finish = text[:at], "stop"
    if finish is None and len(request.generated) >= request.max_tokens:
        finish = "length"
    end = len(text)
    if finish is None:  # hold back a half-decoded character and what may be the start of a stop string
        end = len(text.rstrip("\ufffd"))
        end -= max((n for stop in request.stop for n in range(len(stop) - 1, 0, -1) if text[:end].endswith(stop[:n])),
                   default=0)
    if end > request._sent or (finish is not None and len(request.token_logprobs) > request._sent_logprobs):
        request.emit({"text": text[request._sent:end], "logprobs": request.token_logprobs[request._sent_logprobs:]})
        request._sent, request._sent_logprobs = end, len(request.token_logprobs)
    if finish is not None:
        request.finished = True
        request.emit({"finish_reason": finish})
