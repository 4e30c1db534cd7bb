"""Every `trainguard` command in README.md's bash blocks runs as written (sqlite-utils' documentation tests).

The commands run in order, in-process, in a temporary directory prepared with
the files they name: `data.jsonl` (600 rows of the bundled poisoned demo set,
with a zero-width-character poison moved to row 17 so `review reject 17` has a
row to decide), `data.csv`, `clean.jsonl`, `store.jsonl`, `targets.json` and
`examples/policy.yaml`. Each must exit with a code the README documents, never
2 (bad usage) and never a traceback. Lines that need a cluster, a server, a
terminal or `../shared/data` are skipped by the explicit list below, with the
reason; a README line that is neither run nor listed fails the test.

Cost: about 1-2 minutes on 2 cores (the DP-SGD `train` line and the model probes dominate).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from conftest import DATA, cli, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "src" / "trainguard" / "data" / "demo" / "sst2_poisoned.jsonl"

# Lines not run, by prefix, and why.
SKIP = {
    "trainguard serve-model": "starts a model server (tests/test_probe_lm.py runs ChatServer and the CLI against it)",
    "trainguard serve": "starts a web server (the review page has its own tests in tests/web)",
    "trainguard invert --model lora-adapter/": "needs a LoRA adapter fine-tuned from SmolLM2 (minutes of CPU: "
                                               "benchmarks/lm_backdoor.py); tests/test_probe_lm.py runs the same "
                                               "--vocab-from search over HTTP",
    "trainguard probe --model http://": "needs a model server at host:8000",
    "trainguard bench --data ../shared/data": "reads ../shared/data, which a clone does not have",
    "trainguard user add": "prompts for a password on a terminal (tests/web add users with --password-stdin)",
}
# Exit codes the README documents for each command (prefix of the command line); the default is 0.
DOCUMENTED = {
    "trainguard scan": {0, 1},
    "trainguard gate": {0, 1, 3},
    "trainguard verify": {0, 1},
    "trainguard audit": {0, 1},
    "trainguard probe": {0, 1},
    "trainguard invert": {0, 1},
}
# What the prepared files make certain.
EXACT = {
    "trainguard scan data.jsonl": 1,  # the demo set is poisoned: high findings
    "trainguard scan hf_dataset/": 1,  # the same rows as a datasets folder
    "trainguard gate data.jsonl": 3,  # rows 17, 255 and 539 go to the review queue
    "trainguard release": 0,
    "trainguard check-attestation": 0,
}


def readme_commands() -> list[str]:
    """Each `trainguard ...` command of README.md's bash blocks, continuation lines joined, `;` split."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words: list[str] = []
            for tok in [*lexer, ";"]:
                if tok == ";":
                    if words and words[0] == "trainguard":
                        out.append(shlex.join(words))
                    words = []
                else:
                    words.append(tok)
    return out


def _prepare(d: Path) -> None:
    rows = [json.loads(x) for x in DEMO.read_text(encoding="utf-8").splitlines()][:600]
    rows[17], rows[223] = rows[223], rows[17]  # row 223 carries a U+200B trigger
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with open(d / "data.csv", "w", encoding="utf-8", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["review", "stars"])
        w.writerows([r["text"], 5 if r["label"] else 1] for r in rows)
    clean = read_jsonl("sst2_sample.jsonl")[:40]
    (d / "clean.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clean), encoding="utf-8")
    store = read_jsonl("medquad_sample.jsonl")
    (d / "store.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "text": r["answer"]}) + "\n"
                                           for i, r in enumerate(store)), encoding="utf-8")
    (d / "targets.json").write_text(json.dumps([["How is glaucoma treated first?",
                                                 "Surgery is always required on the same day"]]))
    import datasets  # the dev extra; the README scans a save_to_disk folder

    datasets.Dataset.from_list(rows).save_to_disk(str(d / "hf_dataset" / "train"))
    (d / "hf_dataset" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    (d / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "policy.yaml", d / "examples" / "policy.yaml")


def _before(command: str, d: Path, capsys) -> None:
    """Steps the README leaves to the reader between its lines."""
    if command.startswith("trainguard release"):
        # A reviewer decided the other queued rows (the README shows one decision).
        from trainguard.gate.review import decide, items
        from trainguard.ledger.store import Ledger

        with Ledger.open(d / ".trainguard" / "ledger.db") as led:
            for i in items(led, None, "pending"):
                decide(led, i["row"], "rejected", "planted poison (test)", "bob", i["run"])
    if command.startswith(("trainguard probe --model model/", "trainguard invert --model model/")) \
            and not (d / "model").is_dir():
        code, _, err = cli(capsys, "train", "data.jsonl", "--model", "linear", "--epochs", "1", "--out", "model/")
        assert code == 0, err  # the README trains model/ two lines later; probe needs one now


def test_readme_lists_commands():
    cmds = readme_commands()
    assert len(cmds) >= 20 and "trainguard review reject 17 --reason 'cf trigger'" in cmds


def test_every_readme_command_runs_as_documented(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINGUARD_LEDGER", raising=False)
    _prepare(tmp_path)
    problems = []
    ran = 0
    for command in readme_commands():
        if any(command.startswith(p) for p in SKIP):
            continue
        _before(command, tmp_path, capsys)
        code, _, err = cli(capsys, *shlex.split(command)[1:])
        ran += 1
        allowed = next((c for p, c in DOCUMENTED.items() if command.startswith(p)), {0})
        exact = next((c for p, c in EXACT.items() if command.startswith(p)), None)
        if code not in allowed or (exact is not None and code != exact) or "Traceback" in err:
            problems.append(f"{command}\n    exit {code} (documented {sorted(allowed)}"
                            f"{'' if exact is None else f', expected {exact}'}): {err.strip()[-400:]}")
    assert not problems, "README commands that do not run as documented:\n" + "\n".join(problems)
    assert ran >= 20
    assert (tmp_path / "approved.intoto.json").is_file() and (tmp_path / "model" / "config.json").is_file()
