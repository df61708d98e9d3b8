#!/usr/bin/env python3
"""Compile the CUDA C++ of our CubeCL kernels with NVIDIA's own NVRTC and ptxas, no GPU needed.

Input: OUT/sources.jsonl and the .cu files `cargo run -p gpt2-model --features cuda --example
cuda_kernels -- OUT` writes (every kernel of ours, as cubecl-cuda would generate it for an A100
and an H100, in each dtype and comptime variant training uses).

For each source:
  1. NVRTC (libnvrtc.so.12 from the PyPI wheel nvidia-cuda-nvrtc-cu12, called through ctypes,
     not through cubecl or cudarc) with exactly the options cubecl-cuda 0.11.3 passes at run time
     (compute/context.rs): --gpu-architecture=sm_80 | sm_90a, --include-path=$CUDA_PATH/include
     (the headers of nvidia-cuda-runtime-cu12), -lineinfo;
  2. ptxas -v (nvidia-cuda-nvcc-cu12) on the PTX for the same architecture: registers, spill
     stores/loads, static shared memory;
  3. checks: every compile succeeds; registers x threads per block <= 65,536 (the register file
     of an SM on sm_80 and sm_90; a launch asking for more fails with "too many resources
     requested"); static + dynamic shared memory <= the card's opt-in limit per block.

Writes OUT/manifest.jsonl (one line per compiled kernel variant), the .ptx beside each .cu, and
prints a summary table. Exits 1 when a check fails.

  python3 scripts/cuda_kernels.py target/cuda-kernels
"""
import ctypes
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

REGISTERS_PER_SM = 65536
DEFAULT_SHARED = 48 * 1024


def wheel_paths():
    """NVRTC, the CUDA headers and ptxas from the installed nvidia-* wheels."""
    import importlib.util
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the nvidia-cuda-* wheels are not installed in this Python "
                 "(pip install nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 "
                 "nvidia-cuda-nvcc-cu12==12.9.86)")
    root = list(spec.submodule_search_locations)[0]
    lib = os.path.join(root, "cuda_nvrtc", "lib")
    paths = {
        "nvrtc": os.path.join(lib, "libnvrtc.so.12"),
        "nvrtc_lib": lib,
        "include": os.path.join(root, "cuda_runtime", "include"),
        "ptxas": os.path.join(root, "cuda_nvcc", "bin", "ptxas"),
    }
    for k, p in paths.items():
        if not os.path.exists(p):
            sys.exit(f"{k}: {p} is missing (reinstall the nvidia-cuda-* wheels)")
    return paths


class Nvrtc:
    def __init__(self, paths):
        # NVRTC loads its builtins library by soname at compile time: load it first, globally.
        for name in sorted(os.listdir(paths["nvrtc_lib"])):
            if name.startswith("libnvrtc-builtins.so"):
                ctypes.CDLL(os.path.join(paths["nvrtc_lib"], name), mode=ctypes.RTLD_GLOBAL)
                break
        self.lib = ctypes.CDLL(paths["nvrtc"])
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"{major.value}.{minor.value}"

    def compile(self, source, options):
        """(ok, log, ptx)."""
        lib = self.lib
        prog = ctypes.c_void_p()
        rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), None, 0, None, None)
        if rc != 0:
            return False, f"nvrtcCreateProgram failed ({rc})", None
        opts = [o.encode() for o in options]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        ptx = None
        if rc == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode()
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        return rc == 0, log, ptx


def ptxas(paths, ptx_path, arch):
    """ptxas -v: registers, spill bytes (stores + loads), static shared bytes, and its report."""
    r = subprocess.run([paths["ptxas"], "-v", f"-arch={arch}", ptx_path, "-o", os.devnull],
                       capture_output=True, text=True)
    report = r.stdout + r.stderr
    if r.returncode != 0:
        return None, report
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", report)]
    stores = [int(x) for x in re.findall(r"(\d+) bytes spill stores", report)]
    loads = [int(x) for x in re.findall(r"(\d+) bytes spill loads", report)]
    smem = [int(x) for x in re.findall(r"(\d+) bytes smem", report)]
    return {
        "registers": max(regs, default=0),
        "spill_bytes": sum(stores) + sum(loads),
        "static_shared_bytes": max(smem, default=0),
    }, report


def main(argv):
    out = argv[1] if len(argv) > 1 else "target/cuda-kernels"
    index_path = os.path.join(out, "sources.jsonl")
    if not os.path.exists(index_path):
        sys.exit(f"{index_path}: missing; run the cuda_kernels example first (make check-cuda-kernels)")
    paths = wheel_paths()
    nvrtc = Nvrtc(paths)
    entries = [json.loads(line) for line in open(index_path)]
    manifest, failures = [], []
    for e in entries:
        src_path = e["source"]
        label = f"{e['arch']} {e['kernel']} {e['dtype']} {e['variant']}".strip()
        source = open(src_path).read()
        options = [f"--gpu-architecture={e['nvrtc_arch']}", f"--include-path={paths['include']}",
                   "-lineinfo"]
        ok, log, ptx = nvrtc.compile(source, options)
        if not ok:
            failures.append(f"{label}: NVRTC failed:\n{log}")
            continue
        ptx_path = src_path[:-3] + ".ptx"
        with open(ptx_path, "w") as f:
            f.write(ptx)
        stats, report = ptxas(paths, ptx_path, e["nvrtc_arch"])
        if stats is None:
            failures.append(f"{label}: ptxas failed:\n{report}")
            continue
        shared = stats["static_shared_bytes"] + e["dynamic_shared_bytes"]
        row = {
            "kernel": e["kernel"],
            "origin": e["origin"],
            "arch": e["arch"],
            "dtype": e["dtype"],
            "variant": e["variant"],
            "source": src_path,
            "registers": stats["registers"],
            "spill_bytes": stats["spill_bytes"],
            "shared_bytes": shared,
            "threads": e["threads"],
            # Launch counts come from runs under the stand-in driver (issue 27, part b), which
            # this check does not make yet.
            "launches": None,
            "tensor_cores": bool(re.search(r"\b(mma|wmma)\.", ptx)),
            "nvrtc": nvrtc.version,
        }
        manifest.append(row)
        if stats["registers"] * e["threads"] > REGISTERS_PER_SM:
            failures.append(f"{label}: {stats['registers']} registers x {e['threads']} threads "
                            f"> {REGISTERS_PER_SM}: the launch would fail (too many resources)")
        if shared > e["shared_optin_limit"]:
            failures.append(f"{label}: {shared} B of shared memory > the card's opt-in "
                            f"{e['shared_optin_limit']} B")
        if log.strip():
            print(f"note: {label}: NVRTC said: {log.strip()}")
    with open(os.path.join(out, "manifest.jsonl"), "w") as f:
        for row in manifest:
            f.write(json.dumps(row) + "\n")
    summary(manifest, nvrtc.version)
    if failures:
        print(f"\n{len(failures)} FAILED:")
        for fail in failures:
            print(f"  - {fail}")
        return 1
    print(f"\nall {len(manifest)} kernel variants compiled (NVRTC {nvrtc.version}) and within the limits")
    return 0


def summary(manifest, version):
    print(f"\nCUDA kernels compiled by NVRTC {version} + ptxas (manifest.jsonl)")
    counts = Counter((r["origin"], r["arch"], r["dtype"]) for r in manifest)
    print(f"{'origin':8} {'arch':6} {'dtype':6} {'variants':>8}")
    for (origin, arch, dtype), n in sorted(counts.items()):
        print(f"{origin:8} {arch:6} {dtype:6} {n:8}")
    kernels = defaultdict(set)
    for r in manifest:
        kernels[r["arch"]].add(r["kernel"])
    for arch, names in sorted(kernels.items()):
        print(f"{arch}: {len(names)} distinct kernels of ours")
    spills = [r for r in manifest if r["spill_bytes"] > 0]
    print(f"\nspilling variants: {len(spills)}")
    for r in sorted(spills, key=lambda r: -r["spill_bytes"]):
        print(f"  {r['arch']} {r['kernel']} {r['dtype']} {r['variant']}: {r['spill_bytes']} B")
    print("\nlargest register counts:")
    print(f"  {'arch':6} {'kernel':20} {'dtype':5} {'variant':16} {'regs':>4} {'threads':>7} {'regs x thr':>10} {'smem':>7}")
    for r in sorted(manifest, key=lambda r: -r["registers"])[:10]:
        print(f"  {r['arch']:6} {r['kernel']:20} {r['dtype']:5} {r['variant']:16} {r['registers']:4} "
              f"{r['threads']:7} {r['registers'] * r['threads']:10} {r['shared_bytes']:7}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
