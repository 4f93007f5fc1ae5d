"""The speed model's explanations (what a projection assumes, why a figure is what it is) as
keys and parameters, so the report can say them in Japanese while `bench project` and its JSON
keep the English text.

A Note is the English string itself (`bench project` prints it; tests and JSON read it as a
plain str) and remembers its key and parameters; `note.say(templates)` renders it from another
language's templates (bench/report/text.py holds the Japanese ones). A parameter may itself be a
Note (a basis inside a sentence), rendered in the same language.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EN: dict[str, str] = {
    "note_decode_form": "decode time per token = weight bytes / (bandwidth x efficiency) + a "
    "fixed per-token cost of {ms:.2f} ms for {engine} ({basis})",
    "note_no_graphs": "{gpu} decodes without CUDA graphs (llama.cpp enables them from compute "
    "capability {min_cc:.1f}; this card is {cc}): it pays more per token, which does not carry "
    "over",
    "note_card": "{gpu}: {bandwidth:g} GB/s x efficiency {eff:.0%} ({family} cards, {basis})",
    "note_range": "range x/÷ {factor:.2f}: the back-test's {quantile:.0%} error quantile on the "
    "published points",
    "note_share": "share on the GPU: {measured:.0%} measured, {target:.0%} on the target",
    "note_cpu_part": "{cpu:.0%} of the model runs on the CPU: measuring host at {host:.1f} GB/s "
    "achieved, the PC at {pc:.1f} GB/s (estimates: no published CPU-side point; range widened "
    "by +/-{widen:.0%} of the CPU part)",
    "note_same_setup": "same engine, model file and context on both sides; one stream",
    "note_prefill": "prefill scales with tensor FP16 throughput: {dst:g} / {src:g} TFLOPS = "
    "x{ratio:.2f} (not calibrated)",
    "note_no_prefill": "prefill not projected: no tensor FP16 figure for {src} or {dst}",
    # bases and labels inside the sentences above
    "note_fitted": "fitted",
    "note_no_fixed_cost": "no fixed cost in this variant",
    "note_sibling": "no point for {engine}: {sibling}'s",
    "note_other_builds": "no point for {engine}: {base} in other builds",
    "note_mean_engines": "no point for {engine}: mean of engines",
    "note_mean_families": "no published point: mean of the other families",
    "note_engine_no_graphs": "{engine} (no CUDA graphs)",
}


def _format(template: str, params: Mapping[str, Any], templates: Mapping[str, str]) -> str:
    values = {k: v.say(templates) if isinstance(v, Note) else v for k, v in params.items()}
    return template.format(**values)


class Note(str):
    """English text that keeps its template key and parameters."""

    key: str
    params: dict[str, Any]

    def __new__(cls, key: str, **params: Any) -> Note:
        self = super().__new__(cls, _format(EN[key], params, EN))
        self.key = key
        self.params = params
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # copy/deepcopy/pickle rebuild it from its key
        return (_rebuild, (self.key, self.params))

    def say(self, templates: Mapping[str, str]) -> str:
        """This note in the language of `templates` (English where a key is missing)."""
        return _format(templates.get(self.key, EN[self.key]), self.params, templates)


def _rebuild(key: str, params: dict[str, Any]) -> Note:
    return Note(key, **params)


def say(text: str, templates: Mapping[str, str]) -> str:
    """A Note in the templates' language; any other string as it is (data)."""
    return text.say(templates) if isinstance(text, Note) else text
