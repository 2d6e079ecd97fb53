"""One error hierarchy for expertmix.

Every error says what failed, why, and what to do about it, in one line, so the CLI can print
``str(err)`` and the gateway can return it as the message of a 4xx/5xx response.
"""

from __future__ import annotations


class ExpertmixError(Exception):
    """Base of every error expertmix raises on purpose.

    ``hint`` is the fix, appended to the message so a one-line print is enough.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} (fix: {hint})" if hint else message)


class ConfigError(ExpertmixError):
    """A YAML file, a registry or a setting is malformed or inconsistent."""

    exit_code = 2


class InputError(ExpertmixError):
    """A request is unusable: empty question, oversized request, bad JSONL line."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A name (expert, model, pipeline, router, aggregator, node type) is not registered."""

    def __init__(self, kind: str, name: str, choices: list[str] | tuple[str, ...], *, where: str = "") -> None:
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        at = f" in {where}" if where else ""
        super().__init__(
            f"unknown {kind} {name!r}{at}",
            hint=f"use one of: {', '.join(self.choices) or '(none registered)'}",
        )


class PipelineValidationError(ConfigError):
    """A pipeline graph is invalid (unknown node type, dangling edge, cycle, missing input)."""


class ModelNotFoundError(ExpertmixError):
    """A model folder or package is missing on this machine."""

    exit_code = 3


class BackendError(ExpertmixError):
    """A backend failed to load a model or to generate."""

    exit_code = 4

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message, hint=hint)


class BudgetError(ExpertmixError):
    """No set of experts satisfies the request's budget (max experts / max cost)."""

    exit_code = 2


class DispatchError(ExpertmixError):
    """The worker fleet cannot take or finish a job (no live worker, job failed for good)."""

    exit_code = 5


class RoutingError(ExpertmixError):
    """A router broke its contract (no expert ranked, or not one decision per question)."""

    exit_code = 5


class OverloadedError(ExpertmixError):
    """The gateway's queue is full: the request was refused before any work (HTTP 429)."""

    exit_code = 6

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, hint=f"retry after {retry_after_s} s (the Retry-After header), or lower the request rate")
