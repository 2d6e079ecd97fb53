"""``expertmix ask --server URL``: ask a running gateway instead of starting engines here.

A question then costs one HTTP round trip to engines that are already warm (the gateway's), not an
engine start. The answer comes back as the same :class:`~orchestrator.core.Result` the local path
returns, rebuilt from the response's ``expertmix`` trace, so ``--json`` and the printed trace look
the same. Only the standard library is used (no HTTP client dependency).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from orchestrator.core import Result
from orchestrator.errors import BackendError, DispatchError, InputError

SERVER_ENV = "EXPERTMIX_SERVER"  # e.g. http://127.0.0.1:8000
KEY_ENV = "EXPERTMIX_GATEWAY_API_KEY"  # sent as the bearer token when set
TIMEOUT_S = 900.0  # a cold gateway may start an engine for this question


def server_url(flag: str | None) -> str | None:
    """``--server`` if given, else ``$EXPERTMIX_SERVER``, else None (answer locally)."""
    url = flag or os.environ.get(SERVER_ENV) or None
    return url.rstrip("/") if url else None


def ask_server(url: str, question: str, *, model: str, budget: dict[str, Any] | None = None,
               timeout_s: float = TIMEOUT_S) -> Result:
    """POST one chat completion to the gateway at ``url``; its errors keep their one-line message."""
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": question}]}
    if budget:
        payload["expertmix_budget"] = budget
    headers = {"Content-Type": "application/json"}
    if os.environ.get(KEY_ENV):
        headers["Authorization"] = f"Bearer {os.environ[KEY_ENV]}"
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(payload).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc)
        cls = InputError if 400 <= exc.code < 500 else BackendError
        raise cls(f"the gateway at {url} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DispatchError(f"cannot reach the gateway at {url} ({reason})",
                            hint=f"start it with `expertmix serve`, or unset --server / ${SERVER_ENV} to answer locally") from None
    return Result(**{**body["expertmix"], "answer": body["choices"][0]["message"]["content"]})


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return exc.reason or "no error message"
