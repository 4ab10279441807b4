/* The C API, from C: every promise the C++ tests check for the calls it
 * wraps, with real processes (a child killed while it holds), error codes and
 * messages, listing, history, stats, recover and check. Runs under ASan and
 * UBSan in the sanitizer suites. Usage: test_c_api (makes its own folder). */
#define _GNU_SOURCE
#include <locktable/c.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, \
              #cond, lt_last_error());                                                \
      ++failures;                                                                     \
    }                                                                                 \
  } while (0)
#define REQUIRE(cond)                                                                 \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "%s:%d: REQUIRE(%s) failed; last error: %s\n", __FILE__, __LINE__, \
              #cond, lt_last_error());                                                \
      exit(1);                                                                        \
    }                                                                                 \
  } while (0)

static char dir[256];

static void test_codes_and_names(void) {
  CHECK(strcmp(lt_code_name(LT_OK), "ok") == 0);
  CHECK(strcmp(lt_code_name(LT_ABANDONED), "abandoned") == 0);
  CHECK(strcmp(lt_code_name(LT_TIMED_OUT), "timed_out") == 0);
  CHECK(strcmp(lt_code_name(LT_STALE_HANDLE), "stale_handle") == 0);
  CHECK(strcmp(lt_code_name(LT_IO_ERROR), "io_error") == 0);
  CHECK(strcmp(lt_code_name(LT_DEADLOCK), "deadlock") == 0);
  CHECK(strcmp(lt_event_kind_name(LT_EVENT_DEADLOCK), "deadlock") == 0);
  CHECK(strcmp(lt_event_kind_name(LT_EVENT_DOWNGRADED), "downgraded") == 0);
  CHECK(strcmp(lt_code_name(999), "unknown") == 0);
  CHECK(strcmp(lt_event_kind_name(LT_EVENT_RECOVERED), "recovered") == 0);
  CHECK(strlen(lt_version()) >= 5);
}

static void test_bad_input_is_a_code_and_a_message(void) {
  lt_table* t = (lt_table*)1;
  CHECK(lt_table_open(NULL, &t) == LT_INVALID_ARGUMENT && t == NULL);
  CHECK(lt_table_open("foo://x", &t) == LT_UNSUPPORTED);
  CHECK(strstr(lt_last_error(), "foo") != NULL);

  lt_options* o = lt_options_create();
  lt_options_set_create_if_missing(o, 0);
  char missing[300];
  snprintf(missing, sizeof missing, "%s/missing", dir);
  CHECK(lt_table_open_with(missing, o, &t) == LT_NOT_FOUND);
  CHECK(strstr(lt_last_error(), missing) != NULL);
  lt_options_set_create_if_missing(o, 1);
  lt_options_set_history(o, 7);
  CHECK(lt_table_open_with(missing, o, &t) == LT_INVALID_ARGUMENT);
  lt_options_destroy(o);

  CHECK(lt_acquire(NULL, 0, 0) == LT_INVALID_ARGUMENT);
  CHECK(lt_release(NULL, 0) == LT_INVALID_ARGUMENT);
  lt_table_close(NULL);
  lt_lock_free(NULL);
}

static void test_acquire_release_try_timeout(lt_table* t) {
  lt_lock* a = NULL;
  REQUIRE(lt_lookup(t, "orders", &a) == LT_OK);
  CHECK(strcmp(lt_lock_name(a), "orders") == 0);
  lt_acquired info;
  memset(&info, 0, sizeof info);
  CHECK(lt_acquire_info(a, 0, -1, &info) == LT_OK);
  CHECK(info.token > 0);
  CHECK(lt_token(a) == info.token);
  CHECK(lt_acquire(a, 0, 0) == LT_ALREADY_HELD);

  pid_t kid = fork();
  if (kid == 0) {  /* another process: a try fails, a timed wait times out */
    int rc = lt_acquire(a, 0, 0) == LT_TIMED_OUT && lt_acquire(a, 0, 20 * 1000 * 1000) == LT_TIMED_OUT &&
                     lt_acquire(a, 1, 0) == LT_TIMED_OUT ? 0 : 1;
    _exit(rc);
  }
  int status = 0;
  waitpid(kid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  /* A downgrade keeps the token and lets another process read. */
  CHECK(lt_downgrade(a) == LT_OK);
  CHECK(lt_token(a) == info.token);
  CHECK(lt_downgrade(a) == LT_NOT_OWNER);
  kid = fork();
  if (kid == 0) _exit(lt_acquire(a, 1, 0) == LT_OK && lt_release(a, 1) == LT_OK && lt_acquire(a, 0, 0) == LT_TIMED_OUT
                          ? 0 : 1);
  waitpid(kid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(lt_release(a, 1) == LT_OK);
  CHECK(lt_release(a, 0) == LT_NOT_OWNER);
  CHECK(strstr(lt_last_error(), "orders") != NULL);
  CHECK(lt_token(a) == 0);

  /* Shared: two holds at once, from two processes. */
  CHECK(lt_acquire(a, 1, -1) == LT_OK);
  kid = fork();
  if (kid == 0) {
    int rc = lt_acquire(a, 1, 0) == LT_OK && lt_release(a, 1) == LT_OK && lt_acquire(a, 0, 0) == LT_TIMED_OUT ? 0 : 1;
    _exit(rc);
  }
  waitpid(kid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(lt_release(a, 1) == LT_OK);
  lt_lock_free(a);
}

/* A child that takes `l` exclusively and holds it until killed; returns its
 * pid once it holds it. */
static pid_t fork_holder(lt_lock* l) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t kid = fork();
  REQUIRE(kid >= 0);
  if (kid == 0) {
    char c = lt_acquire(l, 0, -1) == LT_OK ? 'y' : 'n';
    (void)!write(pipefd[1], &c, 1);
    pause();
    _exit(0);
  }
  char c = 0;
  REQUIRE(read(pipefd[0], &c, 1) == 1 && c == 'y');
  close(pipefd[0]);
  close(pipefd[1]);
  return kid;
}

static void test_a_holder_killed_leaves_the_lock_abandoned(lt_table* t) {
  lt_lock* l = NULL;
  REQUIRE(lt_lookup(t, "jobs", &l) == LT_OK);
  pid_t kid = fork_holder(l);
  kill(kid, SIGKILL);
  waitpid(kid, NULL, 0);
  lt_acquired info;
  memset(&info, 0, sizeof info);
  CHECK(lt_acquire_info(l, 0, 5LL * 1000 * 1000 * 1000, &info) == LT_ABANDONED);
  CHECK(info.dead_owner.pid == (uint32_t)kid);
  CHECK(lt_abandoned(l) == 1);
  CHECK(lt_mark_consistent(l) == LT_OK);
  CHECK(lt_abandoned(l) == 0);
  CHECK(lt_release(l, 0) == LT_OK);
  CHECK(lt_acquire(l, 0, 0) == LT_OK);  /* consistent again: plain ok */
  CHECK(lt_release(l, 0) == LT_OK);
  lt_lock_free(l);
}

/* stop for lt_acquire_interruptible: nonzero from the 20th call on (about
 * 20 ms of waiting at the most frequent asking). */
static int stop_after_20_asks(void* arg) {
  int* asks = (int*)arg;
  return ++*asks >= 20;
}

static void test_an_interrupted_wait_is_not_acquired(void) {
  char table_dir[300];
  snprintf(table_dir, sizeof table_dir, "%s/interrupt", dir);
  lt_table* t = NULL;
  REQUIRE(lt_table_open(table_dir, &t) == LT_OK);
  lt_lock* l = NULL;
  REQUIRE(lt_lookup(t, "interruptible", &l) == LT_OK);
  pid_t kid = fork_holder(l);
  int asks = 0;
  lt_acquired info;
  CHECK(lt_acquire_interruptible(l, 0, -1, stop_after_20_asks, &asks, &info) == LT_INTERRUPTED);
  CHECK(asks == 20);
  CHECK(strstr(lt_last_error(), "interrupted") != NULL);
  CHECK(strcmp(lt_code_name(LT_INTERRUPTED), "interrupted") == 0);
  asks = 0;
  CHECK(lt_acquire_interruptible(l, 1, -1, stop_after_20_asks, &asks, NULL) == LT_INTERRUPTED);  /* shared */
  asks = 0;
  CHECK(lt_acquire_interruptible(l, 0, 0, stop_after_20_asks, &asks, NULL) == LT_TIMED_OUT);  /* a try */
  CHECK(asks == 0);
  CHECK(lt_acquire_interruptible(l, 0, 1000000, NULL, NULL, NULL) == LT_TIMED_OUT);  /* no stop: a timed acquire */
  kill(kid, SIGKILL);
  waitpid(kid, NULL, 0);
  CHECK(lt_acquire_interruptible(l, 0, -1, stop_after_20_asks, &asks, NULL) == LT_ABANDONED);
  CHECK(lt_mark_consistent(l) == LT_OK);
  CHECK(lt_release(l, 0) == LT_OK);
  lt_lock_free(l);
  lt_table_close(t);
}

static void test_several_locks_at_once(void) {
  char table_dir[300];
  snprintf(table_dir, sizeof table_dir, "%s/all", dir);
  lt_table* t = NULL;
  REQUIRE(lt_table_open(table_dir, &t) == LT_OK);
  CHECK(strcmp(lt_table_location(t), table_dir) == 0);
  CHECK(strcmp(lt_table_location(NULL), "") == 0);
  lt_lock* a = NULL;
  lt_lock* b = NULL;
  REQUIRE(lt_lookup(t, "a", &a) == LT_OK && lt_lookup(t, "b", &b) == LT_OK);
  lt_request reqs[2];
  memset(reqs, 0, sizeof reqs);
  reqs[0].lock = b; /* listed out of the canonical order */
  reqs[0].shared = 1;
  reqs[1].lock = a;

  /* b held by another process: a timeout, and a is not held either. */
  pid_t kid = fork_holder(b);
  CHECK(lt_acquire_all(t, reqs, 2, 50 * 1000 * 1000) == LT_TIMED_OUT);
  CHECK(strstr(lt_last_error(), "timed out") != NULL);
  CHECK(lt_acquire(a, 0, 0) == LT_OK);
  CHECK(lt_release(a, 0) == LT_OK);

  /* The holder dies: both held, b told abandoned with its dead holder. */
  kill(kid, SIGKILL);
  waitpid(kid, NULL, 0);
  CHECK(lt_acquire_all(t, reqs, 2, 5LL * 1000 * 1000 * 1000) == LT_ABANDONED);
  CHECK(reqs[0].abandoned == 1 && reqs[0].dead_owner.pid == (uint32_t)kid);
  CHECK(reqs[1].abandoned == 0 && reqs[1].dead_owner.pid == 0);
  CHECK(reqs[0].token > 0 && reqs[1].token > 0);
  CHECK(lt_token(a) == reqs[1].token);
  CHECK(lt_acquire(b, 0, 0) == LT_ALREADY_HELD);  /* this thread holds it (shared) */
  CHECK(lt_mark_consistent(b) == LT_OK);
  CHECK(lt_release_all(t, reqs, 2) == LT_OK);
  CHECK(lt_release_all(t, reqs, 2) == LT_NOT_OWNER);  /* nothing held any more */
  CHECK(lt_acquire_all(t, reqs, 2, 0) == LT_OK);      /* consistent again: plain ok */
  CHECK(reqs[0].abandoned == 0);
  CHECK(lt_release_all(t, reqs, 2) == LT_OK);

  /* Bad requests. */
  reqs[1].lock = b;
  CHECK(lt_acquire_all(t, reqs, 2, 0) == LT_INVALID_ARGUMENT);  /* a name twice */
  CHECK(strstr(lt_last_error(), "'b'") != NULL);
  reqs[1].lock = NULL;
  CHECK(lt_acquire_all(t, reqs, 2, 0) == LT_INVALID_ARGUMENT);
  CHECK(strstr(lt_last_error(), "request 1") != NULL);
  CHECK(lt_acquire_all(NULL, reqs, 1, 0) == LT_INVALID_ARGUMENT);
  CHECK(lt_acquire_all(t, NULL, 0, 0) == LT_OK);  /* nothing to take */
  CHECK(lt_acquire(b, 0, 0) == LT_OK);           /* the refusals took nothing */
  CHECK(lt_release(b, 0) == LT_OK);
  lt_lock_free(a);
  lt_lock_free(b);
  lt_table_close(t);
}

struct listing {
  int count;
  int saw_held_by_me;
  uint64_t held_token; /* the holder's token, as listed */
};

static int visit_lock(void* ctx, const lt_lock_info* info) {
  struct listing* s = (struct listing*)ctx;
  ++s->count;
  if (info->name_len == 4 && memcmp(info->name, "held", 4) == 0 && info->state == LT_STATE_HELD &&
      info->holder_count == 1 && info->holders[0].owner.pid == (uint32_t)getpid() && info->holders[0].alive) {
    s->saw_held_by_me = 1;
    s->held_token = info->holders[0].token;
  }
  return 0;
}

static int counters_of_counted(void* ctx, const lt_lock_info* info) {
  if (info->name_len == 7 && memcmp(info->name, "counted", 7) == 0) *(lt_counters*)ctx = info->counters;
  return 0;
}

static int stop_at_first(void* ctx, const lt_lock_info* info) {
  (void)info;
  ++*(int*)ctx;
  return 1;
}

struct events {
  int acquired_jobs;
  int recovered;
  int abandoned_acquired;
  uint64_t held_tokens[2]; /* lock "held": its acquisition's token, its release's */
};

static int visit_event(void* ctx, const lt_event* e) {
  struct events* s = (struct events*)ctx;
  if (e->kind == LT_EVENT_ACQUIRED && e->name_len == 4 && memcmp(e->name, "jobs", 4) == 0) {
    ++s->acquired_jobs;
    if (e->abandoned) ++s->abandoned_acquired;
  }
  if ((e->kind == LT_EVENT_ACQUIRED || e->kind == LT_EVENT_RELEASED) && e->name_len == 4 &&
      memcmp(e->name, "held", 4) == 0) {
    s->held_tokens[e->kind == LT_EVENT_RELEASED] = e->token;
  }
  if (e->kind == LT_EVENT_RECOVERED) ++s->recovered;
  return 0;
}

static void test_list_stats_history_remove(lt_table* t) {
  lt_lock* h = NULL;
  REQUIRE(lt_lookup(t, "held", &h) == LT_OK);
  REQUIRE(lt_acquire(h, 0, -1) == LT_OK);
  const uint64_t held_token = lt_token(h);
  struct listing s = {0, 0, 0};
  CHECK(lt_list(t, visit_lock, &s) == LT_OK);
  CHECK(s.count == 3);  /* held, jobs, orders */
  CHECK(s.saw_held_by_me == 1);
  CHECK(held_token > 0 && s.held_token == held_token);
  int seen = 0;
  CHECK(lt_list(t, stop_at_first, &seen) == LT_OK && seen == 1);
  struct listing busy = {0, 0, 0};
  CHECK(lt_list_busy(t, visit_lock, &busy) == LT_OK);
  CHECK(busy.count == 1);  /* only held */
  CHECK(busy.saw_held_by_me == 1);

  /* A prefix: its names only, in both scopes; an empty one is every name. */
  struct listing with_j = {0, 0, 0}, with_h = {0, 0, 0}, busy_h = {0, 0, 0}, busy_o = {0, 0, 0}, longer = {0, 0, 0},
                 all = {0, 0, 0};
  CHECK(lt_list_prefix(t, "j", 1, 0, visit_lock, &with_j) == LT_OK && with_j.count == 1);
  CHECK(lt_list_prefix(t, "hel", 3, 0, visit_lock, &with_h) == LT_OK && with_h.count == 1 && with_h.saw_held_by_me);
  CHECK(lt_list_prefix(t, "h", 1, 1, visit_lock, &busy_h) == LT_OK && busy_h.count == 1 && busy_h.saw_held_by_me);
  CHECK(lt_list_prefix(t, "o", 1, 1, visit_lock, &busy_o) == LT_OK && busy_o.count == 0);  /* orders is free */
  CHECK(lt_list_prefix(t, "jobsX", 5, 0, visit_lock, &longer) == LT_OK && longer.count == 0);
  CHECK(lt_list_prefix(t, NULL, 0, 0, visit_lock, &all) == LT_OK && all.count == 3);
  CHECK(lt_list_prefix(t, NULL, 1, 0, visit_lock, &all) == LT_INVALID_ARGUMENT);
  CHECK(lt_list_prefix(t, "j", 1, 0, NULL, NULL) == LT_INVALID_ARGUMENT);

  /* Each lock's counters, acquisitions in both modes. */
  lt_lock* c = NULL;
  REQUIRE(lt_lookup(t, "counted", &c) == LT_OK);
  for (int i = 0; i < 2; ++i) CHECK(lt_acquire(c, 0, -1) == LT_OK && lt_release(c, 0) == LT_OK);
  for (int i = 0; i < 3; ++i) CHECK(lt_acquire(c, 1, -1) == LT_OK && lt_release(c, 1) == LT_OK);
  lt_counters counted;
  memset(&counted, 0xff, sizeof counted);
  CHECK(lt_list(t, counters_of_counted, &counted) == LT_OK);
  CHECK(counted.exclusive_acquisitions == 2);
  CHECK(counted.shared_acquisitions == 3);
  CHECK(counted.timeouts == 0 && counted.abandoned == 0);
  CHECK(lt_remove(t, "counted") == LT_OK);
  lt_lock_free(c);

  lt_stats st;
  CHECK(lt_stats_get(t, &st) == LT_OK);
  CHECK(st.slots_used == 3);
  CHECK(st.history_level == LT_HISTORY_PERSISTED);
  CHECK(strcmp(st.backend, "local") == 0);
  CHECK(strlen(st.boot_id) == 36);  /* a UUID */
  CHECK(st.time_resolution_ns > 0);
  CHECK(st.counters.exclusive_acquisitions >= 3 && st.counters.abandoned >= 1);

  CHECK(lt_remove(t, "held") == LT_BUSY);
  CHECK(lt_release(h, 0) == LT_OK);
  CHECK(lt_remove(t, "held") == LT_OK);
  CHECK(lt_acquire(h, 0, 0) == LT_STALE_HANDLE);
  CHECK(lt_remove(t, "held") == LT_NOT_FOUND);
  lt_lock_free(h);

  struct events ev = {0, 0, 0, {0, 0}};
  CHECK(lt_history(t, NULL, visit_event, &ev) == LT_OK);
  CHECK(ev.held_tokens[0] == held_token && ev.held_tokens[1] == held_token);
  CHECK(ev.acquired_jobs == 3);  /* the child's, the takeover, the plain one */
  CHECK(ev.abandoned_acquired == 1);
  CHECK(ev.recovered == 1);
  lt_history_query q;
  memset(&q, 0, sizeof q);
  q.name = "jobs";
  q.kind = LT_EVENT_ACQUIRED;
  q.limit = 1;
  struct events only = {0, 0, 0, {0, 0}};
  CHECK(lt_history(t, &q, visit_event, &only) == LT_OK);
  CHECK(only.acquired_jobs == 1);
  q.kind = 99;
  CHECK(lt_history(t, &q, visit_event, &only) == LT_INVALID_ARGUMENT);

  size_t problems = 99;
  CHECK(lt_check(t, NULL, NULL, &problems) == LT_OK);
  CHECK(problems == 0);
  CHECK(lt_recover(t, 1, NULL, NULL) == LT_OK);
  CHECK(lt_set_history_level(t, 5) == LT_INVALID_ARGUMENT);
  CHECK(lt_set_retention(t, 1000, 3600) == LT_OK);
}

struct queue_view {
  size_t waiting_count;
  uint32_t first_pid;
  int first_mode;
  int first_has_comm;
};

static int waiters_of_queued(void* ctx, const lt_lock_info* info) {
  struct queue_view* v = (struct queue_view*)ctx;
  if (info->name_len == 6 && memcmp(info->name, "queued", 6) == 0) {
    v->waiting_count = info->waiting_count;
    if (info->waiting_count > 0) {
      v->first_pid = info->waiting[0].owner.pid;
      v->first_mode = info->waiting[0].mode;
      v->first_has_comm = info->waiting[0].comm != NULL && info->waiting[0].comm[0] != '\0';
    }
  }
  return 0;
}

static void test_list_shows_who_waits(lt_table* t) {
  lt_lock* q = NULL;
  REQUIRE(lt_lookup(t, "queued", &q) == LT_OK);
  REQUIRE(lt_acquire(q, 0, -1) == LT_OK);
  pid_t kid = fork();
  REQUIRE(kid >= 0);
  if (kid == 0) {
    if (lt_acquire(q, 1, 20LL * 1000 * 1000 * 1000) != LT_OK) _exit(1);
    _exit(lt_release(q, 1) == LT_OK ? 0 : 2);
  }
  struct queue_view v = {0, 0, -1, 0};
  for (int i = 0; i < 500 && v.waiting_count == 0; ++i) {
    usleep(10 * 1000);
    CHECK(lt_list(t, waiters_of_queued, &v) == LT_OK);
  }
  CHECK(v.waiting_count == 1);
  CHECK(v.first_pid == (uint32_t)kid);
  CHECK(v.first_mode == LT_SHARED);
  CHECK(v.first_has_comm);
  CHECK(lt_release(q, 0) == LT_OK);
  int status = 0;
  CHECK(waitpid(kid, &status, 0) == kid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(lt_remove(t, "queued") == LT_OK);
  lt_lock_free(q);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/locktable-c-XXXXXX");
  REQUIRE(mkdtemp(dir) != NULL);
  char table_dir[300];
  snprintf(table_dir, sizeof table_dir, "%s/t", dir);

  test_codes_and_names();
  test_bad_input_is_a_code_and_a_message();
  lt_table* t = NULL;
  REQUIRE(lt_table_open(table_dir, &t) == LT_OK);
  test_acquire_release_try_timeout(t);
  test_a_holder_killed_leaves_the_lock_abandoned(t);
  test_an_interrupted_wait_is_not_acquired();
  test_several_locks_at_once();
  test_list_stats_history_remove(t);
  test_list_shows_who_waits(t);
  lt_table_close(t);

  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  if (failures != 0) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("C API: all checks passed\n");
  return 0;
}
