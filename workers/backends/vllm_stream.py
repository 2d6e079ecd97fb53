"""Token streaming on the in-process vLLM engine: a step loop over the offline ``vllm.LLM``.

``LLM.chat`` / ``LLM.generate`` only return finished outputs. For streaming, the same engine takes
the batch's requests with ``RequestOutputKind.CUMULATIVE`` and is stepped here: every step
yields each running request's text so far, whose new suffix goes to ``on_delta``. Prompts are
rendered by the engine's own preprocessing (``_preprocess_chat_one`` / ``_preprocess_cmpl_one``,
what ``LLM.chat`` and ``LLM.generate`` use in vllm 0.32), so a streamed greedy answer is the same
text as the batch answer. The whole batch still runs as one engine batch.

Why not ``AsyncLLM``: it runs its engine core in a background process (or a busy loop), a second
engine next to the offline one the pool already holds; on a 2-core machine that doubles memory
and start time for no gain. One engine serves both paths here.

A request whose ``on_delta`` returns False is aborted in the engine (its completion keeps the text
so far, ``finish_reason="cancelled"``); the others go on. Whatever happens, no request of this call
is left in the engine: the next ``LLM.chat`` would otherwise collect it as its own output.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from orchestrator.core import CANCELLED, Completion, GenerationRequest
from orchestrator.errors import BackendError
from orchestrator.streaming import DeltaCallback
from workers.backends.prompting import completion_text, conversation

_ids = itertools.count()


def generate_stream(llm: Any, model: str, chat: bool, requests: list[GenerationRequest],
                    on_delta: DeltaCallback, to_params: Any) -> list[Completion]:
    """Run ``requests`` as one engine batch, reporting text deltas; completions in request order."""
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    by_id: dict[str, GenerationRequest] = {}  # our (external) request id -> request
    finals: dict[str, tuple[Any, bool]] = {}  # request id -> (final output, cancelled)
    t0 = time.perf_counter()
    try:
        for req in requests:
            params = to_params(req.sampling)
            params.output_kind = RequestOutputKind.CUMULATIVE
            rid = f"xm-stream-{next(_ids)}"
            engine.add_request(rid, _engine_input(llm, req, chat), params)
            by_id[rid] = req
        _step_until_done(engine, by_id, on_delta, finals)
    except BackendError:
        raise
    except Exception as exc:  # vLLM raises many types; the model and the cause are what matter
        raise BackendError(f"model {model!r}: streaming generation of {len(requests)} requests failed: "
                           f"{type(exc).__name__}: {exc}",
                           hint="check prompt lengths against max_model_len and the sampling settings") from exc
    finally:
        left = [rid for rid in by_id if rid not in finals]
        if left:
            engine.abort_request(left, internal=False)
    share = (time.perf_counter() - t0) / max(1, len(requests))
    order = {req.key: i for i, req in enumerate(requests)}
    out = [_completion(by_id[rid], output, model, share, cancelled) for rid, (output, cancelled) in finals.items()]
    return sorted(out, key=lambda c: order[c.key])


def _step_until_done(engine: Any, by_id: dict[str, GenerationRequest], on_delta: DeltaCallback,
                     finals: dict[str, tuple[Any, bool]]) -> None:
    sent = dict.fromkeys(by_id, 0)
    while len(finals) < len(by_id):
        for output in engine.step():
            rid = output.request_id
            if rid not in by_id or rid in finals:
                continue
            text = output.outputs[0].text if output.outputs else ""
            keep = True
            if len(text) > sent[rid]:
                keep = on_delta(by_id[rid].key, text[sent[rid]:]) is not False
                sent[rid] = len(text)
            if output.finished:
                finals[rid] = (output, False)
            elif not keep:  # the client hung up: stop this request only
                engine.abort_request([rid], internal=False)
                finals[rid] = (output, True)
        if len(finals) < len(by_id) and not engine.has_unfinished_requests():
            missing = len(by_id) - len(finals)
            raise BackendError(f"the engine finished without outputs for {missing} streamed requests",
                               hint="report this with the vLLM version; requests without stream still work")


def _engine_input(llm: Any, req: GenerationRequest, chat: bool) -> Any:
    try:
        if chat:
            return llm._preprocess_chat_one(conversation(req))
        return llm._preprocess_cmpl_one(completion_text(req))
    except AttributeError as exc:  # another vLLM version: its private preprocessing moved
        raise BackendError(f"this vLLM build has no {exc.name or 'prompt preprocessing'} for streaming",
                           hint="use vllm(-cpu) 0.32, or send the request without stream") from exc


def _completion(request: GenerationRequest, output: Any, model: str, latency: float, cancelled: bool) -> Completion:
    texts = [o.text for o in output.outputs]
    return Completion(
        key=request.key,
        model=model,
        text=texts[0] if texts else "",
        texts=texts,
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=sum(len(o.token_ids) for o in output.outputs),
        latency_s=latency,
        finish_reason=CANCELLED if cancelled else (output.outputs[0].finish_reason if output.outputs else None),
    )
