/* A C program built with pkg-config alone: a child takes a lock and is
 * SIGKILLed holding it; the parent is told the lock was abandoned.
 * Usage: abandoned TABLE_DIR */
#define _GNU_SOURCE
#include <locktable/c.h>

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s TABLE_DIR\n", argv[0]);
    return 2;
  }
  lt_table* table = NULL;
  lt_lock* lock = NULL;
  if (lt_table_open(argv[1], &table) != LT_OK || lt_lookup(table, "orders", &lock) != LT_OK) {
    fprintf(stderr, "open: %s\n", lt_last_error());
    return 1;
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  pid_t kid = fork();
  if (kid == 0) {
    char c = lt_acquire(lock, 0, -1) == LT_OK ? 'y' : 'n';
    if (write(fds[1], &c, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c = 0;
  if (read(fds[0], &c, 1) != 1 || c != 'y') return 1;
  kill(kid, SIGKILL);
  waitpid(kid, NULL, 0);
  lt_acquired info;
  int rc = lt_acquire_info(lock, 0, 5000000000LL, &info);
  if (rc != LT_ABANDONED || info.dead_owner.pid != (uint32_t)kid) {
    fprintf(stderr, "expected abandoned by %d, got %s (%s)\n", (int)kid, lt_code_name(rc), lt_last_error());
    return 1;
  }
  lt_mark_consistent(lock);
  lt_release(lock, 0);
  lt_lock_free(lock);
  lt_table_close(table);
  printf("c: abandoned by %d, as expected (locktable %s)\n", (int)kid, lt_version());
  return 0;
}
