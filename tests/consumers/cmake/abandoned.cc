// A C++ program built by CMake against an installed locktable: a child takes
// a lock and is SIGKILLed holding it; the parent is told it was abandoned.
// Usage: abandoned TABLE_DIR
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <locktable/locktable.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::unique_ptr<locktable::Table> table;
  locktable::Lock lock;
  locktable::Status s = locktable::Table::open(argv[1], {}, &table);
  if (s.ok()) s = table->lookup("orders", &lock);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    return 1;
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  pid_t kid = fork();
  if (kid == 0) {
    char c = lock.acquire().status.ok() ? 'y' : 'n';
    if (write(fds[1], &c, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c = 0;
  if (read(fds[0], &c, 1) != 1 || c != 'y') return 1;
  kill(kid, SIGKILL);
  waitpid(kid, nullptr, 0);
  locktable::AcquireResult r = lock.acquire(locktable::Mode::exclusive, locktable::Deadline::after(std::chrono::seconds(5)));
  if (!r.abandoned() || r.dead_owner.pid != uint32_t(kid)) {
    std::fprintf(stderr, "expected abandoned by %d, got %s\n", int(kid), r.status.to_string().c_str());
    return 1;
  }
  (void)lock.mark_consistent();
  (void)lock.release();
  std::printf("cmake: abandoned by %d, as expected\n", int(kid));
  return 0;
}
