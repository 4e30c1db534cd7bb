"""Model-side checks: probe a trained model for backdoor triggers, or search for unknown ones.

    model = load_model("model/")                      # or "http://host/classify", "openai+http://host/v1?model=m"
    result = probe_classifier(model, Inputs.of(clean), library() + rare_tokens(texts))
    result.verdict.backdoored, result.verdict.score, result.top(5)
    inv = invert(model, Inputs.of(clean))             # gradient search (white-box) or black-box search
    run = run_probe("model/", "heldout.jsonl")        # what `trainguard probe` does: run.report, run.verdict
    run = run_invert("http://host/classify", "heldout.jsonl", vocabulary=words)

Adapters never unpickle, never download, and charge every call to a RequestBudget.
"""

from __future__ import annotations

from typing import Any

from trainguard.probe.adapters import (
    BudgetExhausted, CallableClassifier, CallableGenerator, ClassifierModel, GenerativeModel, RequestBudget,
    WhiteBoxClassifier,
)
from trainguard.probe.candidates import (
    Candidate, format_candidates, from_file, from_report, insert, library, rare_tokens,
)
from trainguard.probe.generative import GenerativeProbe, GenSettings, invert_generator, probe_generator
from trainguard.probe.inversion import Inversion, InvertSettings, invert
from trainguard.probe.probing import ClassifierProbe, Inputs, Prober, Settings, Verdict, probe_classifier
from trainguard.probe.reporting import to_report


def load_model(spec: str, budget: RequestBudget | None = None, *, timeout: float = 30.0, retries: int = 3,
               batch_size: int = 64, temperature: float = 0.7, concurrency: int = 16) -> Any:
    """A model spec as an adapter: a directory, `http(s)://` (classification API) or `openai+http(s)://`."""
    budget = budget or RequestBudget()
    if spec.startswith(("openai+http://", "openai+https://")):
        from trainguard.probe.endpoints import OpenAIChat, parse_openai_spec

        base, name = parse_openai_spec(spec)
        return OpenAIChat(base, name, temperature=temperature, timeout=timeout, retries=retries, budget=budget,
                          concurrency=concurrency)
    if spec.startswith(("http://", "https://")):
        from trainguard.probe.endpoints import HTTPClassifier

        return HTTPClassifier(spec, batch_size=batch_size, timeout=timeout, retries=retries, budget=budget)
    from trainguard.probe.local import load_directory

    return load_directory(spec, budget=budget)


def is_generative(model: Any) -> bool:
    return hasattr(model, "generate") and not hasattr(model, "predict_proba")


from trainguard.probe.run import ModelOptions, ProbeRun, run_invert, run_probe  # noqa: E402 - uses load_model


__all__ = [
    "BudgetExhausted", "CallableClassifier", "CallableGenerator", "Candidate", "ClassifierModel", "ClassifierProbe",
    "GenSettings", "GenerativeModel", "GenerativeProbe", "Inputs", "Inversion", "InvertSettings", "RequestBudget",
    "ModelOptions", "ProbeRun", "Prober", "Settings", "Verdict", "WhiteBoxClassifier", "format_candidates",
    "from_file", "from_report", "insert", "invert", "invert_generator", "is_generative", "library", "load_model",
    "probe_classifier", "probe_generator", "rare_tokens", "run_invert", "run_probe", "to_report",
]
