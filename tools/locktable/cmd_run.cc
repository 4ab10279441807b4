// run: hold a lock while a command runs, like util-linux flock(1), but
// crash-aware: if the previous holder died holding the lock, the command is
// told so through LOCKTABLE_ABANDONED=1 and a warning on stderr.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "cli.h"
#include "commands.h"

extern char** environ;

namespace cli {

using namespace locktable;

namespace {

volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_pending_signal = 0;

void forward_signal(int sig) {
  if (g_child > 0) ::kill(pid_t(g_child), sig);
  else g_pending_signal = sig;
}

std::vector<char*> child_environment(bool abandoned, const std::string& dir, const std::string& name,
                                     std::vector<std::string>* storage) {
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.rfind("LOCKTABLE_ABANDONED=", 0) == 0 || v.rfind("LOCKTABLE_DIR=", 0) == 0 ||
        v.rfind("LOCKTABLE_NAME=", 0) == 0) {
      continue;
    }
    storage->emplace_back(v);
  }
  storage->push_back(std::string("LOCKTABLE_ABANDONED=") + (abandoned ? "1" : "0"));
  storage->push_back("LOCKTABLE_DIR=" + dir);
  storage->push_back("LOCKTABLE_NAME=" + name);
  std::vector<char*> env;
  for (std::string& s : *storage) env.push_back(s.data());
  env.push_back(nullptr);
  return env;
}

}  // namespace

void register_run(CLI::App& app, int* rc) {
  struct Args {
    std::string dir, name;
    double timeout = -1;
    bool shared = false;
    int conflict_exit_code = kNotAcquired;
    bool no_create = false;
    std::vector<std::string> command;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a command while holding a lock; exits with the command's status (1 on timeout)");
  cmd->add_option("DIR", a->dir, "Table location: a folder (or a file:/// URL), created when missing unless --no-create")->required();
  cmd->add_option("NAME", a->name, "Lock name (created when missing, unless --no-create)")->required();
  cmd->add_option("--timeout,-w", a->timeout, "Give up after SECONDS (0: try once); default: wait")
      ->check(CLI::Validator(
          [](std::string& v) {
            double d = 0;
            if (!CLI::detail::lexical_cast(v, d) || !(d >= 0) || !std::isfinite(d)) {
              return std::string("must be a number of seconds, 0 or more");
            }
            return std::string();
          },
          "SECONDS"));
  cmd->add_flag("--shared,-s", a->shared, "Take the lock shared (many readers) instead of exclusive");
  cmd->add_option("--conflict-exit-code,-E", a->conflict_exit_code, "Exit status when the lock is not acquired")
      ->check(CLI::Range(0, 255));
  cmd->add_flag("--no-create", a->no_create, "Fail if the table or the name does not exist");
  cmd->add_option("CMD", a->command, "Command and arguments (after --)")->required();
  cmd->footer(
      "The command gets LOCKTABLE_ABANDONED=1 when the lock was taken over from a holder that died "
      "(0 otherwise), and LOCKTABLE_DIR / LOCKTABLE_NAME. If it was abandoned and the command exits 0, the lock "
      "is marked consistent; otherwise the next holder is told it was abandoned too. INT, TERM and HUP are "
      "forwarded to the command; the lock is released after it ends.");
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, !a->no_create, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    Lock lock;
    s = t->lookup(a->name, &lock, a->no_create ? Lookup::existing : Lookup::create_if_missing);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    Mode mode = a->shared ? Mode::shared : Mode::exclusive;
    Deadline deadline = Deadline::never();
    if (a->timeout == 0) deadline = Deadline::now();
    else if (a->timeout > 0) deadline = Deadline::after(std::chrono::duration<double>(a->timeout));
    AcquireResult r = lock.acquire(mode, deadline);
    if (r.status.code() == Code::timed_out) {
      fmt::print(stderr, "locktable: timed out waiting for lock {} in {}\n", quote_name(a->name), a->dir);
      *rc = a->conflict_exit_code;
      return;
    }
    if (!r.held()) {
      *rc = fail(r.status);
      return;
    }
    if (r.abandoned()) {
      fmt::print(stderr,
                 "locktable: warning: lock {} was abandoned: its holder (pid {}, tid {}) died holding it; "
                 "running the command with LOCKTABLE_ABANDONED=1\n",
                 quote_name(a->name), r.dead_owner.pid, r.dead_owner.tid);
    }

    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);

    std::vector<std::string> storage;
    std::vector<char*> env = child_environment(r.abandoned(), a->dir, a->name, &storage);
    std::vector<char*> argv;
    for (std::string& arg : a->command) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t child = 0;
    int err = posix_spawnp(&child, argv[0], nullptr, nullptr, argv.data(), env.data());
    int status = 0;
    if (err != 0) {
      fmt::print(stderr, "locktable: cannot run '{}': {}\n", a->command[0], std::strerror(err));
      *rc = err == ENOENT ? 127 : 126;  // as shells do
    } else {
      g_child = child;
      if (g_pending_signal != 0) ::kill(child, g_pending_signal);
      while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
      }
      g_child = 0;
      *rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (r.abandoned() && err == 0 && *rc == 0) (void)lock.mark_consistent();
    Status released = lock.release(mode);
    if (!released.ok()) fail(released);
  });
}

}  // namespace cli
