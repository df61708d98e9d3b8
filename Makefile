# Thin entry points; each target is one or two commands. See README.md.
SHELL := bash
CARGO ?= cargo

.PHONY: demo test bench bench-data bench-model fmt lint clean

## The main job on the embedded default: CPU, the bundled sample corpus, the tiny-cpu model.
demo:
	$(CARGO) run --bin gpt2 -- prepare --config configs/data/sample.yaml
	$(CARGO) run --bin gpt2 -- train --config configs/train/tiny-cpu.yaml --resume auto

## Every test in the workspace, then one summary line ("N passed, N failed").
test:
	@mkdir -p target
	@set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test-output.log; \
	status=$$?; bash scripts/test-summary.sh target/test-output.log; exit $$status

bench: bench-data bench-model

bench-data:
	bash experiments/bench_data.sh

bench-model:
	bash experiments/bench_model.sh 2

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf data/shards target
