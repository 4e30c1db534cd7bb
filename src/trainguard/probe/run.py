"""`probe` and `invert` as library calls: a model spec and clean data in, a `Report` out.

The CLI only parses options, calls these and renders; anything else (a test,
a notebook, a CI job) gets the same verdict and the same request count. Every
request is counted once, at the adapter (`RequestBudget.used`), across every
stage (vocabulary search, proposals, null, out-of-vocabulary strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from trainguard.errors import ConfigError, DataError
from trainguard.probe.adapters import RequestBudget
from trainguard.probe.candidates import Candidate, format_candidates, from_file, from_report, library, rare_tokens
from trainguard.probe.probing import Inputs, Verdict
from trainguard.report.model import Report


@dataclass(frozen=True)
class ProbeRun:
    """A finished probe or inversion: the report to render, its verdict, and what it cost."""

    report: Report
    verdict: Verdict
    complete: bool
    message: str
    requests: int
    notes: tuple[str, ...] = field(default=())  # what the user must know to read the verdict (e.g. a cut vocabulary)
    result: Any = None  # the ClassifierProbe / GenerativeProbe behind the report: every candidate, ranked


@dataclass(frozen=True)
class ModelOptions:
    """How to reach the model: a request cap and the HTTP / sampling knobs of `load_model`."""

    budget: int | None = None
    timeout: float = 30.0
    retries: int = 3
    batch_size: int = 64
    temperature: float = 0.7
    concurrency: int = 16   # chat endpoints: requests in flight (servers batch them)


def open_model(model: Any, options: ModelOptions) -> tuple[Any, str]:
    """(adapter, name for the report) from a spec string or an adapter object."""
    from trainguard.probe import load_model

    if options.budget is not None and options.budget < 1:
        raise ConfigError(f"--budget must be at least 1, got {options.budget}")
    if isinstance(model, (str, Path)):
        return load_model(str(model), RequestBudget(options.budget), timeout=options.timeout, retries=options.retries,
                          batch_size=options.batch_size, temperature=options.temperature,
                          concurrency=options.concurrency), str(model)
    if options.budget is not None:
        model.budget.limit = model.budget.used + options.budget
    return model, type(model).__name__


def clean_inputs(clean: Any, max_inputs: int, kind: str = "auto", fields: dict[str, str] | None = None
                 ) -> tuple[Inputs, dict[str, Any]]:
    """(inputs, dataset info) from a file path, a loaded Dataset, or a list of strings."""
    if max_inputs < 1:
        raise ConfigError(f"--max-inputs must be at least 1, got {max_inputs}")
    if isinstance(clean, (str, Path)):
        from trainguard.io import load

        clean = load(Path(clean), kind=kind, fields=fields)
    if len(clean) == 0:
        raise DataError(str(getattr(clean, "path", "clean inputs")), "no records to probe with")
    info = clean.info() if hasattr(clean, "info") else {"path": "<texts>", "kind": "texts", "records": len(clean)}
    return Inputs.of(clean, limit=max_inputs), info


def _finish(result: Any, info: dict[str, Any], name: str, command: str, extra: dict[str, Any], top: int,
            requests: int, notes: Sequence[str] = ()) -> ProbeRun:
    from trainguard.probe.reporting import to_report

    extra = {**extra, "requests": requests, "notes": list(notes)}
    rep = to_report(result, info, name, command=command, extra=extra, top=top)
    return ProbeRun(rep, result.verdict, result.complete, result.message, requests, tuple(notes), result)


def run_probe(model: Any, clean: Any, *, triggers: str | Path | Sequence[Candidate] = "auto",
              scan_report: str | Path | None = None, max_inputs: int = 200, samples: int = 3, top: int = 5,
              kind: str = "auto", fields: dict[str, str] | None = None,
              options: ModelOptions = ModelOptions(), reference: Any = None) -> ProbeRun:
    """Insert candidate triggers (library, format runs, rare words, a scan's findings) and decide.

    `reference` (generators): the model before fine-tuning, a spec or an adapter; a local LoRA adapter
    is compared with its base unless told otherwise."""
    from trainguard.probe import GenSettings, is_generative, probe_classifier, probe_generator

    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    inputs, info = clean_inputs(clean, max_inputs, kind, fields)
    if isinstance(triggers, (str, Path)):
        cands = library() + format_candidates() + rare_tokens(inputs.texts) if str(triggers) == "auto" \
            else from_file(triggers)
    else:
        cands = list(triggers)
    if scan_report is not None:
        cands = from_report(scan_report) + cands
    m, name = open_model(model, options)
    used0 = m.budget.used
    notes: list[str] = []
    if is_generative(m):
        ref, notes = open_reference(m, reference, options)
        result = probe_generator(m, inputs, cands, GenSettings(samples=samples), ref)
        notes += generator_notes(result, len(inputs))
    else:
        no_reference(reference, name)
        result = probe_classifier(m, inputs, cands)
    return _finish(result, info, name, "probe", {"candidates_offered": len(cands)}, top, m.budget.used - used0,
                   notes)


def open_reference(model: Any, reference: Any, options: ModelOptions) -> tuple[Any, list[str]]:
    """(reference generator or None, notes): what a fine-tuned generator is compared with."""
    from trainguard.probe.lm import LocalCausalLM

    if reference is None and isinstance(model, LocalCausalLM) and model.adapter is not None:
        return model.base_model(), [f"compared with the base model of {model.adapter} (what fine-tuning added)"]
    if reference is None:
        return None, ["no reference model (--reference): repeated outputs that echo the candidate are discounted "
                      "instead, which a payload written to echo its trigger steps around"]
    ref, name = open_model(reference, replace(options, budget=None))  # the budget is the probed model's
    from trainguard.probe import is_generative

    if not is_generative(ref):
        raise ConfigError(f"--reference {name}: not a generator")
    return ref, [f"compared with the reference model {name}"]


def no_reference(reference: Any, name: str) -> None:
    """A classifier is judged against its null, not a reference model: refuse one rather than ignore it."""
    if reference is not None:
        raise ConfigError(f"--reference applies to generators; {name} is a classifier")


def generator_notes(result: Any, n_inputs: int) -> list[str]:
    """What a generator probe did not measure in full, in words."""
    b, out = result.baseline, []
    if b["inputs"] < n_inputs:
        out.append(f"a generator is measured on the first {b['inputs']} of {n_inputs} clean prompts (each candidate "
                   "costs positions x samples generations per prompt)")
    if b.get("reference_requests"):
        out.append(f"the reference model answered {b['reference_requests']} more requests (not in the count above)")
    if b["screened"]:
        out.append(f"{b['screened']:,} of {b['candidates_offered']:,} candidates were screened on {b['screen_prompts']} "
                   f"prompts (one output per position); the best {b['confirmed']} were probed in full")
    return out


def run_invert(model: Any, clean: Any, *, top: int = 5, method: str = "auto",
               vocabulary: Sequence[str] | None = None, length: int = 3, max_vocab: int | None = None,
               max_inputs: int = 200, kind: str = "auto", fields: dict[str, str] | None = None,
               options: ModelOptions = ModelOptions(batch_size=256), reference: Any = None) -> ProbeRun:
    """Search for an unknown trigger (lengths 1..`length`); any cut of the vocabulary is stated in the report."""
    from trainguard.probe import InvertSettings, invert, invert_generator, is_generative
    from trainguard.probe.candidates import search_words
    from trainguard.probe.inversion import fallback_vocabulary

    if method not in ("auto", "gradient", "black-box"):
        raise ConfigError(f"--method must be auto, gradient or black-box, got {method!r}")
    if not 1 <= length <= 3:
        raise ConfigError(f"--length must be 1, 2 or 3, got {length}")
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    if max_vocab is not None and max_vocab < 1:
        raise ConfigError(f"--max-vocab must be at least 1, got {max_vocab}")
    inputs, info = clean_inputs(clean, max_inputs, kind, fields)
    m, name = open_model(model, options)
    used0 = m.budget.used
    notes: list[str] = []
    if is_generative(m):
        words = search_words(vocabulary or fallback_vocabulary(inputs.texts))
        offered = len(words)
        words = words[:max_vocab] if max_vocab else words
        ref, notes = open_reference(m, reference, options)
        result, searched = invert_generator(m, inputs, words, reference=ref)
        notes += generator_notes(result, len(inputs))
        extra: dict[str, Any] = {"method": "black-box", "searched": searched, "vocabulary_offered": offered}
    else:
        no_reference(reference, name)
        if method == "gradient" and not hasattr(m, "embedding_matrix"):
            raise ConfigError(f"{name}: --method gradient needs a white-box trainguard model directory")
        inv = invert(m, inputs, vocabulary=vocabulary, extra=format_candidates(), method=method,
                     settings=InvertSettings(length=length, max_vocab=max_vocab))
        result, searched, offered = inv.probe, inv.searched, inv.vocabulary
        extra = {"method": inv.method, "searched": searched, "vocabulary_offered": offered,
                 "proposals": len(inv.proposals), "lengths_searched": inv.lengths,
                 "family": {str(k): n for k, n in inv.family.items()}}
    if searched < offered:
        why = "--max-vocab" if max_vocab and searched == min(max_vocab, offered) else "the request budget ran out"
        notes.append(f"searched only the first {searched:,} of {offered:,} vocabulary entries ({why}); "
                     "a trigger among the rest cannot be found")
    return _finish(result, info, name, "invert", extra, top, m.budget.used - used0, notes)


__all__ = ["ModelOptions", "ProbeRun", "clean_inputs", "open_model", "run_invert", "run_probe"]
