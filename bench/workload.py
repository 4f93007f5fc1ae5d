"""Workloads: the same requests for every target, and how each answer is judged.

Each workload is a TOML file in bench/workloads/ with a fixed seed, temperature 0, num_predict
and num_ctx, and a list of cases. `requests()` expands them into `Request`s; `judge()` scores
an answer (long-context correctness, code tests, share of Japanese script).
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from bench import sandbox

WORKLOAD_DIR = Path(__file__).parent / "workloads"
CHARS_PER_TOKEN = 4.0  # English filler; the server reports the real prompt token count


@dataclass(frozen=True)
class Request:
    workload: str
    case: str
    messages: list[dict[str, str]]
    seed: int
    temperature: float
    num_predict: int
    num_ctx: int
    judge: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.workload, self.case)

    def with_nonce(self, nonce: str) -> Request:
        """The same request with `nonce` opening its first message, so its prompt differs from
        every earlier one right after the chat template's opening tokens: the server's prefix
        cache cannot serve the prompt, and the prefill is measured cold. Ollama's cmd/bench
        varies its prompts "to defeat KV cache prefix matching" the same way."""
        first, *rest = self.messages
        messages = [{**first, "content": f"{nonce}\n{first['content']}"}, *rest]
        return replace(self, messages=messages)


@dataclass(frozen=True)
class Verdict:
    correct: bool | None = None
    ja_share: float | None = None
    kana_share: float | None = None
    note: str | None = None  # why a code answer failed, or why it was not judged


@cache
def load(name: str) -> dict[str, Any]:
    path = WORKLOAD_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in WORKLOAD_DIR.glob("*.toml")))
        raise ValueError(f"unknown workload {name!r} — known: {known}")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def filler_document(tokens: int, seed: int, fact: str, depth: float) -> str:
    """Deterministic filler prose of about `tokens` tokens with `fact` planted at `depth`."""
    rng = random.Random(seed)
    subjects = [
        "The committee",
        "A traveller",
        "The old mill",
        "Our neighbour",
        "The river",
        "A small bakery",
        "The library",
        "The night train",
        "A gardener",
        "The museum",
    ]
    verbs = [
        "described",
        "remembered",
        "noticed",
        "repaired",
        "painted",
        "visited",
        "measured",
        "ignored",
        "celebrated",
        "questioned",
    ]
    objects = [
        "the autumn fair",
        "a broken clock",
        "the harbour lights",
        "an unusual map",
        "the morning fog",
        "a quiet courtyard",
        "the spring harvest",
        "a wooden bridge",
        "the village records",
        "a forgotten song",
    ]
    sentences: list[str] = []
    budget = int(tokens * CHARS_PER_TOKEN)
    size = 0
    while size < budget:
        s = (
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
            f"in the year {rng.randint(1850, 2020)}."
        )
        sentences.append(s)
        size += len(s) + 1
    sentences.insert(int(len(sentences) * depth), fact)
    return " ".join(sentences)


def requests(name: str, quick: bool = False, max_ctx: int | None = None) -> list[Request]:
    """The workload's requests. quick = one case and short answers (the CPU demo)."""
    spec = load(name)
    out: list[Request] = []
    for case in spec["cases"]:
        num_ctx = case.get("num_ctx", spec.get("num_ctx", 4096))
        if max_ctx is not None and num_ctx > max_ctx:
            continue
        num_predict = case.get("num_predict", spec["num_predict"])
        if "tokens" in case:  # long-context
            doc = filler_document(case["tokens"], spec["seed"], spec["fact"], spec["depth"])
            prompt = f"Read this document.\n\n{doc}\n\n{spec['question']}"
            judge = {"answer": spec["answer"]}
        else:
            prompt = case["prompt"]
            judge = {k: case[k] for k in ("function", "test") if k in case}
            if "test" in case and not case.get("function"):
                raise ValueError(
                    f"workload {name}: case {case['id']!r}: `test` needs `function`, the name "
                    'of the function its asserts check (e.g. function = "is_palindrome")'
                )
        if quick:
            num_predict = min(num_predict, 64)
        out.append(
            Request(
                name,
                case["id"],
                [{"role": "user", "content": prompt}],
                spec["seed"],
                spec["temperature"],
                num_predict,
                num_ctx,
                judge,
            )
        )
        if quick:
            break
    return out


_KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\uff66-\uff9f]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
# A "Japanese" answer: mostly Japanese script, with kana in it. Chinese is written in the same
# ideographs (a Simplified Chinese answer scores ja_share 100 %) but uses no kana; ordinary
# Japanese prose is well over a third kana, so a fifth leaves room for kanji-heavy answers.
JA_MIN_SHARE = 0.5
KANA_MIN_SHARE = 0.2


def _letters(text: str) -> tuple[int, int, int]:
    return len(_KANA.findall(text)), len(_KANJI.findall(text)), len(_LATIN.findall(text))


def japanese_share(text: str) -> float | None:
    """Share of letters written in kana or kanji; None when the text has no letters."""
    kana, kanji, latin = _letters(text)
    total = kana + kanji + latin
    return None if total == 0 else (kana + kanji) / total


def kana_share(text: str) -> float | None:
    """Share of letters written in hiragana or katakana; None when the text has no letters."""
    kana, kanji, latin = _letters(text)
    total = kana + kanji + latin
    return None if total == 0 else kana / total


def is_japanese(text: str) -> bool | None:
    ja, kana = japanese_share(text), kana_share(text)
    if ja is None or kana is None:
        return None
    return ja >= JA_MIN_SHARE and kana >= KANA_MIN_SHARE


def extract_code(answer: str) -> str:
    """The first fenced code block (```python or ```), else the whole answer."""
    match = re.search(r"```(?:python|py)?[^\n]*\n(.*?)```", answer, re.S)
    return match.group(1) if match else answer


def judge(request: Request, answer: str) -> Verdict:
    if request.workload == "chat-ja":
        return Verdict(is_japanese(answer), japanese_share(answer), kana_share(answer))
    if "answer" in request.judge:
        return Verdict(correct=request.judge["answer"] in answer)
    if "test" in request.judge:
        return judge_code(extract_code(answer), request.judge["function"], request.judge["test"])
    return Verdict()


def judge_code(code: str, function: str, test: str) -> Verdict:
    """Run the answer's `function` against the case's asserts inside the sandbox. Correct only
    when the asserts passed; not judged (None, with the reason) where no isolation exists."""
    result = sandbox.check_function(code, function, test)
    if result.skipped:
        return Verdict(correct=None, note=f"code check {result.note}")
    return Verdict(correct=result.ok, note=result.note)
