"""expertmix: a compound multi-LLM routing orchestrator.

``from orchestrator import Orchestrator`` is the SDK entry point; everything heavy (vLLM, torch,
sentence-transformers) is imported lazily, so importing this package is fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Orchestrator", "Pipeline", "ExpertRegistry", "Result"]

if TYPE_CHECKING:
    from orchestrator.config import ExpertRegistry
    from orchestrator.pipeline import Pipeline
    from orchestrator.faces.sdk import Orchestrator
    from orchestrator.core import Result


def __getattr__(name: str) -> Any:
    if name == "Orchestrator":
        from orchestrator.faces.sdk import Orchestrator
        return Orchestrator
    if name == "Pipeline":
        from orchestrator.pipeline import Pipeline
        return Pipeline
    if name == "ExpertRegistry":
        from orchestrator.config import ExpertRegistry
        return ExpertRegistry
    if name == "Result":
        from orchestrator.core import Result
        return Result
    raise AttributeError(name)
