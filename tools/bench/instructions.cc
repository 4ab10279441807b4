#include "instructions.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "harness.h"
#include "impls.h"

extern char** environ;

namespace bench {

int run_pairs_child(const std::string& impl_name, long pairs, bool shared) {
  std::unique_ptr<LockImpl> impl = make_impl(impl_name);
  if (!impl || (shared && !impl->has_shared())) return 2;
  Scratch dir;
  impl->setup(dir.path(), 1);
  impl->attach();
  for (long i = 0; i < pairs; ++i) {
    if (shared) {
      impl->lock_shared(0);
      impl->unlock_shared(0);
    } else {
      impl->lock(0);
      impl->unlock(0);
    }
  }
  return 0;
}

namespace {

// Total instructions of one run (callgrind's "totals:" line), or -1.
long long callgrind_total(const std::string& self_exe, const std::string& impl, bool shared, long pairs) {
  char out[] = "/tmp/locktable-callgrind-XXXXXX";
  int fd = ::mkstemp(out);
  if (fd < 0) return -1;
  ::close(fd);
  std::vector<std::string> args{"valgrind", "--tool=callgrind", "--quiet", std::string("--callgrind-out-file=") + out,
                                self_exe, "--pairs-child", impl, "--pairs", std::to_string(pairs)};
  if (shared) args.push_back("--pairs-shared");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, "valgrind", nullptr, nullptr, argv.data(), environ) != 0) {
    ::unlink(out);
    return -1;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  long long total = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    std::ifstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("totals:", 0) == 0 || line.rfind("summary:", 0) == 0) total = std::stoll(line.substr(line.find(':') + 1));
    }
  }
  ::unlink(out);
  return total;
}

}  // namespace

std::optional<double> count_instructions(const std::string& self_exe, const std::string& impl, bool shared,
                                         long pairs, std::string* why) {
  long long base = callgrind_total(self_exe, impl, shared, 0);
  long long full = callgrind_total(self_exe, impl, shared, pairs);
  if (base < 0 || full < 0) {
    *why = "valgrind not found, or the run failed";
    return std::nullopt;
  }
  return double(full - base) / double(pairs);
}

}  // namespace bench
