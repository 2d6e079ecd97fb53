"""What a router reads of a prompt: a bounded window, and the prompt's script/language.

A router never rejects a prompt for its length. It encodes a window of it: the head (where the
instruction usually is) and the tail (where a question after a pasted document usually is), so
a 20,000-character prompt costs the encoder no more than a 1,500-character one. Generation limits
belong to each model's context window and are checked when a request is built
(:func:`orchestrator.prompts.build_request`), not here.

Language detection is deliberately cheap (no model, ~20 us): a prompt is ``en`` when it is
written in Latin script and English function words outnumber those of the other common Latin-script
languages; otherwise its script or language code. The category router's cascade sends non-English
prompts to its multilingual stage.

Example::

    >>> from routers.text import window, language
    >>> len(window("x" * 20_000)) <= 1_600
    True
    >>> language("What is the capital of France?"), language("Quelle est la capitale de la France ?")
    ('en', 'fr')
    >>> language("我的膝盖跑步时疼")
    'zh'
"""

from __future__ import annotations

import re

HEAD_CHARS = 1_000
TAIL_CHARS = 500
_SEP = "\n…\n"


def window(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    """``text`` if it is short, else its first ``head`` and last ``tail`` characters."""
    text = text.strip()
    if len(text) <= head + tail + len(_SEP):
        return text
    return text[:head].rstrip() + _SEP + text[-tail:].lstrip()


# Function words per language: short, frequent and rarely shared (``de`` and ``en`` share few).
_FUNCTION_WORDS = {
    "en": "the and of to is in that it for you with on are be this what how can my i do does which have "
          "an as at by from or not your was will if there their would should write explain a when did why who",
    "de": "der die das und ist nicht ich ein eine zu mit den dem sich auf für wie was ist es sie wir "
          "bitte schreibe erkläre welche kann warum oder auch",
    "fr": "le la les et est des une un du pour que qui dans pas vous je sur avec ce est comment "
          "quelle quel pourquoi écris explique mon ma mes au aux",
    "es": "el la los las y es de que en un una por para con no se su cómo qué cuál mi escribe "
          "explica por qué del al son está en puedo estar ser tengo hay muy pero",
    "it": "il lo la gli le e è di che un una per con non si come cosa quale quali mio mia scrivi "
          "spiega perché del della sono fare nel alla questo",
    "pt": "o a os as e é de que em um uma para com não se como qual meu minha escreva explique "
          "por que do da são está você",
    "nl": "de het een en is van dat in op te niet ik je met voor hoe wat welke mijn schrijf leg "
          "waarom zijn",
}
_WORD_SETS = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_SHARES: dict[str, int] = {}
for _words in _WORD_SETS.values():
    for _w in _words:
        _SHARES[_w] = _SHARES.get(_w, 0) + 1
# letters that English prompts almost never contain, and the languages they point to
_MARKS = {"ñ": "es", "¿": "es", "¡": "es", "ß": "de", "ä": "de", "ö": "de", "ü": "de", "ã": "pt", "õ": "pt",
          "ç": "fr pt", "é": "fr es pt it", "è": "fr it", "à": "fr it pt", "ê": "fr pt", "ó": "es pt it", "í": "es pt"}
_LATIN_WORD = re.compile(r"[a-zà-öø-ÿ]+")
_SCRIPTS = (  # (code, first, last) code-point ranges, checked in order
    ("zh", 0x4E00, 0x9FFF), ("ja", 0x3040, 0x30FF), ("ko", 0xAC00, 0xD7AF), ("ru", 0x0400, 0x04FF),
    ("ar", 0x0600, 0x06FF), ("he", 0x0590, 0x05FF), ("hi", 0x0900, 0x097F), ("th", 0x0E00, 0x0E7F),
    ("el", 0x0370, 0x03FF),
)


def script_counts(text: str) -> dict[str, int]:
    """Characters per non-Latin script in ``text`` (kana counts as ``ja``)."""
    counts: dict[str, int] = {}
    for ch in text:
        cp = ord(ch)
        if cp < 0x0370:
            continue
        for code, lo, hi in _SCRIPTS:
            if lo <= cp <= hi:
                counts[code] = counts.get(code, 0) + 1
                break
    return counts


def language(text: str, sample: int = 800) -> str:
    """A best-effort language code: ``en``, ``de``, ``fr``, ``es``, ``it``, ``pt``, ``nl``, a script's
    main language (``zh``, ``ja``, ``ko``, ``ru``, ``ar``, ...), or ``und`` when nothing tells."""
    head = window(text, sample, 0) if len(text) > sample else text
    letters = sum(ch.isalpha() for ch in head)
    scripts = script_counts(head)
    if scripts and letters:
        code, n = max(scripts.items(), key=lambda kv: kv[1])
        weight = 3 if code in ("zh", "ja", "ko") else 1  # one CJK character is a word, not a letter
        if weight * n >= 0.3 * letters:
            return "ja" if code == "zh" and scripts.get("ja", 0) >= 0.1 * n else code
    lowered = head.lower()
    words = _LATIN_WORD.findall(lowered)
    if not words:
        return "und"
    scores = {lang: sum(1 / _SHARES[w] for w in words if w in ws) for lang, ws in _WORD_SETS.items()}
    for mark, langs in _MARKS.items():
        if mark in lowered:
            for lang in langs.split():
                scores[lang] += 1 / len(langs.split())
    best = max(scores, key=lambda k: (scores[k], k == "en"))
    # one stray function word ("per", "die") does not make a long English prompt foreign
    enough = scores[best] >= 1.5 or (scores[best] >= 1 and scores["en"] == 0 and len(words) <= 6)
    return best if best != "en" and enough and scores[best] > scores["en"] else "en"
