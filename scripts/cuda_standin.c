// A stand-in for NVIDIA's CUDA driver (libcuda.so.1), for checking the CUDA path without a GPU
// (issue 27, part 1b). cudarc opens the first `libcuda.so*` on LD_LIBRARY_PATH and looks each
// driver function up when it is first called, so this library, found first, takes the driver's
// place. It:
//   - reports $GPT2_STANDIN_DEVICES H100s (default 2; sm_90, 132 SMs, 227 KiB opt-in shared
//     memory per block, 80 GB), each with its primary context, current per thread as in CUDA;
//   - keeps "device memory" in host memory (calloc) and really copies on memcpy; every
//     allocation is recorded with its device, and a copy that reaches outside a live allocation
//     fails (scripts/nccl_standin.c checks NCCL's buffers against the same table);
//   - never executes a kernel (so every number computed on the "device" is meaningless);
//   - on cuModuleLoadData, assembles the PTX with ptxas for sm_90a ($GPT2_STANDIN_PTXAS); a
//     failure fails the load, and so the run;
//   - on cuLaunchKernel, checks the launch against the H100's limits (≤ 1,024 threads per block,
//     grid y/z ≤ 65,535, dynamic shared memory ≤ what cuFuncSetAttribute allowed, at most 227 KiB)
//     and records it.
// Every module and launch is appended to $GPT2_STANDIN_LOG as a JSON line; with
// $GPT2_STANDIN_PTX_DIR set, every module's PTX is kept there.
//
//   cc -shared -fPIC -O1 -o target/cuda-standin/libcuda.so.1 scripts/cuda_standin.c
//      scripts/nccl_standin.c -lpthread        (libnccl.so: a link to the same file)
//
// Used by scripts/cuda_standin.sh (`make check-cuda-kernels`), which builds it, runs a `cuda`
// gpt2 against it and adds every module to the kernel manifest. NVRTC opens libcuda too (for
// cuInit and cuGetExportTable), so it also meets this library.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUstream, *CUevent, *CUmodule;

enum { OK = 0, INVALID_VALUE = 1, LAUNCH_OUT_OF_RESOURCES = 701, INVALID_PTX = 218, NOT_FOUND = 500 };

static const int SM_COUNT = 132, SHARED_OPTIN = 232448, SHARED_DEFAULT = 49152;
static const size_t MEMORY = 80ull << 30;

typedef struct Function {
  char name[512];
  int max_dynamic_shared;
  struct Function *next;
} Function;

typedef struct Module {
  Function *functions;
} Module;

// The log: one JSON line per event, line-buffered so that several processes appending to one
// file never split a line (each line is one write).
FILE *gpt2_standin_log_file(void) {
  static FILE *f = NULL;
  if (!f) {
    const char *p = getenv("GPT2_STANDIN_LOG");
    f = p ? fopen(p, "a") : stderr;
    if (!f) f = stderr;
    setvbuf(f, NULL, _IOLBF, 1 << 16);
  }
  return f;
}
#define log_file gpt2_standin_log_file

enum { MAX_DEVICES = 8 };
static int ctx_tokens[MAX_DEVICES], stream_token;
// The calling thread's current device (its current context), as CUDA keeps it per thread.
static __thread int current_device;

static int device_count(void) {
  const char *v = getenv("GPT2_STANDIN_DEVICES");
  int n = v ? atoi(v) : 2;
  return n < 1 ? 1 : n > MAX_DEVICES ? MAX_DEVICES : n;
}
int gpt2_standin_current_device(void) { return current_device; }

CUresult cuInit(unsigned flags) { (void)flags; return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13040; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = device_count(); return OK; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) { *d = ordinal; return ordinal >= 0 && ordinal < device_count() ? OK : INVALID_VALUE; }
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
  (void)d;
  snprintf(name, (size_t)len, "NVIDIA H100 80GB HBM3 (gpt2 stand-in, no kernels run)");
  return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) { (void)d; *bytes = MEMORY; return OK; }
CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d) { snprintf(id, (size_t)len, "0000:%02x:00.0", 0x18 + d); return OK; }
CUresult cuDeviceGetUuid_v2(char *uuid, CUdevice d) { memset(uuid, 7 + d, 16); return OK; }
CUresult cuDeviceGetUuid(char *uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }
CUresult cuDeviceGetLuid(char *luid, unsigned *mask, CUdevice d) { (void)d; memset(luid, 0, 8); *mask = 0; return OK; }

CUresult cuDeviceGetAttribute(int *v, int attribute, CUdevice d) {
  (void)d;
  switch (attribute) {
  case 1: *v = 1024; break;             // MAX_THREADS_PER_BLOCK
  case 2: case 3: *v = 1024; break;     // MAX_BLOCK_DIM_X / Y
  case 4: *v = 64; break;               // MAX_BLOCK_DIM_Z
  case 5: *v = 2147483647; break;       // MAX_GRID_DIM_X
  case 6: case 7: *v = 65535; break;    // MAX_GRID_DIM_Y / Z
  case 8: *v = SHARED_DEFAULT; break;   // MAX_SHARED_MEMORY_PER_BLOCK
  case 10: *v = 32; break;              // WARP_SIZE
  case 12: *v = 65536; break;           // MAX_REGISTERS_PER_BLOCK
  case 16: *v = SM_COUNT; break;        // MULTIPROCESSOR_COUNT
  case 39: *v = 2048; break;            // MAX_THREADS_PER_MULTIPROCESSOR
  case 75: *v = 9; break;               // COMPUTE_CAPABILITY_MAJOR
  case 76: *v = 0; break;               // COMPUTE_CAPABILITY_MINOR
  case 81: *v = SHARED_OPTIN; break;    // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR (228 KiB less 1 KiB)
  case 82: *v = 65536; break;           // MAX_REGISTERS_PER_MULTIPROCESSOR
  case 97: *v = SHARED_OPTIN; break;    // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
  case 83: case 89: case 115: *v = 0; break; // managed memory, concurrent managed, memory pools
  default: *v = 0; break;
  }
  return OK;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
  if (d < 0 || d >= device_count()) return INVALID_VALUE;
  *c = &ctx_tokens[d];
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return OK; }
CUresult cuDevicePrimaryCtxRelease(CUdevice d) { (void)d; return OK; }
CUresult cuCtxSetCurrent(CUcontext c) {
  if (!c) return OK;
  int d = (int)((int *)c - ctx_tokens);
  if (d < 0 || d >= device_count()) return INVALID_VALUE; // not a context of ours
  current_device = d;
  return OK;
}
CUresult cuCtxGetCurrent(CUcontext *c) { *c = &ctx_tokens[current_device]; return OK; }
CUresult cuCtxPushCurrent_v2(CUcontext c) { return cuCtxSetCurrent(c); }
CUresult cuCtxPopCurrent_v2(CUcontext *c) { if (c) *c = &ctx_tokens[current_device]; return OK; }
CUresult cuCtxGetDevice(CUdevice *d) { *d = current_device; return OK; }
CUresult cuDeviceCanAccessPeer(int *can, CUdevice a, CUdevice b) { *can = a != b; return OK; }
CUresult cuCtxEnablePeerAccess(CUcontext c, unsigned f) { (void)c; (void)f; return OK; }
CUresult cuCtxSynchronize(void) { return OK; }
CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) { *least = 0; *greatest = -5; return OK; }

CUresult cuStreamCreate(CUstream *s, unsigned flags) { (void)flags; *s = &stream_token; return OK; }
CUresult cuStreamCreateWithPriority(CUstream *s, unsigned flags, int p) { (void)flags; (void)p; *s = &stream_token; return OK; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; return OK; }
CUresult cuStreamDestroy_v2(CUstream s) { (void)s; return OK; }
CUresult cuStreamQuery(CUstream s) { (void)s; return OK; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned f) { (void)s; (void)e; (void)f; return OK; }

CUresult cuEventCreate(CUevent *e, unsigned flags) { (void)flags; *e = malloc(8); return OK; }
CUresult cuEventRecord(CUevent e, CUstream s) { (void)e; (void)s; return OK; }
CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned f) { (void)e; (void)s; (void)f; return OK; }
CUresult cuEventSynchronize(CUevent e) { (void)e; return OK; }
CUresult cuEventQuery(CUevent e) { (void)e; return OK; }
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { (void)a; (void)b; *ms = 0; return OK; }
CUresult cuEventDestroy_v2(CUevent e) { free(e); return OK; }

// Every live allocation, with its device: copies and NCCL's buffers are checked against it.
typedef struct Allocation {
  CUdeviceptr base;
  size_t bytes;
  int device;
  struct Allocation *next;
} Allocation;
static Allocation *allocations;
static pthread_mutex_t allocations_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t allocated[MAX_DEVICES];

// Whether [p, p + n) lies inside one live allocation; its device in *device.
int gpt2_standin_find(CUdeviceptr p, size_t n, int *device) {
  int found = 0;
  pthread_mutex_lock(&allocations_lock);
  for (Allocation *a = allocations; a; a = a->next)
    if (p >= a->base && p + n <= a->base + (a->bytes ? a->bytes : 1)) {
      if (device) *device = a->device;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&allocations_lock);
  return found;
}

// A copy that touches device memory outside every live allocation: logged, and refused.
static CUresult bad_copy(const char *call, CUdeviceptr p, size_t n) {
  fprintf(log_file(), "{\"event\":\"error\",\"pid\":%d,\"call\":\"%s\",\"why\":\"%zu bytes at 0x%llx are outside every live allocation\"}\n",
          getpid(), call, n, p);
  return INVALID_VALUE;
}
#define CHECK_RANGE(call, p, n) \
  do { if ((n) != 0 && !gpt2_standin_find((p), (n), NULL)) return bad_copy(call, (p), (n)); } while (0)

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  void *m = calloc(1, bytes ? bytes : 1);
  Allocation *a = malloc(sizeof *a);
  if (!m || !a) { free(m); free(a); return 2; } // OUT_OF_MEMORY
  *p = (CUdeviceptr)(uintptr_t)m;
  *a = (Allocation){*p, bytes, current_device, NULL};
  pthread_mutex_lock(&allocations_lock);
  a->next = allocations;
  allocations = a;
  allocated[current_device] += bytes;
  pthread_mutex_unlock(&allocations_lock);
  return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, CUstream s) { (void)s; return cuMemAlloc_v2(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) {
  Allocation *gone = NULL;
  pthread_mutex_lock(&allocations_lock);
  for (Allocation **a = &allocations; *a; a = &(*a)->next)
    if ((*a)->base == p) {
      gone = *a;
      *a = gone->next;
      allocated[gone->device] -= gone->bytes;
      break;
    }
  pthread_mutex_unlock(&allocations_lock);
  if (!gone) return bad_copy("cuMemFree", p, 0);
  free(gone);
  free((void *)(uintptr_t)p);
  return OK;
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return cuMemFree_v2(p); }
CUresult cuMemAllocHost_v2(void **p, size_t bytes) { *p = calloc(1, bytes ? bytes : 1); return *p ? OK : 2; }
CUresult cuMemFreeHost(void *p) { free(p); return OK; }
CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned f) { (void)p; (void)n; (void)f; return OK; }
CUresult cuMemHostUnregister(void *p) { (void)p; return OK; }
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
  size_t used = allocated[current_device];
  *total = MEMORY;
  *free_bytes = used < MEMORY ? MEMORY - used : 0;
  return OK;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) {
  CHECK_RANGE("cuMemcpyHtoD", d, n);
  memcpy((void *)(uintptr_t)d, h, n);
  return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, CUstream s) { (void)s; return cuMemcpyHtoD_v2(d, h, n); }
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) {
  CHECK_RANGE("cuMemcpyDtoH", d, n);
  memcpy(h, (void *)(uintptr_t)d, n);
  return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, CUstream s) { (void)s; return cuMemcpyDtoH_v2(h, d, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr a, CUdeviceptr b, size_t n) {
  CHECK_RANGE("cuMemcpyDtoD", a, n);
  CHECK_RANGE("cuMemcpyDtoD", b, n);
  memmove((void *)(uintptr_t)a, (void *)(uintptr_t)b, n);
  return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr a, CUdeviceptr b, size_t n, CUstream s) { (void)s; return cuMemcpyDtoD_v2(a, b, n); }
CUresult cuMemcpyPeerAsync(CUdeviceptr a, CUcontext ca, CUdeviceptr b, CUcontext cb, size_t n, CUstream s) {
  (void)ca; (void)cb; (void)s;
  return cuMemcpyDtoD_v2(a, b, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
  CHECK_RANGE("cuMemsetD8", d, n);
  memset((void *)(uintptr_t)d, v, n);
  return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) { (void)s; return cuMemsetD8_v2(d, v, n); }
CUresult cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, CUstream s) {
  (void)s;
  CHECK_RANGE("cuMemsetD32", d, 4 * n);
  unsigned *p = (unsigned *)(uintptr_t)d;
  for (size_t i = 0; i < n; i++) p[i] = v;
  return OK;
}

typedef struct {
  size_t srcXInBytes, srcY; int srcMemoryType; const void *srcHost; CUdeviceptr srcDevice; void *srcArray; size_t srcPitch;
  size_t dstXInBytes, dstY; int dstMemoryType; void *dstHost; CUdeviceptr dstDevice; void *dstArray; size_t dstPitch;
  size_t WidthInBytes, Height;
} Memcpy2D;
CUresult cuMemcpy2DAsync_v2(const Memcpy2D *c, CUstream s) {
  (void)s;
  // Memory types: 1 host, 2 device (both plain host memory here).
  const char *src = c->srcMemoryType == 1 ? (const char *)c->srcHost : (const char *)(uintptr_t)c->srcDevice;
  char *dst = c->dstMemoryType == 1 ? (char *)c->dstHost : (char *)(uintptr_t)c->dstDevice;
  if (c->Height) { // the rows' whole span on each device side
    if (c->srcMemoryType != 1)
      CHECK_RANGE("cuMemcpy2D", c->srcDevice + c->srcY * c->srcPitch + c->srcXInBytes, (c->Height - 1) * c->srcPitch + c->WidthInBytes);
    if (c->dstMemoryType != 1)
      CHECK_RANGE("cuMemcpy2D", c->dstDevice + c->dstY * c->dstPitch + c->dstXInBytes, (c->Height - 1) * c->dstPitch + c->WidthInBytes);
  }
  for (size_t row = 0; row < c->Height; row++)
    memcpy(dst + (c->dstY + row) * c->dstPitch + c->dstXInBytes, src + (c->srcY + row) * c->srcPitch + c->srcXInBytes,
           c->WidthInBytes);
  return OK;
}
CUresult cuMemcpy2D_v2(const Memcpy2D *c) { return cuMemcpy2DAsync_v2(c, NULL); }

static unsigned long modules;
CUresult cuModuleLoadData(CUmodule *m, const void *image) {
  const char *ptx = (const char *)image;
  const char *ptxas = getenv("GPT2_STANDIN_PTXAS");
  unsigned long id = ++modules;
  int ok = 1;
  // The PTX is kept in $GPT2_STANDIN_PTX_DIR (for the manifest), else in a temporary file.
  const char *dir = getenv("GPT2_STANDIN_PTX_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/module-%d-%lu.ptx", dir ? dir : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp"),
           getpid(), id);
  FILE *f = fopen(path, "w");
  if (!f) return INVALID_VALUE;
  fputs(ptx, f);
  fclose(f);
  if (ptxas) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' -arch=sm_90a -O3 '%s' -o /dev/null 2>&1", ptxas, path);
    ok = system(cmd) == 0;
  }
  if (!dir && ok) unlink(path);
  // The kernel names: every `.entry NAME(` of the PTX; the line's pieces held together.
  flockfile(log_file());
  fprintf(log_file(), "{\"event\":\"module\",\"id\":%lu,\"ptx\":\"%s\",\"assembled\":%s,\"ptxas\":%s,\"entries\":[",
          id, dir ? path : "", ok ? "true" : "false", ptxas ? "true" : "false");
  int first = 1;
  for (const char *p = strstr(ptx, ".entry "); p; p = strstr(p + 7, ".entry ")) {
    const char *s = p + 7, *e = strchr(s, '(');
    if (!e) break;
    fprintf(log_file(), "%s\"%.*s\"", first ? "" : ",", (int)(e - s), s);
    first = 0;
  }
  fprintf(log_file(), "]}\n");
  funlockfile(log_file());
  if (!ok) return INVALID_PTX;
  *m = calloc(1, sizeof(Module));
  return OK;
}
CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned n, void *o, void **v) {
  (void)n; (void)o; (void)v;
  return cuModuleLoadData(m, image);
}
CUresult cuModuleUnload(CUmodule m) {
  Module *mod = m;
  for (Function *f = mod->functions, *next; f; f = next) { next = f->next; free(f); }
  free(mod);
  return OK;
}
CUresult cuModuleGetFunction(void **out, CUmodule m, const char *name) {
  Module *mod = m;
  Function *f = calloc(1, sizeof(Function));
  snprintf(f->name, sizeof f->name, "%s", name);
  f->max_dynamic_shared = SHARED_DEFAULT;
  f->next = mod->functions;
  mod->functions = f;
  *out = f;
  return OK;
}
CUresult cuFuncSetAttribute(void *func, int attribute, int value) {
  Function *f = func;
  if (attribute == 8) { // MAX_DYNAMIC_SHARED_SIZE_BYTES
    if (value > SHARED_OPTIN) return INVALID_VALUE;
    f->max_dynamic_shared = value;
  }
  return OK;
}
CUresult cuFuncGetAttribute(int *v, int attribute, void *func) {
  (void)func;
  *v = attribute == 0 ? 1024 : 0; // MAX_THREADS_PER_BLOCK
  return OK;
}
CUresult cuFuncSetCacheConfig(void *f, int c) { (void)f; (void)c; return OK; }

CUresult cuLaunchKernel(void *func, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, CUstream s, void **params, void **extra) {
  (void)s; (void)params; (void)extra;
  Function *f = func;
  const char *why = NULL;
  unsigned long threads = (unsigned long)bx * by * bz;
  if (threads == 0 || threads > 1024) why = "threads per block";
  else if (bx > 1024 || by > 1024 || bz > 64) why = "block dimension";
  else if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535) why = "grid dimension";
  else if ((int)shared > f->max_dynamic_shared || (int)shared > SHARED_OPTIN) why = "dynamic shared memory";
  fprintf(log_file(),
          "{\"event\":\"launch\",\"pid\":%d,\"device\":%d,\"kernel\":\"%s\",\"grid\":[%u,%u,%u],\"block\":[%u,%u,%u],\"shared\":%u,\"ok\":%s%s%s%s}\n",
          getpid(), current_device, f->name, gx, gy, gz, bx, by, bz, shared, why ? "false" : "true", why ? ",\"why\":\"" : "", why ? why : "",
          why ? "\"" : "");
  return why ? LAUNCH_OUT_OF_RESOURCES : OK;
}

CUresult cuGetErrorString(CUresult e, const char **s) {
  (void)e;
  *s = "error from the gpt2 CUDA stand-in driver (see $GPT2_STANDIN_LOG)";
  return OK;
}
CUresult cuGetErrorName(CUresult e, const char **s) {
  (void)e;
  *s = "CUDA_ERROR_STANDIN";
  return OK;
}

// NVRTC itself opens libcuda and asks for the driver's private export tables (found with
// LD_DEBUG=symbols); "not supported" makes it go on without them.
CUresult cuGetExportTable(const void **table, const void *uuid) {
  (void)uuid;
  *table = NULL;
  return 801; // CUDA_ERROR_NOT_SUPPORTED
}
