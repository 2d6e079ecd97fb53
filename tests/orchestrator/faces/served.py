"""Start the REAL gateway (``expertmix serve``) in a subprocess for tests (helpers, not tests).

The server runs this checkout's code (``python -m orchestrator.faces.cli`` with the repository
root first on ``PYTHONPATH``), on a free port, logging to a file the failure message shows.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_openai import FakeOpenAI

TOKEN_DELAY_S = 0.04  # the fake provider's pause between words: streaming is visible, tests stay fast

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One ``expertmix serve`` process: ``start()`` waits for /healthz, ``stop()`` sends Ctrl-C."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args, self.log_path = args, log_path
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
        for key in ("EXPERTMIX_GATEWAY_API_KEY", "EXPERTMIX_GATEWAY_API_KEYS", "EXPERTMIX_GATEWAY_API_KEYS_FILE"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120) -> "Served":
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.faces.cli", "serve", "--port", str(self.port),
                                          *self.args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"expertmix serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"expertmix serve did not answer /healthz in {timeout_s}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode if self.proc is not None else 0

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def __enter__(self) -> "Served":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fake_registry(tmp: Path, api_base: str) -> Path:
    """An expert registry of two litellm experts (models ``alpha``, ``beta``) on the fake OpenAI server."""
    path = tmp / "experts.yaml"
    path.write_text(f"""
models:
  alpha: {{backend: litellm, litellm_model: openai/alpha, api_base: "{api_base}", api_key_env: FAKE_OPENAI_KEY}}
  beta: {{backend: litellm, litellm_model: openai/beta, api_base: "{api_base}", api_key_env: FAKE_OPENAI_KEY}}
aggregator_model: alpha
experts:
  one: {{model: alpha, description: general questions math numbers, cost: 1.0, sampling: {{temperature: 0.0, max_tokens: 64}}}}
  two: {{model: beta, description: general questions science, cost: 2.0, sampling: {{temperature: 0.0, max_tokens: 64}}}}
""")
    return path


def fixed_pipeline(tmp: Path, name: str, experts: list[str], aggregator: str = "synthesis") -> Path:
    """A pipeline YAML: fixed router to ``experts``, then ``aggregator``."""
    path = tmp / f"{name}.yaml"
    path.write_text(f"""
name: {name}
nodes:
  - {{name: input, type: input}}
  - {{name: router, type: router, params: {{router: fixed, experts: {experts}}}}}
  - {{name: experts, type: experts}}
  - {{name: aggregate, type: aggregator, params: {{aggregator: {aggregator}}}}}
  - {{name: output, type: output}}
edges:
  - {{from: input.questions, to: router.questions}}
  - {{from: input.questions, to: experts.questions}}
  - {{from: router.decisions, to: experts.decisions}}
  - {{from: input.questions, to: aggregate.questions}}
  - {{from: experts.answers, to: aggregate.answers}}
  - {{from: aggregate.final, to: output.final}}
""")
    return path


# ---- fixtures (import them into a test module; module scope: one server per module) -------------
@pytest.fixture(scope="module")
def fake(request):
    """The fake OpenAI-compatible provider the litellm experts call (a module may set
    ``FAKE_TOKEN_DELAY_S`` for slower tokens)."""
    with FakeOpenAI(token_delay_s=getattr(request.module, "FAKE_TOKEN_DELAY_S", TOKEN_DELAY_S)) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    """`expertmix serve` over the fake registry; default pipeline `duo` (fixed router to one + two, synthesis)."""
    tmp = tmp_path_factory.mktemp("served")
    registry = fake_registry(tmp, fake.base_url)
    pipeline = fixed_pipeline(tmp, "duo", ["one", "two"])
    with Served(["--experts", str(registry), "--pipeline", str(pipeline)], tmp / "serve.log",
                env={"FAKE_OPENAI_KEY": "sk-fake"}) as served:
        yield served


@pytest.fixture(scope="module")
def client(gateway):
    """The official `openai` client on the served gateway."""
    import openai

    return openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="unused", max_retries=0)
