# Thin entry points; each target is one or two commands. See README.md.
SHELL := bash
CARGO ?= cargo
# Cargo features of the test build: `wgpu` adds Burn's wgpu backend (device.kind: wgpu) and its
# test suites; `cuda` adds Burn's CUDA backend, so the tests' gpt2 is also the one
# check-cuda-kernels runs against the stand-in driver (one build of Burn's crates for both
# backends: cudarc opens libcuda and NVRTC at run time, so nothing CUDA is needed to build). The
# demo runs on the CPU and builds without them (DEMO_FEATURES), which keeps its first build to
# flex's crates; the two builds share every crate whose features agree and keep separate copies
# of the others, so neither rebuilds the other's.
# `mpi` (several processes under mpirun or srun, docs/gpus.md "Several machines") joins them
# where Open MPI is installed (its mpicc, or pkg-config's ompi): the mpi crate binds its C
# library at build time (with libclang). Without it the MPI tests print SKIPPED.
comma := ,
HAVE_MPI := $(shell { command -v mpicc || pkg-config --exists ompi; } >/dev/null 2>&1 && echo yes)
FEATURES ?= wgpu,cuda$(if $(HAVE_MPI),$(comma)mpi)
DEMO_FEATURES ?=

.PHONY: demo test check-cuda check-cuda-kernels gpu-bundle gpu-bundle-autotune bench bench-data bench-train bench-model bench-memory bench-kernels bench-eval fmt lint clean

## The main job on the embedded default: CPU, the bundled sample corpus, the tiny-cpu model.
demo:
	$(CARGO) run --features "$(DEMO_FEATURES)" --bin gpt2 -- prepare --config configs/data/sample.yaml
	$(CARGO) run --features "$(DEMO_FEATURES)" --bin gpt2 -- train --config configs/train/tiny-cpu.yaml --resume auto

## Every test in the workspace, then one summary line ("N passed, N failed"). The wgpu suites
## run where a Vulkan/Metal/DX12 adapter exists and print SKIPPED elsewhere (CI requires one).
test:
	@mkdir -p target
	@set -o pipefail; $(CARGO) test --workspace --features "$(FEATURES)" --no-fail-fast 2>&1 | tee target/test-output.log; \
	status=$$?; bash scripts/test-summary.sh target/test-output.log; exit $$status

## The `cuda` gpt2 and the kernel generator without a GPU or network: the test build's own
## binaries (FEATURES has `cuda`), so after `make test` this builds nothing. A build, not a
## type-check. .cargo/config.toml sets DOCS_RS so the LLVM bundler of cubecl-llvm downloads
## nothing; the mpi feature builds the NCCL engine's MPI rendezvous where Open MPI is installed.
check-cuda:
	$(CARGO) build --workspace --features "$(FEATURES)" --bins --examples
	@target/debug/gpt2 --help >/dev/null

## a. Our CubeCL kernels as the CUDA C++ cubecl-cuda generates for an A100 (sm_80) and an H100
## (sm_90), in f32/f16/bf16, compiled by NVIDIA's NVRTC and ptxas from PyPI wheels (no GPU or
## driver): fails on a compile error, registers x threads > 64K or shared memory over the
## card's limit. Writes target/cuda-kernels/{sm_80,sm_90}/*.cu|.ptx and manifest.jsonl.
## b. The `cuda` gpt2 of check-cuda (a prerequisite) trains tiny-cpu in f32, bf16 and
## f16, evaluates, samples, trains on 2 devices and as 2 processes over NCCL against the stand-in
## driver and NCCL (scripts/cuda_standin.c, nccl_standin.c): every kernel Burn and we launch is
## compiled by NVRTC, assembled by ptxas for sm_90a and launched within an H100's limits (none
## runs), every NCCL call checked. Adds them to manifest.jsonl (scripts/cuda_standin.sh).
CUDA_WHEELS := nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86
CUDA_PY := target/py-cuda/bin/python
check-cuda-kernels: check-cuda
	@$(CUDA_PY) -c 'import nvidia' 2>/dev/null || { mkdir -p target && python3 -m venv target/py-cuda && $(CUDA_PY) -m pip install -q $(CUDA_WHEELS); }
	target/debug/examples/cuda_kernels target/cuda-kernels
	$(CUDA_PY) scripts/cuda_kernels.py target/cuda-kernels
	bash scripts/cuda_standin.sh target/debug/gpt2 target/cuda-kernels

## The `--features cuda` release binary, stripped and gzipped for a GPU machine without network
## (target/gpu/gpt2.gz; experiments/gpu.sh unpacks it). ~40 min from clean on 2 cores.
gpu-bundle:
	$(CARGO) build --release -p gpt2-cli --features cuda
	mkdir -p target/gpu
	strip -o target/gpu/gpt2 target/release/gpt2
	gzip -9 -f target/gpu/gpt2
	ls -l target/gpu

## The same with Burn's autotune (target/gpu/gpt2-autotune.gz), which gpu.sh then measures beside
## the default binary. Its own target dir, so the default bundle's build stays as it is.
gpu-bundle-autotune:
	CARGO_TARGET_DIR=target/autotune $(CARGO) build --release -p gpt2-cli --features cuda,autotune
	mkdir -p target/gpu
	strip -o target/gpu/gpt2-autotune target/autotune/release/gpt2
	gzip -9 -f target/gpu/gpt2-autotune
	ls -l target/gpu

## Issue 6's benchmarks 1–3: prepare vs tiktoken, CPU training vs PyTorch, eval vs train.
## Each prints a dated Markdown block for experiments/RESULTS.md. PYTHON: an interpreter with
## tiktoken (bench-data) and torch + numpy (bench-train).
bench: bench-data bench-train

bench-data:
	bash experiments/bench_data.sh

bench-train:
	bash experiments/bench_train.sh

## Per-component model throughput (forward+backward vs forward only), for profiling.
bench-model:
	bash experiments/bench_model.sh 2

## Peak device memory of gpt2-10m training steps on the wgpu device at T = 64, 256, 1024.
bench-memory:
	bash experiments/bench_memory.sh

## Kernel launches and bytes reserved per optimizer step on the wgpu device, ours vs composed.
bench-kernels:
	bash experiments/launch_count.sh

## gpt2 eval --task on the full test sets vs the transformers scorer (EVALDATA=dir of the sets).
bench-eval:
	bash experiments/bench_eval.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf data/shards target
