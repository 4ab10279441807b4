/* locktable C API: everything the C++ API does, for C and for other languages'
 * foreign-function interfaces (the model is LevelDB's leveldb/c.h).
 *
 * Handles are opaque. No C++ exception crosses this interface. Every call
 * that can fail returns a code (LT_OK, or one of the LT_* below); a failing
 * call also leaves a message naming the file or lock and the problem, which
 * lt_last_error() returns in the same thread until its next failing call.
 *
 * Threads: an lt_table and an lt_lock may be used by any number of threads at
 * once. Lock ownership is per thread: the thread that acquires releases.
 * After fork(), open the table again in the child (lt_lock handles obtained
 * before the fork keep working for acquire and release).
 *
 * Strings passed in are read during the call only. Strings handed to a
 * callback are valid during the callback only. lt_lock_name() is valid as
 * long as its lock.
 */
#ifndef LOCKTABLE_C_H
#define LOCKTABLE_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_table lt_table;
typedef struct lt_lock lt_lock;
typedef struct lt_options lt_options;

/* Codes: the numbers of locktable::Code (they never change). LT_OK and
 * LT_ABANDONED are successes of lt_acquire: the lock is held. */
enum {
  LT_OK = 0,
  LT_ABANDONED = 1,         /* acquired; the previous holder died holding it: repair, then lt_mark_consistent */
  LT_TIMED_OUT = 2,         /* the timeout passed (or, for a try, the lock was held) */
  LT_ALREADY_HELD = 3,      /* this thread holds the lock already */
  LT_NOT_OWNER = 4,         /* release by a thread that does not hold it */
  LT_NOT_FOUND = 5,         /* no such name, table or file */
  LT_BUSY = 6,              /* the lock is held (lt_remove) */
  LT_STALE_HANDLE = 7,      /* the name was removed since the handle was made */
  LT_INVALID_ARGUMENT = 8,  /* bad name, option or argument (a NULL handle) */
  LT_CORRUPT = 9,           /* a file's contents are inconsistent */
  LT_VERSION_MISMATCH = 10, /* a file of another format version */
  LT_UNSUPPORTED = 11,      /* an unknown location scheme, a network file system, ... */
  LT_PERMISSION_DENIED = 12,
  LT_CAPACITY = 13,         /* the table is full */
  LT_IO_ERROR = 14,         /* any other failure */
  LT_DEADLOCK = 15,         /* not acquired: this waiter closed a cycle of waits and was picked to break it */
  LT_LOCK_LOST = 16,        /* lt_release: the hold ended without this thread (its etcd lease ran out) */
  LT_INTERRUPTED = 17       /* not acquired: the wait was interrupted (the C++ API's WaitInterrupt) */
};

/* Lock modes, history levels, lock states and event kinds: the numbers of the
 * C++ enums (and of what is stored on disk). */
enum { LT_EXCLUSIVE = 0, LT_SHARED = 1 };
enum { LT_HISTORY_OFF = 0, LT_HISTORY_RING = 1, LT_HISTORY_PERSISTED = 2 };
enum { LT_STATE_FREE = 0, LT_STATE_HELD = 1, LT_STATE_SHARED = 2, LT_STATE_DEAD_OWNER = 3 };
enum {
  LT_EVENT_CREATED = 1, LT_EVENT_REMOVED, LT_EVENT_ACQUIRED, LT_EVENT_RELEASED, LT_EVENT_RECOVERED,
  LT_EVENT_TIMEOUT, LT_EVENT_GROWN, LT_EVENT_RESET, LT_EVENT_LOST, LT_EVENT_DEADLOCK, LT_EVENT_DOWNGRADED
};

/* "ok", "abandoned", "timed_out", ... ("unknown" for other numbers). */
const char* lt_code_name(int code);
/* "created", "acquired", ... ("unknown" for other numbers). */
const char* lt_event_kind_name(int kind);
/* This thread's message for its last failing call ("" if none). */
const char* lt_last_error(void);
/* The library's version, "MAJOR.MINOR.PATCH". */
const char* lt_version(void);

/* ---- Options (all optional; the defaults are the C++ Options'). ---- */
lt_options* lt_options_create(void);
void lt_options_destroy(lt_options* options);
void lt_options_set_create_if_missing(lt_options* options, int create);
void lt_options_set_allow_network_fs(lt_options* options, int allow);
void lt_options_set_lmdb_map_size(lt_options* options, size_t bytes);
void lt_options_set_drain_interval_ms(lt_options* options, int64_t ms); /* 0: no background drainer */
void lt_options_set_deadlock_timeout_ms(lt_options* options, int64_t ms); /* default 1000; 0: no detection */
/* Creation only: */
void lt_options_set_initial_slots(lt_options* options, uint32_t slots);
void lt_options_set_max_slots(lt_options* options, uint64_t slots);
void lt_options_set_ring_entries(lt_options* options, uint32_t entries);
void lt_options_set_history(lt_options* options, int level); /* LT_HISTORY_* */
void lt_options_set_retention(lt_options* options, uint64_t count, uint64_t age_s);

/* ---- Tables. ---- */
/* Opens the table at `location` (a folder, file:///path, or another backend's
 * URL), creating it when missing. *table is NULL on failure. Errors:
 * LT_INVALID_ARGUMENT (bad options or location), LT_NOT_FOUND (no table and
 * not creating), LT_CORRUPT, LT_VERSION_MISMATCH, LT_UNSUPPORTED (an unknown
 * scheme, a network file system, another PID namespace), LT_PERMISSION_DENIED,
 * LT_IO_ERROR (etcd: unreachable, naming the endpoints). */
int lt_table_open(const char* location, lt_table** table);
int lt_table_open_with(const char* location, const lt_options* options, lt_table** table);
/* Closes the handle (locks obtained from it stay usable until freed). NULL is a no-op. */
void lt_table_close(lt_table* table);
/* The location the table was opened at, as the tool prints it ("" for NULL). */
const char* lt_table_location(const lt_table* table);

/* A handle for `name` (1 to 255 bytes, no NUL), creating the name. Errors:
 * LT_INVALID_ARGUMENT (a bad name), LT_CAPACITY (the table is at its maximum
 * size). */
int lt_lookup(lt_table* table, const char* name, lt_lock** lock);
/* The same for a name of `len` bytes; `create` 0: fail with LT_NOT_FOUND for an unknown name. */
int lt_lookup_n(lt_table* table, const char* name, size_t len, int create, lt_lock** lock);
/* Removes a name; its handles then fail with LT_STALE_HANDLE. Errors:
 * LT_NOT_FOUND, LT_BUSY (held, in either mode). */
int lt_remove(lt_table* table, const char* name);

/* ---- Locks. ---- */
void lt_lock_free(lt_lock* lock); /* NULL is a no-op */
const char* lt_lock_name(const lt_lock* lock);

/* Acquires, exclusive (shared = 0) or shared. timeout_ns < 0: wait for ever;
 * 0: try once; > 0: wait at most that long. Returns LT_OK or LT_ABANDONED
 * (held), or an error: LT_TIMED_OUT, LT_ALREADY_HELD (this thread holds it, in
 * either mode), LT_STALE_HANDLE (the name was removed), LT_DEADLOCK (not
 * acquired: picked to break a cycle of waits), LT_CAPACITY (shared: no free
 * reader record; etcd: its space quota is used up), LT_INVALID_ARGUMENT (a
 * NULL handle), and on etcd LT_UNSUPPORTED (a parent's handle in a forked
 * child), LT_IO_ERROR and LT_PERMISSION_DENIED (unreachable, or refusing the
 * user). */
int lt_acquire(lt_lock* lock, int shared, int64_t timeout_ns);

/* What lt_acquire_info reports about a successful acquire. */
typedef struct lt_owner {
  uint32_t pid;
  uint32_t tid;        /* 0 when unknown */
  uint32_t start_time; /* low 32 bits, clock ticks since boot */
} lt_owner;
typedef struct lt_acquired {
  uint64_t token;      /* the fencing token of this hold */
  lt_owner dead_owner; /* LT_ABANDONED: the holder that died */
} lt_acquired;
/* lt_acquire, and on success fills *info (may be NULL). */
int lt_acquire_info(lt_lock* lock, int shared, int64_t timeout_ns, lt_acquired* info);

/* lt_acquire_info whose wait also ends when stop(arg) returns nonzero: then
 * LT_INTERRUPTED (not acquired; recorded as a timeout). stop is called on
 * the waiting thread while it waits, at most every millisecond and at least
 * every 50 ms (100 ms on etcd), and at once when a signal interrupts its
 * sleep: a SIGINT handler that sets a flag stop reads ends the wait. It is
 * never called for a try (timeout_ns 0) or a free lock. stop NULL: as
 * lt_acquire_info. */
int lt_acquire_interruptible(lt_lock* lock, int shared, int64_t timeout_ns, int (*stop)(void* arg), void* arg,
                             lt_acquired* info);

/* Releases this thread's hold in that mode. Errors: LT_NOT_OWNER (not held
 * by this thread in that mode), LT_STALE_HANDLE, LT_LOCK_LOST (etcd: the hold
 * ended when its lease ran out; it is over all the same), LT_INVALID_ARGUMENT. */
int lt_release(lt_lock* lock, int shared);
/* The holder declares repaired what a dead holder left: the lock stops
 * reporting abandoned. Errors: LT_NOT_OWNER, LT_INVALID_ARGUMENT. */
int lt_mark_consistent(lt_lock* lock);
/* 1 while this thread holds the lock abandoned and not marked consistent. */
int lt_abandoned(const lt_lock* lock);
/* The fencing token of this thread's hold, 0 when it holds none. */
uint64_t lt_token(const lt_lock* lock);
/* Turns this thread's exclusive hold into a shared one, atomically (no writer
 * gets in between). Release it with lt_release(lock, 1). Errors:
 * LT_NOT_OWNER, LT_STALE_HANDLE, LT_CAPACITY. */
int lt_downgrade(lt_lock* lock);

/* ---- Several locks at once. ---- */
/* One lock of lt_acquire_all: `lock` and `shared` are the caller's; the rest
 * lt_acquire_all fills when it returns LT_OK or LT_ABANDONED. */
typedef struct lt_request {
  lt_lock* lock;
  int shared;          /* 0: exclusive, 1: shared */
  uint64_t token;      /* the fencing token of this hold */
  int abandoned;       /* 1: taken over from a holder that died (then dead_owner) */
  lt_owner dead_owner;
} lt_request;
/* Takes every lock of reqs[0..n), each in its mode, all or nothing, in one
 * canonical order (by name), so that callers never deadlock with one another
 * whatever order they list them in; timeout_ns as lt_acquire's. Returns
 * LT_OK or LT_ABANDONED (all held; each request says whether it was
 * abandoned: repair, then lt_mark_consistent it), or an error with none
 * held: LT_TIMED_OUT, LT_DEADLOCK, LT_INVALID_ARGUMENT (a NULL table,
 * request or lock, a lock of another table, a name twice) and lt_acquire's. */
int lt_acquire_all(lt_table* table, lt_request* reqs, size_t n, int64_t timeout_ns);
/* Releases every lock of reqs[0..n) (in the reverse order); the first error. */
int lt_release_all(lt_table* table, const lt_request* reqs, size_t n);

/* ---- Listing: one call of `visit` per named lock, in name order. ---- */
typedef struct lt_holder {
  lt_owner owner;
  const char* comm;    /* thread name, "" when gone */
  int alive;
  int64_t held_for_ms; /* -1: unknown */
  uint64_t token;      /* the hold's fencing token (0: unknown) */
} lt_holder;
/* What a lock counted since its name was created (etcd tables: all 0). */
typedef struct lt_counters {
  uint64_t exclusive_acquisitions;
  uint64_t shared_acquisitions;  /* shared holds that ended (a downgraded one too) */
  uint64_t contended;            /* acquisitions that found the lock held and waited */
  uint64_t timeouts;
  uint64_t abandoned;            /* acquisitions told abandoned */
  uint64_t wait_total_ns, wait_max_ns;
} lt_counters;
/* A thread asleep waiting for a lock (it published its wait). */
typedef struct lt_waiter {
  lt_owner owner;
  const char* comm;    /* thread name */
  int mode;            /* LT_EXCLUSIVE, LT_SHARED: what it waits for */
  uint64_t waiting_ms;
} lt_waiter;
typedef struct lt_lock_info {
  const char* name;
  size_t name_len;
  uint32_t slot;
  int state;           /* LT_STATE_* */
  int mode;            /* LT_EXCLUSIVE, LT_SHARED */
  const lt_holder* holders;
  size_t holder_count;
  uint32_t waiters;    /* the slot's count of sleeping threads */
  int abandoned;       /* the next acquirer will be told abandoned */
  lt_counters counters;
  const lt_waiter* waiting; /* the threads waiting, longest first (as `locktable ls --json`'s waiters) */
  size_t waiting_count;
} lt_lock_info;
/* A nonzero return from `visit` stops the listing; lt_list then returns LT_OK. */
typedef int (*lt_lock_visitor)(void* context, const lt_lock_info* lock);
int lt_list(lt_table* table, lt_lock_visitor visit, void* context);
/* The same for the busy locks only: held (either mode, or by a dead owner),
 * abandoned or waited for, in no particular order; a mapped table finds them
 * from its slots without reading every name. */
int lt_list_busy(lt_table* table, lt_lock_visitor visit, void* context);
/* Only the names that begin with the `len` bytes at `prefix`, read as a range
 * (cheap among millions of names); with busy nonzero, of those only the busy
 * ones (as lt_list_busy). Errors: LT_INVALID_ARGUMENT (table or visit NULL,
 * or prefix NULL with len > 0), and those of lt_list. */
int lt_list_prefix(lt_table* table, const char* prefix, size_t len, int busy, lt_lock_visitor visit, void* context);

/* ---- Statistics. ---- */
typedef struct lt_stats {
  uint32_t format_version;
  uint64_t slot_capacity, max_slots, slots_used;
  uint64_t reader_capacity, readers_used;
  uint32_t extents;
  uint64_t table_file_bytes, lmdb_file_bytes;
  uint32_t reset_count;
  int history_level;
  uint32_t ring_entries, ring_segments, ring_segments_in_use;
  uint64_t ring_appended, ring_accounted;
  uint64_t history_records, history_lost;
  uint64_t retention_count, retention_age_s;
  char backend[16];            /* "local" (the mapped table), "etcd" */
  char boot_id[40];            /* the boot the table's locks belong to ("" on etcd) */
  uint64_t time_resolution_ns; /* of the clock that stamps history events */
  lt_counters counters;        /* every named lock's, added up */
} lt_stats;
int lt_stats_get(lt_table* table, lt_stats* stats);

/* ---- History. ---- */
typedef struct lt_history_query {
  const char* name;    /* NULL: every lock */
  int kind;            /* 0: every kind; else LT_EVENT_* */
  uint32_t pid;        /* 0: every process */
  uint64_t since_ns;   /* inclusive, ns since the epoch */
  uint64_t until_ns;   /* exclusive; 0: no end */
  uint64_t after_seq;  /* only events with seq > after_seq */
  size_t limit;        /* 0: all; else the newest `limit` matching */
  int newest_first;
} lt_history_query;
typedef struct lt_event {
  uint64_t seq;
  uint64_t time_ns;
  int kind;            /* LT_EVENT_* */
  int mode;
  int abandoned;
  uint32_t pid, tid;
  const char* comm;
  const char* name;
  size_t name_len;
  uint32_t slot;
  uint64_t wait_ns;    /* acquired, timeout */
  uint64_t hold_ns;    /* released */
  lt_owner dead_owner; /* recovered */
  uint64_t count;      /* lost, grown, reset */
  uint64_t token;      /* acquired, released, downgraded: the hold's fencing token */
} lt_event;
typedef int (*lt_event_visitor)(void* context, const lt_event* event);
/* Drains the ring first. `query` may be NULL (everything). */
int lt_history(lt_table* table, const lt_history_query* query, lt_event_visitor visit, void* context);
int lt_drain_history(lt_table* table, uint64_t* drained); /* drained may be NULL */
int lt_set_history_level(lt_table* table, int level);
int lt_set_retention(lt_table* table, uint64_t count, uint64_t age_s);

/* ---- Maintenance. ---- */
typedef struct lt_recovery {
  const char* name;
  uint32_t slot;
  int mode;
  lt_owner dead_owner;
  const char* action;  /* "freed", "freed reader", ... */
} lt_recovery;
typedef int (*lt_recovery_visitor)(void* context, const lt_recovery* recovery);
/* Frees locks of dead holders (the next acquirer is still told abandoned);
 * dry_run only reports. `visit` may be NULL. */
int lt_recover(lt_table* table, int dry_run, lt_recovery_visitor visit, void* context);
/* Each inconsistency found is one call of `visit` (may be NULL); *problems
 * (may be NULL) gets their number. */
typedef int (*lt_problem_visitor)(void* context, const char* problem);
int lt_check(lt_table* table, lt_problem_visitor visit, void* context, size_t* problems);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LOCKTABLE_C_H */
