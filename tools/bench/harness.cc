#include "harness.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

namespace bench {

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t cpu_ns_self() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Control* control() {
  static Control* c = [] {
    void* p = ::mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    return new (p) Control();
  }();
  return c;
}

void reset(Control* c) {
  c->ready = 0;
  c->go = false;
  c->stop = false;
  for (auto& o : c->ops) o = 0;
  for (auto& s : c->stamp_ns) s = 0;
  c->cpu_ns = 0;
  c->failures = 0;
  for (auto& m : c->rss_kb) m = 0;
  for (auto& m : c->pss_kb) m = 0;
}

bool memory_kb(uint64_t* rss, uint64_t* pss) {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr) return false;
  char line[256];
  bool got_rss = false, got_pss = false;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long long v = 0;
    if (std::sscanf(line, "Rss: %llu kB", &v) == 1) got_rss = (*rss = v, true);
    if (std::sscanf(line, "Pss: %llu kB", &v) == 1) got_pss = (*pss = v, true);
  }
  std::fclose(f);
  return got_rss && got_pss;
}

Scratch::Scratch() {
  char tmpl[] = "/tmp/locktable-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) std::abort();
  path_ = tmpl;
}

Scratch::~Scratch() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t run_timed(LockImpl& impl, int procs, double seconds, const Body& prepare, const Body& body,
                   double* elapsed_s, bool inherited) {
  Control* c = control();
  reset(c);
  std::vector<pid_t> kids;
  for (int rank = 0; rank < procs; ++rank) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      if (inherited) {
        impl.attach_inherited();
      } else {
        impl.attach();
      }
      if (prepare) prepare(rank, *c);
      c->ready.fetch_add(1);
      while (!c->go.load()) std::this_thread::yield();
      body(rank, *c);
      std::_Exit(0);
    }
    kids.push_back(pid);
  }
  while (c->ready.load() < procs) std::this_thread::sleep_for(std::chrono::microseconds(100));
  int64_t start = monotonic_ns();
  c->go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  c->stop = true;
  int64_t end = monotonic_ns();
  for (pid_t k : kids) {
    int status = 0;
    ::waitpid(k, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) c->failures.fetch_add(1);
  }
  *elapsed_s = double(end - start) / 1e9;
  uint64_t total = 0;
  for (int r = 0; r < procs; ++r) total += c->ops[r].load();
  return total;
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = size_t(p * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace bench
