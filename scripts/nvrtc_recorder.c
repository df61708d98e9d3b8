// A pass-through NVRTC (libnvrtc.so) for the stand-in driver runs (scripts/cuda_standin.sh):
// cudarc opens the first `libnvrtc.so*` on LD_LIBRARY_PATH, and this one, found first, forwards
// every call to NVIDIA's libnvrtc ($GPT2_STANDIN_NVRTC, the PyPI wheel's) after writing each
// program's CUDA C++ source to $GPT2_STANDIN_CU_DIR, so the manifest can name the source of
// every kernel Burn and we launch and the check can compile it again outside our code.
//
//   cc -shared -fPIC -O1 -o target/cuda-standin/libnvrtc.so scripts/nvrtc_recorder.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int nvrtcResult;
typedef void *nvrtcProgram;

static void *real(const char *symbol) {
  static void *lib = NULL;
  if (!lib) {
    const char *path = getenv("GPT2_STANDIN_NVRTC");
    lib = path ? dlopen(path, RTLD_NOW | RTLD_GLOBAL) : NULL;
    if (!lib) {
      fprintf(stderr, "nvrtc_recorder: cannot open $GPT2_STANDIN_NVRTC (%s): %s\n", path ? path : "unset", dlerror());
      abort();
    }
  }
  void *f = dlsym(lib, symbol);
  if (!f) {
    fprintf(stderr, "nvrtc_recorder: %s missing from the real NVRTC\n", symbol);
    abort();
  }
  return f;
}

nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name, int n, const char *const *headers,
                               const char *const *include_names) {
  static unsigned long count;
  const char *dir = getenv("GPT2_STANDIN_CU_DIR");
  if (dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/source-%d-%lu.cu", dir, getpid(), ++count);
    FILE *f = fopen(path, "w");
    if (f) {
      fputs(src, f);
      fclose(f);
    }
  }
  nvrtcResult (*create)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *) =
      real("nvrtcCreateProgram");
  return create(prog, src, name, n, headers, include_names);
}

nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int n, const char *const *options) {
  nvrtcResult (*f)(nvrtcProgram, int, const char *const *) = real("nvrtcCompileProgram");
  return f(prog, n, options);
}
nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog) {
  nvrtcResult (*f)(nvrtcProgram *) = real("nvrtcDestroyProgram");
  return f(prog);
}
nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t *size) {
  nvrtcResult (*f)(nvrtcProgram, size_t *) = real("nvrtcGetPTXSize");
  return f(prog, size);
}
nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char *ptx) {
  nvrtcResult (*f)(nvrtcProgram, char *) = real("nvrtcGetPTX");
  return f(prog, ptx);
}
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *size) {
  nvrtcResult (*f)(nvrtcProgram, size_t *) = real("nvrtcGetCUBINSize");
  return f(prog, size);
}
nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *cubin) {
  nvrtcResult (*f)(nvrtcProgram, char *) = real("nvrtcGetCUBIN");
  return f(prog, cubin);
}
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *size) {
  nvrtcResult (*f)(nvrtcProgram, size_t *) = real("nvrtcGetProgramLogSize");
  return f(prog, size);
}
nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log) {
  nvrtcResult (*f)(nvrtcProgram, char *) = real("nvrtcGetProgramLog");
  return f(prog, log);
}
const char *nvrtcGetErrorString(nvrtcResult r) {
  const char *(*f)(nvrtcResult) = real("nvrtcGetErrorString");
  return f(r);
}
nvrtcResult nvrtcVersion(int *major, int *minor) {
  nvrtcResult (*f)(int *, int *) = real("nvrtcVersion");
  return f(major, minor);
}
nvrtcResult nvrtcGetNumSupportedArchs(int *n) {
  nvrtcResult (*f)(int *) = real("nvrtcGetNumSupportedArchs");
  return f(n);
}
nvrtcResult nvrtcGetSupportedArchs(int *archs) {
  nvrtcResult (*f)(int *) = real("nvrtcGetSupportedArchs");
  return f(archs);
}
