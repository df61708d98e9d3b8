# Thin entry points; each target is one or two commands. See README.md.
SHELL := bash
CARGO ?= cargo

.PHONY: demo test check-cuda bench bench-data bench-model fmt lint clean

## The main job on the embedded default: CPU, the bundled sample corpus, the tiny-cpu model.
demo:
	$(CARGO) run --bin gpt2 -- prepare --config configs/data/sample.yaml
	$(CARGO) run --bin gpt2 -- train --config configs/train/tiny-cpu.yaml --resume auto

## Every test in the workspace, then one summary line ("N passed, N failed").
test:
	@mkdir -p target
	@set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test-output.log; \
	status=$$?; bash scripts/test-summary.sh target/test-output.log; exit $$status

## Type-check the CUDA path without a GPU or network. DOCS_RS=1 makes the LLVM bundler of
## cubecl-llvm skip its download (a check does not link, so no LLVM is needed). Separate target
## dir so the environment change does not invalidate the main build.
check-cuda:
	DOCS_RS=1 CARGO_TARGET_DIR=target/cuda-check $(CARGO) check -p gpt2-cli --features cuda

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
