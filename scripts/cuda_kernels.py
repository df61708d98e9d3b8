#!/usr/bin/env python3
"""Compile the CUDA C++ of our CubeCL kernels with NVIDIA's own NVRTC and ptxas, no GPU needed.

Input: OUT/sources.jsonl and the .cu files `target/debug/examples/cuda_kernels OUT` (the test
build's example, crates/gpt2-model/examples/cuda_kernels.rs) writes (every kernel of ours, as cubecl-cuda would generate it for an A100
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


# The names our kernels get in the PTX (cube/*.rs); everything else a run launches is Burn's.
OURS = ("flash_", "layer_norm_", "gelu_", "softmax_xent_", "token_nll_", "adamw_")


def ptxas_per_entry(paths, ptx_path):
    """ptxas -v for sm_90a on a module: {entry: (registers, spill bytes, static smem)}."""
    r = subprocess.run([paths["ptxas"], "-v", "-arch=sm_90a", ptx_path, "-o", os.devnull],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stdout + r.stderr
    out, name = {}, None
    for line in (r.stdout + r.stderr).splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            name = m.group(1)
            out[name] = [0, 0, 0]
            continue
        if name is None:
            continue
        if m := re.search(r"Used (\d+) registers", line):
            out[name][0] = int(m.group(1))
        spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", line)]
        out[name][1] += sum(spills)
        if m := re.search(r"(\d+) bytes smem", line):
            out[name][2] = int(m.group(1))
    return out, ""


def standin(out):
    """Adds the kernels of the stand-in driver's runs (scripts/cuda_standin.sh) to the manifest:
    one row per kernel as launched on sm_90, with its origin, registers, spills, shared memory
    and launch count; fails on a module that did not assemble, a launch past a limit, a copy
    outside the device allocations or an NCCL call the NCCL stand-in refused."""
    paths = wheel_paths()
    events = [json.loads(line) for line in open(os.path.join(out, "standin.jsonl"))]
    modules = [e for e in events if e["event"] == "module"]
    launches = [e for e in events if e["event"] == "launch"]
    failures = [f"module {m['id']} ({', '.join(m['entries'])}): ptxas failed for sm_90a"
                for m in modules if not m["assembled"]]
    failures += [f"launch of {l['kernel']} grid {l['grid']} block {l['block']} shared "
                 f"{l['shared']}: {l['why']} past the H100's limit" for l in launches if not l["ok"]]
    failures += [f"{e['call']} (pid {e['pid']}): {e['why']}" for e in events if e["event"] == "error"]
    nccl_calls = [e for e in events if e["event"] == "nccl"]
    failures += [f"{e['call']} (pid {e['pid']}, rank {e.get('rank')}): {e['why']}" for e in nccl_calls if not e["ok"]]
    # The recorded CUDA C++ of each kernel (its `__global__` name), compiled again here with NVRTC
    # through ctypes, outside cubecl and cudarc, with cubecl-cuda's options for sm_90.
    nvrtc = Nvrtc(paths)
    include = os.path.join("target", "cuda-standin", "cuda", "include")
    source_of = {}
    cu_dir = os.path.join(out, "standin-cu")
    for name in sorted(os.listdir(cu_dir)) if os.path.isdir(cu_dir) else []:
        path = os.path.join(cu_dir, name)
        text = open(path).read()
        kernels = re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(", text)
        if not kernels or all(k in source_of for k in kernels):
            continue
        ok, log, _ = nvrtc.compile(text, ["--gpu-architecture=sm_90a", f"--include-path={include}", "-lineinfo"])
        if not ok:
            failures.append(f"{path}: compiles at run time but not again with NVRTC:\n{log}")
        for k in kernels:
            source_of.setdefault(k, path)
    count = Counter(l["kernel"] for l in launches)
    threads = defaultdict(int)
    dynamic = defaultdict(int)
    for l in launches:
        threads[l["kernel"]] = max(threads[l["kernel"]], l["block"][0] * l["block"][1] * l["block"][2])
        dynamic[l["kernel"]] = max(dynamic[l["kernel"]], l["shared"])
    rows, seen = [], set()
    for m in modules:
        stats, report = ptxas_per_entry(paths, m["ptx"])
        if stats is None:
            failures.append(f"{m['ptx']}: ptxas -v failed:\n{report}")
            continue
        with open(m["ptx"]) as f:
            tensor_cores = bool(re.search(r"\b(mma|wmma)\.", f.read()))
        for name, (regs, spill, smem) in stats.items():
            if name in seen:
                continue
            seen.add(name)
            dtype = next((t for t in ("bf16", "f16", "f32", "flex32") if re.search(rf"_{t}(_|$)", name)), "-")
            row = {"kernel": name, "origin": "ours" if name.startswith(OURS) else "burn", "arch": "sm_90",
                   "dtype": dtype, "variant": "standin", "source": source_of.get(name),
                   "ptx": m["ptx"], "registers": regs,
                   "spill_bytes": spill, "shared_bytes": smem + dynamic[name], "threads": threads[name],
                   "launches": count[name], "tensor_cores": tensor_cores, "nvrtc": "run time"}
            rows.append(row)
            if regs * threads[name] > REGISTERS_PER_SM:
                failures.append(f"{name}: {regs} registers x {threads[name]} threads > {REGISTERS_PER_SM}")
    # Part a's rows stay; an earlier stand-in run's are replaced.
    path = os.path.join(out, "manifest.jsonl")
    kept = [line for line in open(path)] if os.path.exists(path) else []
    kept = [line for line in kept if json.loads(line).get("variant") != "standin"]
    with open(path, "w") as f:
        f.writelines(kept)
        for row in rows:
            f.write(json.dumps(row) + "\n")
    by = Counter((r["origin"], r["dtype"]) for r in rows)
    missing = [r["kernel"] for r in rows if r["source"] is None]
    if missing:
        failures.append(f"no recorded source for {len(missing)} kernels, e.g. {missing[0]}")
    print(f"\nstand-in driver runs: {len(modules)} modules assembled for sm_90a, {len(launches)} launches, "
          f"{len(rows)} distinct kernels (manifest.jsonl, variant \"standin\"); their {len(set(source_of.values()))} "
          f"recorded sources compiled again with NVRTC {nvrtc.version}")
    for (origin, dtype), n in sorted(by.items()):
        print(f"  {origin:5} {dtype:6} {n:4} kernels")
    calls = Counter((e["call"], e.get("nranks"), e.get("dtype")) for e in nccl_calls if e["ok"])
    print(f"NCCL calls the NCCL stand-in checked and carried out: {sum(calls.values())}"
          + "".join(f"\n  {n:6}  {c}" + (f" ({k} ranks)" if k else "") + (f" {t}" if t else "")
                    for (c, k, t), n in sorted(calls.items(), key=str)))
    print("most launched:")
    for name, n in count.most_common(8):
        print(f"  {n:6}  {name}")
    tc = sorted(r["kernel"] for r in rows if r["tensor_cores"] and r["origin"] == "burn")
    print(f"Burn's kernels whose module has mma/wmma instructions: {len(tc)}")
    spills = [r for r in rows if r["spill_bytes"] > 0]
    print(f"spilling: {len(spills)}" + "".join(f"\n  {r['kernel']}: {r['spill_bytes']} B" for r in spills))
    if failures:
        print(f"\n{len(failures)} FAILED:")
        for fail in failures:
            print(f"  - {fail}")
        return 1
    print(f"\nstand-in runs: every module assembled for sm_90a, all {len(launches)} launches within "
          f"an H100's limits, every copy inside a live allocation, {len(nccl_calls)} NCCL calls checked")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "standin":
        sys.exit(standin(sys.argv[2]))
    sys.exit(main(sys.argv))
