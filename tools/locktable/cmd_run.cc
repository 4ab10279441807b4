// run: hold a lock while a command runs, like util-linux flock(1), but
// crash-aware: if the previous holder died holding the lock, the command is
// told so through LOCKTABLE_ABANDONED=1 and a warning on stderr.
//
// The locks belong to this process, not to the command (a lock's owner is a
// thread, and exec() ends a thread's robust futexes). So the command never
// runs without them: it is started with PR_SET_PDEATHSIG(SIGKILL), and dies
// with this process if this process is killed (flock(1)'s command, which
// inherits the lock's descriptor, outlives it holding the lock; here the
// locks go to the next holder, told abandoned, so the command must not go
// on).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
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

// While run waits for its locks, INT, TERM or HUP end the wait (so that the
// wait's traces, an etcd queue entry above all, are withdrawn at once rather
// than left to the lease's TTL), and run then dies of that signal.
struct SignalArrived final : WaitInterrupt {
  bool requested() override { return g_pending_signal != 0; }
};

[[noreturn]] void die_of_pending_signal() {
  const int sig = g_pending_signal;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  ::raise(sig);
  std::_Exit(128 + sig);  // (not reached: the default action of these signals ends the process)
}

// Starts argv with env as this process's child that SIGKILL ends when this
// process dies. Returns its pid, or -1 with the exec's errno in *err.
pid_t start_command(const std::vector<char*>& argv, const std::vector<char*>& env, int* err) {
  int report[2];  // the exec's errno, if it fails; closed by a successful exec
  if (::pipe2(report, O_CLOEXEC) != 0) {
    *err = errno;
    return -1;
  }
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    // REQUIRES: async-signal-safe calls only, until exec (other threads of
    // this process may have held locks at the fork).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // it died before the line above
    ::signal(SIGXFSZ, SIG_DFL);               // main() ignores it; an ignored signal stays so across exec
    ::execvpe(argv[0], argv.data(), env.data());
    const int e = errno;
    (void)!::write(report[1], &e, sizeof e);
    ::_exit(127);
  }
  *err = child < 0 ? errno : 0;
  ::close(report[1]);
  if (child > 0) {
    int e = 0;
    ssize_t n;
    while ((n = ::read(report[0], &e, sizeof e)) < 0 && errno == EINTR) {
    }
    if (n == ssize_t(sizeof e)) {
      int status = 0;
      while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
      }
      *err = e;
    }
  }
  ::close(report[0]);
  return *err == 0 ? child : -1;
}

// Waits for the command to end (its wait status in *status), looking every
// 200 ms whether each lock is still held with the token it was taken with.
// A lock can be lost while run lives only on a backend with leases (etcd:
// cut off from it past the TTL, another process may hold it by now); then
// the command is sent TERM (KILL 5 s later) and the lost lock's name is
// returned ("" while none was lost). Without pidfd_open (Linux < 5.3) it
// only waits.
std::string wait_command(pid_t child, const std::vector<Lock>& locks, const std::vector<uint64_t>& tokens,
                         int* status) {
  const int pidfd = int(::syscall(SYS_pidfd_open, child, 0));  // readable once the child ends
  std::string lost;
  auto now_ms = [] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  double kill_at_ms = 0;
  for (;;) {
    const pid_t got = ::waitpid(child, status, pidfd >= 0 ? WNOHANG : 0);
    if (got == child || (got < 0 && errno != EINTR)) break;
    if (got < 0) continue;
    pollfd ready{pidfd, POLLIN, 0};
    (void)::poll(&ready, 1, 200);
    for (size_t i = 0; i < locks.size() && lost.empty(); ++i) {
      if (locks[i].token() == tokens[i]) continue;
      lost = locks[i].name();
      fmt::print(stderr, "locktable: lock {} was lost while the command ran (its lease was not renewed for its "
                 "time to live: another process may hold it now); sending TERM to the command\n", quote_name(lost));
      ::kill(child, SIGTERM);
      kill_at_ms = now_ms() + 5000;
    }
    if (kill_at_ms != 0 && now_ms() >= kill_at_ms) {
      ::kill(child, SIGKILL);
      kill_at_ms = 0;
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return lost;
}

// The command's environment: ours without any LOCKTABLE_* variable of an
// outer run, plus what this run holds.
std::vector<char*> child_environment(const std::vector<std::pair<std::string, std::string>>& vars,
                                     std::vector<std::string>* storage) {
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view v(*e);
    bool ours = false;
    for (const char* prefix : {"LOCKTABLE_ABANDONED=", "LOCKTABLE_ABANDONED_NAMES=", "LOCKTABLE_DIR=",
                               "LOCKTABLE_NAME=", "LOCKTABLE_NAMES=", "LOCKTABLE_TOKEN="}) {
      ours |= v.rfind(prefix, 0) == 0;
    }
    if (!ours) storage->emplace_back(v);
  }
  for (const auto& [key, value] : vars) storage->push_back(key + "=" + value);
  std::vector<char*> env;
  for (std::string& s : *storage) env.push_back(s.data());
  env.push_back(nullptr);
  return env;
}

std::string joined(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

}  // namespace

std::vector<std::string>& run_command() {
  static std::vector<std::string> command;
  return command;
}

void register_run(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    std::vector<std::string> names;
    double timeout = -1;
    bool shared = false;
    int conflict_exit_code = kNotAcquired;
    bool no_create = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a command while holding one or more locks: run DIR NAME [NAME...] -- CMD [ARG...]; exits with "
             "the command's status (1 on timeout)");
  cmd->add_option("DIR", a->dir, std::string(kLocationHelp) + ", created when missing unless --no-create")->required();
  cmd->add_option("NAME", a->names, "Lock names (created when missing, unless --no-create); all are held, taken "
                                    "in one canonical order")->required();
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
  cmd->add_flag("--shared,-s", a->shared, "Take the locks shared (many readers) instead of exclusive");
  cmd->add_option("--conflict-exit-code,-E", a->conflict_exit_code,
                  "Exit status when the locks are not acquired (timeout, deadlock)")
      ->check(CLI::Range(0, 255));
  cmd->add_flag("--no-create", a->no_create, "Fail if the table or a name does not exist");
  cmd->footer(
      "The command comes after --. It gets LOCKTABLE_DIR, LOCKTABLE_NAME (the first name), LOCKTABLE_NAMES (every "
      "name, one per line), LOCKTABLE_TOKEN (the fencing token of each name, in NAMES order, space-separated), "
      "LOCKTABLE_ABANDONED=1 when any lock was taken over from a holder that died (0 otherwise) and "
      "LOCKTABLE_ABANDONED_NAMES (those names, one per line). If any was abandoned and the command exits 0, they "
      "are marked consistent; otherwise the next holder is told they were abandoned too. While run waits for the "
      "locks, INT, TERM and HUP end the wait (withdrawn at once, an etcd queue entry too) and run dies of that "
      "signal without starting the command; once it runs they are forwarded to the command, and the locks are "
      "released after it ends. If run itself is killed, the command gets "
      "SIGKILL too (it must not go on without the locks); processes it started in the background are not "
      "followed. A lock lost while the command runs (an etcd table cut off from etcd past its TTL) sends it TERM "
      "(KILL 5 s later), and run exits 10.");
  cmd->callback([a, rc] {
    const std::vector<std::string>& command = run_command();
    if (command.empty()) {
      fmt::print(stderr, "locktable: run: no command: write it after --, as in: locktable run DIR NAME -- CMD\n");
      *rc = kUsage;
      return;
    }
    // Bad names are refused before the table is opened (and perhaps created).
    for (size_t i = 0; i < a->names.size(); ++i) {
      Status bad = validate_name(a->names[i]);
      if (bad.ok() && std::find(a->names.begin(), a->names.begin() + i, a->names[i]) != a->names.begin() + i) {
        bad = Status(Code::invalid_argument, fmt::format("{}: lock name given twice", quote_name(a->names[i])));
      }
      if (!bad.ok()) {
        *rc = fail(bad);
        return;
      }
    }
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, !a->no_create, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    std::vector<Lock> locks;
    s = t->lookup(a->names, &locks, a->no_create ? Lookup::existing : Lookup::create_if_missing);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    const Mode mode = a->shared ? Mode::shared : Mode::exclusive;
    std::vector<LockRequest> requests;
    for (Lock& lock : locks) requests.push_back(LockRequest{&lock, mode});
    Deadline deadline = Deadline::never();
    if (a->timeout == 0) deadline = Deadline::now();
    else if (a->timeout > 0) deadline = Deadline::after(std::chrono::duration<double>(a->timeout));
    // Forwarded to the command once it runs; until then they end the wait.
    struct sigaction sa {};
    sa.sa_handler = forward_signal;  // no SA_RESTART: a sleeping waiter wakes at once
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
    SignalArrived signalled;
    AcquireAllResult r = t->acquire_all(requests, deadline.interruptible_by(&signalled));
    if (g_pending_signal != 0) {  // interrupted, or held just as the signal came: the command never starts
      if (r.held()) (void)t->release_all(requests);
      die_of_pending_signal();
    }
    if (r.status.code() == Code::timed_out || r.status.code() == Code::deadlock) {
      if (r.status.code() == Code::timed_out) {
        fmt::print(stderr, "locktable: timed out waiting for {} {} in {}\n", a->names.size() == 1 ? "lock" : "locks",
                   quote_name(a->names[0]) + (a->names.size() > 1 ? ", ..." : ""), a->dir);
      } else {
        fmt::print(stderr, "locktable: {}\n", r.status.message());
      }
      *rc = a->conflict_exit_code;
      return;
    }
    if (!r.held()) {
      *rc = fail(r.status);
      return;
    }
    std::vector<std::string> abandoned_names;
    for (size_t k = 0; k < r.abandoned.size(); ++k) {
      const size_t i = r.abandoned[k];
      abandoned_names.push_back(a->names[i]);
      fmt::print(stderr,
                 "locktable: warning: lock {} was abandoned: its holder (pid {}, tid {}) died holding it; "
                 "running the command with LOCKTABLE_ABANDONED=1\n",
                 quote_name(a->names[i]), r.dead_owners[k].pid, r.dead_owners[k].tid);
    }

    std::vector<std::string> tokens;
    for (uint64_t token : r.tokens) tokens.push_back(std::to_string(token));
    std::vector<std::string> storage;
    std::vector<char*> env = child_environment({{"LOCKTABLE_ABANDONED", abandoned_names.empty() ? "0" : "1"},
                                                {"LOCKTABLE_ABANDONED_NAMES", joined(abandoned_names, "\n")},
                                                {"LOCKTABLE_DIR", a->dir},
                                                {"LOCKTABLE_NAME", a->names[0]},
                                                {"LOCKTABLE_NAMES", joined(a->names, "\n")},
                                                {"LOCKTABLE_TOKEN", joined(tokens, " ")}},
                                               &storage);
    std::vector<std::string> args = command;
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int err = 0;
    const pid_t child = start_command(argv, env, &err);
    int status = 0;
    if (err != 0) {
      fmt::print(stderr, "locktable: cannot run '{}': {}\n", command[0], std::strerror(err));
      *rc = err == ENOENT ? 127 : 126;  // as shells do
    } else {
      g_child = child;
      if (g_pending_signal != 0) ::kill(child, g_pending_signal);
      const std::string lost = wait_command(child, locks, r.tokens, &status);
      g_child = 0;
      *rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (!lost.empty()) *rc = kFailure;
    }
    if (err == 0 && *rc == 0) {
      for (size_t i : r.abandoned) (void)locks[i].mark_consistent();
    }
    Status released = t->release_all(requests);
    if (!released.ok()) fail(released);
  });
}

}  // namespace cli
