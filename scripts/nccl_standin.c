// A stand-in for NCCL (libnccl.so), built into the same library as the stand-in CUDA driver
// (scripts/cuda_standin.c; libnccl.so is a link to that file, so the dynamic loader hands
// cudarc the one object for both names and they share its allocation table). Issue 27: the
// NCCL calls of a 2-device run (Burn's in-process collectives on `device.ids: [0, 1]`) and of
// the NCCL engine between processes (crates/gpt2-model/src/nccl.rs, under mpirun) are made
// against it and checked without a GPU:
//   - a communicator joins only with an id this library minted (a corrupted id exchange fails),
//     every rank once, with one world size, on the device current at the call, no two ranks of
//     one process on one device; it waits for all ranks as ncclCommInitRank does;
//   - every buffer lies inside one live allocation of the stand-in driver, on the
//     communicator's device, `count × size of dtype` long; in-place means the same pointer;
//   - every rank makes the same collective in the same order (call, count, dtype, op, root): a
//     mismatch, or a rank that never comes (which on GPUs is a hang), fails the call after
//     $GPT2_STANDIN_NCCL_TIMEOUT_S seconds (default 120) with the ranks named;
//   - the collective is carried out (sum, prod, max, min, avg; broadcast; send/recv) on the
//     host copies, so what the ranks hold afterwards is what NCCL would give them.
// Ranks meet in a file mapped by every process ($GPT2_STANDIN_NCCL_DIR, else $TMPDIR or /tmp;
// unlinked once all ranks joined), guarded by a process-shared mutex: threads of one process
// and processes under mpirun alike. Every call is a JSON line in $GPT2_STANDIN_LOG
// ("event":"nccl"; "ok":false with "why" on a failure). Group calls queue their operations and
// run them at ncclGroupEnd: sends first, then collectives in order, then receives.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

FILE *gpt2_standin_log_file(void);
int gpt2_standin_current_device(void);
int gpt2_standin_find(unsigned long long p, size_t n, int *device);

typedef int ncclResult_t;
enum { SUCCESS = 0, SYSTEM_ERROR = 2, INTERNAL_ERROR = 3, INVALID_ARGUMENT = 4, INVALID_USAGE = 5 };
enum { MAX_RANKS = 8, ID_BYTES = 128, HEADER = 1 << 16 };
static const char MAGIC[] = "gpt2-nccl-standin";

typedef struct { char internal[ID_BYTES]; } ncclUniqueId;

enum Call { ALL_REDUCE, BROADCAST, REDUCE, ALL_GATHER, REDUCE_SCATTER, SEND, RECV };
static const char *CALL_NAMES[] = {"ncclAllReduce", "ncclBroadcast", "ncclReduce", "ncclAllGather",
                                   "ncclReduceScatter", "ncclSend", "ncclRecv"};
static const char *DTYPE_NAMES[] = {"i8", "u8", "i32", "u32", "i64", "u64", "f16", "f32", "f64", "bf16"};
static const size_t DTYPE_BYTES[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
static const char *OP_NAMES[] = {"sum", "prod", "max", "min", "avg"};

// One collective as every rank must agree on it.
typedef struct {
  int call, dtype, op, root;
  size_t count;
} Shape;

// A one-message mailbox per (sender, receiver) pair.
typedef struct {
  int full;
  Shape shape;
} Mailbox;

// What the ranks share, at the start of the mapped file; the data slots follow it.
typedef struct {
  char magic[32];
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int nranks, joined;
  int device[MAX_RANKS], pid[MAX_RANKS], present[MAX_RANKS];
  // The collective in progress: its number, its shape (the first poster's), who posted it.
  unsigned long seq;
  Shape shape;
  int first_rank, posted, consumed, posted_by[MAX_RANKS];
  Mailbox mail[MAX_RANKS][MAX_RANKS];
  size_t slot_bytes;
} Clique;

typedef struct {
  Clique *c;
  size_t map_bytes;
  int rank, nranks, device;
  unsigned long next_seq;
  char error[512];
} Comm;

static size_t slot_bytes(void) {
  const char *v = getenv("GPT2_STANDIN_NCCL_SLOT_MB");
  return (size_t)(v ? atoi(v) : 256) << 20;
}
static int timeout_s(void) {
  const char *v = getenv("GPT2_STANDIN_NCCL_TIMEOUT_S");
  return v ? atoi(v) : 120;
}
// Collective slot r, then the mailboxes' slots (sender s, receiver r).
static char *coll_slot(Clique *c, int r) { return (char *)c + HEADER + (size_t)r * c->slot_bytes; }
static char *mail_slot(Clique *c, int s, int r) {
  return (char *)c + HEADER + (size_t)(MAX_RANKS + s * MAX_RANKS + r) * c->slot_bytes;
}
static size_t file_bytes(size_t slot) { return HEADER + (size_t)(MAX_RANKS + MAX_RANKS * MAX_RANKS) * slot; }

static void path_of(const ncclUniqueId *id, char *path, size_t n) {
  const char *dir = getenv("GPT2_STANDIN_NCCL_DIR");
  if (!dir) dir = getenv("TMPDIR");
  if (!dir) dir = "/tmp";
  char hex[33];
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", (unsigned char)id->internal[32 + i]);
  snprintf(path, n, "%s/gpt2-nccl-standin-%s", dir, hex);
}

static void log_call(const Comm *m, const char *call, const Shape *s, const char *why) {
  FILE *f = gpt2_standin_log_file();
  flockfile(f);
  fprintf(f, "{\"event\":\"nccl\",\"pid\":%d,\"call\":\"%s\"", getpid(), call);
  if (m) fprintf(f, ",\"rank\":%d,\"nranks\":%d,\"device\":%d", m->rank, m->nranks, m->device);
  if (s && s->dtype >= 0)
    fprintf(f, ",\"count\":%zu,\"dtype\":\"%s\",\"op\":\"%s\",\"root\":%d", s->count, DTYPE_NAMES[s->dtype],
            s->op >= 0 ? OP_NAMES[s->op] : "", s->root);
  fprintf(f, ",\"ok\":%s", why ? "false" : "true");
  if (why) fprintf(f, ",\"why\":\"%s\"", why);
  fprintf(f, "}\n");
  funlockfile(f);
  if (why) fprintf(stderr, "NCCL stand-in: %s: %s\n", call, why);
}

static ncclResult_t fail(Comm *m, const char *call, const Shape *s, ncclResult_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static __thread char last_error[512];
static ncclResult_t fail(Comm *m, const char *call, const Shape *s, ncclResult_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  if (m) snprintf(m->error, sizeof m->error, "%s", last_error);
  log_call(m, call, s, last_error);
  return code;
}

// Waits on the clique's condition until `done(c, arg)` holds; 0 on a timeout. Lock held.
static int wait_until(Clique *c, int (*done)(Clique *, const void *), const void *arg) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  t.tv_sec += timeout_s();
  while (!done(c, arg))
    if (pthread_cond_timedwait(&c->changed, &c->lock, &t) == ETIMEDOUT) return done(c, arg);
  return 1;
}
static void missing(const int *flags, int n, char *out, size_t size) {
  size_t used = 0;
  out[0] = 0;
  for (int r = 0; r < n; r++)
    if (!flags[r]) used += snprintf(out + used, used < size ? size - used : 0, "%s%d", used ? ", " : "", r);
}

ncclResult_t ncclGetVersion(int *v) { *v = 22703; return SUCCESS; }
const char *ncclGetErrorString(ncclResult_t r) {
  return r == SUCCESS ? "no error" : "error from the gpt2 NCCL stand-in (see stderr and $GPT2_STANDIN_LOG)";
}
const char *ncclGetLastError(void *comm) {
  Comm *m = comm;
  return m && m->error[0] ? m->error : last_error;
}

// Mints an id and makes the file the ranks will meet in (so it exists before anyone has the id).
ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  memset(id, 0, sizeof *id);
  memcpy(id->internal, MAGIC, sizeof MAGIC);
  if (getrandom(id->internal + 32, 16, 0) != 16) return fail(NULL, "ncclGetUniqueId", NULL, SYSTEM_ERROR, "getrandom failed");
  char path[600];
  path_of(id, path, sizeof path);
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  size_t slot = slot_bytes();
  if (fd < 0 || ftruncate(fd, (off_t)file_bytes(slot)) != 0)
    return fail(NULL, "ncclGetUniqueId", NULL, SYSTEM_ERROR, "cannot make %s", path);
  Clique *c = mmap(NULL, HEADER, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (c == MAP_FAILED) return fail(NULL, "ncclGetUniqueId", NULL, SYSTEM_ERROR, "cannot map %s", path);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&c->lock, &ma);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
  pthread_cond_init(&c->changed, &ca);
  c->slot_bytes = slot;
  c->first_rank = -1;
  memcpy(c->magic, MAGIC, sizeof MAGIC);
  munmap(c, HEADER);
  log_call(NULL, "ncclGetUniqueId", NULL, NULL);
  return SUCCESS;
}

static int all_joined(Clique *c, const void *arg) { (void)arg; return c->joined == c->nranks; }

// Joins without waiting for the others (ncclCommInitRank waits after this, a group at its end).
static ncclResult_t join(Comm **out, int nranks, const ncclUniqueId *id, int rank, int device) {
  const char *call = "ncclCommInitRank";
  Comm probe = {.rank = rank, .nranks = nranks, .device = device};
  if (memcmp(id->internal, MAGIC, sizeof MAGIC) != 0)
    return fail(&probe, call, NULL, INVALID_ARGUMENT, "the unique id was not made by ncclGetUniqueId (its bytes changed on the way?)");
  if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks)
    return fail(&probe, call, NULL, INVALID_ARGUMENT, "rank %d of %d (the stand-in allows 1..%d ranks)", rank, nranks, MAX_RANKS);
  char path[600];
  path_of(id, path, sizeof path);
  int fd = open(path, O_RDWR);
  if (fd < 0)
    return fail(&probe, call, NULL, INVALID_ARGUMENT, "no communicator file %s: the id is unknown, or every rank already joined it", path);
  Clique *h = mmap(NULL, HEADER, PROT_READ, MAP_SHARED, fd, 0);
  size_t bytes = h == MAP_FAILED ? 0 : file_bytes(h->slot_bytes);
  if (h != MAP_FAILED) munmap(h, HEADER);
  Clique *c = bytes ? mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (c == MAP_FAILED) return fail(&probe, call, NULL, SYSTEM_ERROR, "cannot map %s", path);
  pthread_mutex_lock(&c->lock);
  const char *why = NULL;
  char text[256];
  if (c->nranks && c->nranks != nranks) {
    snprintf(text, sizeof text, "world size %d, but an earlier rank joined with %d", nranks, c->nranks);
    why = text;
  } else if (c->present[rank]) {
    snprintf(text, sizeof text, "rank %d joined twice", rank);
    why = text;
  } else {
    for (int r = 0; r < MAX_RANKS; r++)
      if (c->present[r] && c->pid[r] == getpid() && c->device[r] == device) {
        snprintf(text, sizeof text, "ranks %d and %d of one process on device %d (NCCL: duplicate GPU)", r, rank, device);
        why = text;
      }
  }
  if (!why) {
    c->nranks = nranks;
    c->present[rank] = 1;
    c->device[rank] = device;
    c->pid[rank] = getpid();
    c->joined++;
    if (c->joined == nranks) unlink(path); // everyone has it mapped
    pthread_cond_broadcast(&c->changed);
  }
  pthread_mutex_unlock(&c->lock);
  if (why) {
    munmap(c, bytes);
    return fail(&probe, call, NULL, INVALID_USAGE, "%s", why);
  }
  Comm *m = calloc(1, sizeof *m);
  *m = (Comm){.c = c, .map_bytes = bytes, .rank = rank, .nranks = nranks, .device = device};
  *out = m;
  return SUCCESS;
}

static ncclResult_t await_joined(Comm *m) {
  Clique *c = m->c;
  pthread_mutex_lock(&c->lock);
  int ok = wait_until(c, all_joined, NULL);
  char who[64];
  missing(c->present, m->nranks, who, sizeof who);
  pthread_mutex_unlock(&c->lock);
  if (!ok)
    return fail(m, "ncclCommInitRank", NULL, SYSTEM_ERROR,
                "rank %d waited %d s for ranks %s to join (on GPUs: a hang)", m->rank, timeout_s(), who);
  log_call(m, "ncclCommInitRank", NULL, NULL);
  return SUCCESS;
}

// The thread's open group: depth, and the operations queued in it.
typedef struct {
  Comm *comm;
  Shape shape;
  const void *send;
  void *recv;
  int peer;
} Op;
static __thread int group_depth;
static __thread Op *queued;
static __thread int n_queued, cap_queued;
static __thread Comm **pending_joins;
static __thread int n_pending_joins;

ncclResult_t ncclCommInitRank(void **comm, int nranks, ncclUniqueId id, int rank) {
  Comm *m = NULL;
  ncclResult_t r = join(&m, nranks, &id, rank, gpt2_standin_current_device());
  if (r != SUCCESS) return r;
  *comm = m;
  if (group_depth > 0) { // a group waits for its joins at its end
    pending_joins = realloc(pending_joins, sizeof(Comm *) * (size_t)(n_pending_joins + 1));
    pending_joins[n_pending_joins++] = m;
    return SUCCESS;
  }
  return await_joined(m);
}
ncclResult_t ncclCommInitRankConfig(void **comm, int nranks, ncclUniqueId id, int rank, void *config) {
  (void)config;
  return ncclCommInitRank(comm, nranks, id, rank);
}
ncclResult_t ncclCommInitAll(void **comms, int ndev, const int *devlist) {
  ncclUniqueId id;
  ncclResult_t r = ncclGetUniqueId(&id);
  for (int i = 0; i < ndev && r == SUCCESS; i++) {
    Comm *m = NULL;
    r = join(&m, ndev, &id, i, devlist ? devlist[i] : i);
    comms[i] = m;
  }
  for (int i = 0; i < ndev && r == SUCCESS; i++) r = await_joined(comms[i]);
  return r;
}

static void release(Comm *m) {
  munmap(m->c, m->map_bytes);
  free(m);
}
ncclResult_t ncclCommDestroy(void *comm) {
  if (!comm) return SUCCESS;
  log_call(comm, "ncclCommDestroy", NULL, NULL);
  release(comm);
  return SUCCESS;
}
ncclResult_t ncclCommAbort(void *comm) {
  if (!comm) return SUCCESS;
  log_call(comm, "ncclCommAbort", NULL, NULL);
  release(comm);
  return SUCCESS;
}
ncclResult_t ncclCommFinalize(void *comm) { (void)comm; return SUCCESS; }
ncclResult_t ncclCommCount(const void *comm, int *n) { *n = ((const Comm *)comm)->nranks; return SUCCESS; }
ncclResult_t ncclCommCuDevice(const void *comm, int *d) { *d = ((const Comm *)comm)->device; return SUCCESS; }
ncclResult_t ncclCommUserRank(const void *comm, int *r) { *r = ((const Comm *)comm)->rank; return SUCCESS; }
ncclResult_t ncclCommGetAsyncError(void *comm, ncclResult_t *e) { (void)comm; *e = SUCCESS; return SUCCESS; }

// The buffer checks every call makes before anything moves.
static ncclResult_t check_buffer(Comm *m, const char *call, const Shape *s, const void *p, size_t bytes, const char *which) {
  int device = -1;
  if (!bytes) return SUCCESS;
  if (!gpt2_standin_find((unsigned long long)(uintptr_t)p, bytes, &device))
    return fail(m, call, s, INVALID_ARGUMENT, "%s buffer %p (%zu bytes) is not inside one live device allocation", which, p, bytes);
  if (device != m->device)
    return fail(m, call, s, INVALID_ARGUMENT, "%s buffer %p is on device %d, the communicator's rank %d is on device %d", which, p,
                device, m->rank, m->device);
  return SUCCESS;
}

static ncclResult_t check(Comm *m, const Shape *s, const void *send, const void *recv) {
  const char *call = CALL_NAMES[s->call];
  if (!m) return fail(NULL, call, NULL, INVALID_ARGUMENT, "no communicator");
  if (s->dtype < 0 || s->dtype > 9) return fail(m, call, NULL, INVALID_ARGUMENT, "unknown data type %d", s->dtype);
  if (s->op < -1 || s->op > 4) return fail(m, call, s, INVALID_ARGUMENT, "unknown reduction %d", s->op);
  if (s->root < -1 || s->root >= m->nranks) return fail(m, call, s, INVALID_ARGUMENT, "root/peer %d of %d ranks", s->root, m->nranks);
  size_t e = DTYPE_BYTES[s->dtype], n = s->count * e;
  size_t in = n, out = n; // what this rank's buffers hold for this call
  switch (s->call) {
  case ALL_GATHER: out = n * (size_t)m->nranks; break;
  case REDUCE_SCATTER: in = n * (size_t)m->nranks; break;
  case BROADCAST: if (m->rank != s->root) in = 0; break;
  case REDUCE: if (m->rank != s->root) out = 0; break;
  case SEND: out = 0; break;
  case RECV: in = 0; break;
  default: break;
  }
  ncclResult_t r = check_buffer(m, call, s, send, in, "send");
  if (r == SUCCESS) r = check_buffer(m, call, s, recv, out, "receive");
  if (r != SUCCESS) return r;
  const char *a = send, *b = recv;
  if (in && out && a != b && a < b + out && b < a + in)
    return fail(m, call, s, INVALID_ARGUMENT, "send and receive buffers overlap without being the same (NCCL's in-place is one pointer)");
  if (in > m->c->slot_bytes || (s->call == RECV && out > m->c->slot_bytes))
    return fail(m, call, s, INVALID_ARGUMENT, "%zu bytes exceed the stand-in's slot ($GPT2_STANDIN_NCCL_SLOT_MB)", in > out ? in : out);
  return SUCCESS;
}

static void reduce_into(void *dst, const void *src, size_t count, int dtype, int op) {
#define REDUCE(T)                                                                     \
  do {                                                                                \
    T *d = dst;                                                                       \
    const T *s = src;                                                                 \
    for (size_t i = 0; i < count; i++)                                                \
      d[i] = op == 1 ? d[i] * s[i] : op == 2 ? (s[i] > d[i] ? s[i] : d[i]) : op == 3 ? (s[i] < d[i] ? s[i] : d[i]) : d[i] + s[i]; \
  } while (0)
  switch (dtype) {
  case 0: REDUCE(int8_t); break;
  case 1: REDUCE(uint8_t); break;
  case 2: REDUCE(int32_t); break;
  case 3: REDUCE(uint32_t); break;
  case 4: REDUCE(int64_t); break;
  case 5: REDUCE(uint64_t); break;
  case 7: REDUCE(float); break;
  case 8: REDUCE(double); break;
  default: break; // f16/bf16: bytes move, values are not combined (no kernel runs here anyway)
  }
}
static void divide(void *dst, size_t count, int dtype, int n) {
  if (dtype == 7) for (size_t i = 0; i < count; i++) ((float *)dst)[i] /= (float)n;
  if (dtype == 8) for (size_t i = 0; i < count; i++) ((double *)dst)[i] /= n;
}

static int same_shape(const Shape *a, const Shape *b) {
  return a->call == b->call && a->dtype == b->dtype && a->op == b->op && a->root == b->root && a->count == b->count;
}
static int slot_free_for(Clique *c, const void *arg) { return c->seq == *(const unsigned long *)arg; }
static int all_posted(Clique *c, const void *arg) { return c->seq != *(const unsigned long *)arg || c->posted == c->nranks; }

// Posts this rank's part of its next collective (the slot frees in sequence order).
static ncclResult_t post(Comm *m, const Op *op) {
  Clique *c = m->c;
  const char *call = CALL_NAMES[op->shape.call];
  size_t e = DTYPE_BYTES[op->shape.dtype], n = op->shape.count * e;
  pthread_mutex_lock(&c->lock);
  unsigned long seq = m->next_seq;
  if (!wait_until(c, slot_free_for, &seq)) {
    pthread_mutex_unlock(&c->lock);
    return fail(m, call, &op->shape, SYSTEM_ERROR, "collective %lu never started: the others are still in collective %lu", seq, c->seq);
  }
  if (c->posted == 0) {
    c->shape = op->shape;
    c->first_rank = m->rank;
  } else if (!same_shape(&c->shape, &op->shape)) {
    Shape first = c->shape;
    int fr = c->first_rank;
    pthread_mutex_unlock(&c->lock);
    return fail(m, call, &op->shape, INVALID_USAGE,
                "collective %lu differs between ranks: rank %d made %s of %zu %s (op %s, root %d), this rank %s of %zu %s (on GPUs: a hang or garbage)",
                seq, fr, CALL_NAMES[first.call], first.count, DTYPE_NAMES[first.dtype], first.op >= 0 ? OP_NAMES[first.op] : "-",
                first.root, call, op->shape.count, DTYPE_NAMES[op->shape.dtype]);
  }
  // This rank's input, where the others can read it.
  size_t in = op->shape.call == REDUCE_SCATTER ? n * (size_t)m->nranks : n;
  if (op->shape.call != BROADCAST || m->rank == op->shape.root) memcpy(coll_slot(c, m->rank), op->send, in);
  c->posted_by[m->rank] = 1;
  c->posted++;
  pthread_cond_broadcast(&c->changed);
  pthread_mutex_unlock(&c->lock);
  return SUCCESS;
}

// Waits for every rank's part, then writes this rank's result.
static ncclResult_t finish(Comm *m, const Op *op) {
  Clique *c = m->c;
  const Shape *s = &op->shape;
  const char *call = CALL_NAMES[s->call];
  size_t count = s->count, e = DTYPE_BYTES[s->dtype], n = count * e;
  pthread_mutex_lock(&c->lock);
  unsigned long seq = m->next_seq;
  if (!wait_until(c, all_posted, &seq)) {
    char who[64];
    missing(c->posted_by, m->nranks, who, sizeof who);
    pthread_mutex_unlock(&c->lock);
    return fail(m, call, s, SYSTEM_ERROR, "rank %d waited %d s in collective %lu for ranks %s (on GPUs: a hang)", m->rank, timeout_s(),
                seq, who);
  }
  pthread_mutex_unlock(&c->lock);
  // Every part is posted and no one writes the slots until all have consumed them.
  char *out = op->recv;
  int me = m->rank, N = m->nranks;
  switch (s->call) {
  case ALL_REDUCE:
  case REDUCE:
    if (s->call == REDUCE && me != s->root) break;
    memcpy(out, coll_slot(c, 0), n);
    for (int r = 1; r < N; r++) reduce_into(out, coll_slot(c, r), count, s->dtype, s->op);
    if (s->op == 4) divide(out, count, s->dtype, N);
    break;
  case BROADCAST: memcpy(out, coll_slot(c, s->root), n); break;
  case ALL_GATHER:
    for (int r = 0; r < N; r++) memcpy(out + (size_t)r * n, coll_slot(c, r), n);
    break;
  case REDUCE_SCATTER:
    memcpy(out, coll_slot(c, 0) + (size_t)me * n, n);
    for (int r = 1; r < N; r++) reduce_into(out, coll_slot(c, r) + (size_t)me * n, count, s->dtype, s->op);
    if (s->op == 4) divide(out, count, s->dtype, N);
    break;
  default: break;
  }
  pthread_mutex_lock(&c->lock);
  if (++c->consumed == N) { // the next collective may start
    c->posted = c->consumed = 0;
    memset(c->posted_by, 0, sizeof c->posted_by);
    c->seq++;
    pthread_cond_broadcast(&c->changed);
  }
  pthread_mutex_unlock(&c->lock);
  m->next_seq++;
  log_call(m, call, s, NULL);
  return SUCCESS;
}

static int mailbox_empty(Clique *c, const void *arg) { const int *sr = arg; return !c->mail[sr[0]][sr[1]].full; }
static int mailbox_full(Clique *c, const void *arg) { const int *sr = arg; return c->mail[sr[0]][sr[1]].full; }

static ncclResult_t send_now(Comm *m, const Op *op) {
  Clique *c = m->c;
  int sr[2] = {m->rank, op->peer};
  size_t n = op->shape.count * DTYPE_BYTES[op->shape.dtype];
  pthread_mutex_lock(&c->lock);
  int ok = wait_until(c, mailbox_empty, sr);
  if (ok) {
    memcpy(mail_slot(c, sr[0], sr[1]), op->send, n);
    c->mail[sr[0]][sr[1]] = (Mailbox){1, op->shape};
    pthread_cond_broadcast(&c->changed);
  }
  pthread_mutex_unlock(&c->lock);
  if (!ok) return fail(m, "ncclSend", &op->shape, SYSTEM_ERROR, "rank %d's earlier send to rank %d was never received", sr[0], sr[1]);
  log_call(m, "ncclSend", &op->shape, NULL);
  return SUCCESS;
}
static ncclResult_t recv_now(Comm *m, const Op *op) {
  Clique *c = m->c;
  int sr[2] = {op->peer, m->rank};
  size_t n = op->shape.count * DTYPE_BYTES[op->shape.dtype];
  pthread_mutex_lock(&c->lock);
  int ok = wait_until(c, mailbox_full, sr);
  Mailbox box = c->mail[sr[0]][sr[1]];
  int fits = ok && box.shape.count == op->shape.count && box.shape.dtype == op->shape.dtype;
  if (fits) {
    memcpy(op->recv, mail_slot(c, sr[0], sr[1]), n);
    c->mail[sr[0]][sr[1]].full = 0;
    pthread_cond_broadcast(&c->changed);
  }
  pthread_mutex_unlock(&c->lock);
  if (!ok) return fail(m, "ncclRecv", &op->shape, SYSTEM_ERROR, "rank %d waited %d s for a send from rank %d (on GPUs: a hang)", sr[1], timeout_s(), sr[0]);
  if (!fits)
    return fail(m, "ncclRecv", &op->shape, INVALID_USAGE, "rank %d sent %zu %s, rank %d receives %zu %s", sr[0], box.shape.count,
                DTYPE_NAMES[box.shape.dtype], sr[1], op->shape.count, DTYPE_NAMES[op->shape.dtype]);
  log_call(m, "ncclRecv", &op->shape, NULL);
  return SUCCESS;
}

static ncclResult_t run_now(Op *op) {
  if (op->shape.call == SEND) return send_now(op->comm, op);
  if (op->shape.call == RECV) return recv_now(op->comm, op);
  ncclResult_t r = post(op->comm, op);
  return r == SUCCESS ? finish(op->comm, op) : r;
}

static ncclResult_t submit(Comm *m, Shape s, const void *send, void *recv, int peer) {
  ncclResult_t r = check(m, &s, send, recv);
  if (r != SUCCESS) return r;
  Op op = {m, s, send, recv, peer};
  if (group_depth == 0) return run_now(&op);
  if (n_queued == cap_queued) {
    cap_queued = cap_queued ? 2 * cap_queued : 64;
    queued = realloc(queued, sizeof(Op) * (size_t)cap_queued);
  }
  queued[n_queued++] = op;
  return SUCCESS;
}

ncclResult_t ncclGroupStart(void) { group_depth++; return SUCCESS; }
ncclResult_t ncclGroupEnd(void) {
  if (group_depth == 0) return fail(NULL, "ncclGroupEnd", NULL, INVALID_USAGE, "ncclGroupEnd without ncclGroupStart");
  if (--group_depth > 0) return SUCCESS;
  ncclResult_t r = SUCCESS;
  for (int i = 0; i < n_pending_joins && r == SUCCESS; i++) r = await_joined(pending_joins[i]);
  n_pending_joins = 0;
  // Sends, then the collectives, each posted by all of this thread's ranks before any waits (a
  // thread may drive several ranks), then the receives.
  for (int i = 0; i < n_queued && r == SUCCESS; i++)
    if (queued[i].shape.call == SEND) r = send_now(queued[i].comm, &queued[i]);
  for (int i = 0; i < n_queued && r == SUCCESS;) {
    if (queued[i].shape.call == SEND || queued[i].shape.call == RECV) { i++; continue; }
    // The run of collectives from here that touch distinct communicators: post all, then finish.
    int j = i;
    for (; j < n_queued && r == SUCCESS; j++) {
      if (queued[j].shape.call == SEND || queued[j].shape.call == RECV) break;
      int seen = 0;
      for (int k = i; k < j; k++) seen |= queued[k].comm == queued[j].comm;
      if (seen) break;
      r = post(queued[j].comm, &queued[j]);
    }
    for (int k = i; k < j && r == SUCCESS; k++) r = finish(queued[k].comm, &queued[k]);
    i = j;
  }
  for (int i = 0; i < n_queued && r == SUCCESS; i++)
    if (queued[i].shape.call == RECV) r = recv_now(queued[i].comm, &queued[i]);
  n_queued = 0;
  return r;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, int dtype, int op, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){ALL_REDUCE, dtype, op, -1, count}, send, recv, -1);
}
ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, int dtype, int root, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){BROADCAST, dtype, -1, root, count}, send, recv, -1);
}
ncclResult_t ncclBcast(void *buff, size_t count, int dtype, int root, void *comm, void *stream) {
  return ncclBroadcast(buff, buff, count, dtype, root, comm, stream);
}
ncclResult_t ncclReduce(const void *send, void *recv, size_t count, int dtype, int op, int root, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){REDUCE, dtype, op, root, count}, send, recv, -1);
}
ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, int dtype, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){ALL_GATHER, dtype, -1, -1, count}, send, recv, -1);
}
ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, int dtype, int op, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){REDUCE_SCATTER, dtype, op, -1, count}, send, recv, -1);
}
ncclResult_t ncclSend(const void *send, size_t count, int dtype, int peer, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){SEND, dtype, -1, peer, count}, send, NULL, peer);
}
ncclResult_t ncclRecv(void *recv, size_t count, int dtype, int peer, void *comm, void *stream) {
  (void)stream;
  return submit(comm, (Shape){RECV, dtype, -1, peer, count}, NULL, recv, peer);
}
