// Checks the NCCL stand-in itself (scripts/nccl_standin.c) before scripts/cuda_standin.sh trusts
// it: two ranks as two threads of one process and as two processes (fork), an all-reduce (avg)
// and a broadcast whose results are compared with the arithmetic, send/recv, and the failures
// it must report: a rank that never comes, ranks that disagree on a collective, a buffer outside
// the device allocations, a buffer on another device; and the driver's refusal of a copy past an
// allocation. Exits non-zero when any check failed (each is printed).
//
//   cc -o t scripts/nccl_standin_test.c -L DIR -l:libcuda.so.1 -lpthread && GPT2_STANDIN_LOG=/dev/null ./t
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { char internal[128]; } ncclUniqueId;
int ncclGetUniqueId(ncclUniqueId *);
int ncclCommInitRank(void **, int, ncclUniqueId, int);
int ncclAllReduce(const void *, void *, size_t, int, int, void *, void *);
int ncclBroadcast(const void *, void *, size_t, int, int, void *, void *);
int ncclSend(const void *, size_t, int, int, void *, void *);
int ncclRecv(void *, size_t, int, int, void *, void *);
int ncclGroupStart(void);
int ncclGroupEnd(void);
int ncclCommDestroy(void *);
int cuDevicePrimaryCtxRetain(void **, int);
int cuCtxSetCurrent(void *);
int cuMemAlloc_v2(unsigned long long *, size_t);
int cuMemcpyHtoD_v2(unsigned long long, const void *, size_t);

enum { F32 = 7, SUM = 0, AVG = 4, N = 1000 };
static ncclUniqueId id;
static int failures;
#define EXPECT(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAILED: " __VA_ARGS__); fprintf(stderr, "\n"); failures++; } } while (0)

static float *device_buffer(int device, size_t n) {
  void *ctx;
  unsigned long long p;
  cuDevicePrimaryCtxRetain(&ctx, device);
  cuCtxSetCurrent(ctx);
  cuMemAlloc_v2(&p, n * sizeof(float));
  return (float *)(uintptr_t)p;
}

// Rank `rank` of 2: the good calls, values checked.
static void good_rank(int rank) {
  float *x = device_buffer(rank, N), *y = device_buffer(rank, N);
  void *comm = NULL;
  EXPECT(ncclCommInitRank(&comm, 2, id, rank) == 0, "rank %d init", rank);
  for (int i = 0; i < N; i++) x[i] = (float)(rank + 1) * i;
  EXPECT(ncclAllReduce(x, x, N, F32, AVG, comm, NULL) == 0, "all-reduce");
  for (int i = 0; i < N; i++) EXPECT(x[i] == 1.5f * i, "avg[%d] = %g on rank %d", i, x[i], rank);
  for (int i = 0; i < N; i++) y[i] = rank ? -1 : i;
  ncclGroupStart();
  EXPECT(ncclBroadcast(y, y, N, F32, 0, comm, NULL) == 0, "broadcast");
  EXPECT(ncclAllReduce(y, x, N, F32, SUM, comm, NULL) == 0, "grouped sum");
  EXPECT(ncclGroupEnd() == 0, "group end");
  for (int i = 0; i < N; i++) EXPECT(y[i] == i && x[i] == 2 * i, "broadcast/sum [%d] on rank %d", i, rank);
  if (rank == 0) EXPECT(ncclSend(y, N, F32, 1, comm, NULL) == 0, "send");
  else {
    EXPECT(ncclRecv(x, N, F32, 0, comm, NULL) == 0, "recv");
    for (int i = 0; i < N; i++) EXPECT(x[i] == i, "recv[%d]", i);
  }
  // Failures: a host buffer, a buffer of the other device, then a disagreement.
  float host[4];
  EXPECT(ncclAllReduce(host, host, 4, F32, SUM, comm, NULL) != 0, "a host buffer was accepted");
  float *other = device_buffer(1 - rank, N);
  device_buffer(rank, 1);
  EXPECT(ncclAllReduce(other, other, N, F32, SUM, comm, NULL) != 0, "a buffer of the other device was accepted");
  // Whichever rank posts second sees the mismatch; the first then waits for a part that never
  // comes and times out: both fail.
  EXPECT(ncclAllReduce(x, x, rank ? N : N - 1, F32, SUM, comm, NULL) != 0, "different counts were accepted on rank %d", rank);
  ncclCommDestroy(comm);
}

static void *thread_rank(void *arg) { good_rank((int)(intptr_t)arg); return NULL; }

int main(void) {
  setenv("GPT2_STANDIN_NCCL_TIMEOUT_S", "3", 1);
  // Two threads of one process.
  ncclGetUniqueId(&id);
  pthread_t t[2];
  for (int r = 0; r < 2; r++) pthread_create(&t[r], NULL, thread_rank, (void *)(intptr_t)r);
  for (int r = 0; r < 2; r++) pthread_join(t[r], NULL);
  // Two processes.
  ncclGetUniqueId(&id);
  pid_t child = fork();
  if (child == 0) { good_rank(1); _exit(failures ? 1 : 0); }
  good_rank(0);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the second process's checks");
  // The driver's copies stay inside live allocations: 8 bytes from 2 before the end are refused.
  float *edge = device_buffer(0, 4), bytes[2] = {0, 0};
  EXPECT(cuMemcpyHtoD_v2((unsigned long long)(uintptr_t)edge + 14, bytes, 8) != 0, "a copy past an allocation was accepted");
  EXPECT(cuMemcpyHtoD_v2((unsigned long long)(uintptr_t)edge + 8, bytes, 8) == 0, "a copy inside an allocation was refused");
  // A rank that never comes: the join times out with an error.
  ncclGetUniqueId(&id);
  device_buffer(0, 1);
  void *comm = NULL;
  EXPECT(ncclCommInitRank(&comm, 2, id, 0) != 0, "a join without the second rank succeeded");
  // An id that was not minted here.
  ncclUniqueId bad;
  memset(&bad, 3, sizeof bad);
  EXPECT(ncclCommInitRank(&comm, 1, bad, 0) != 0, "a foreign id was accepted");
  printf("%s: NCCL stand-in self-check\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
