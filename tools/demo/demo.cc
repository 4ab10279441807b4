// locktable-demo: the mission in under a minute, with real processes.
//
// Four worker processes contend on three named locks. Inside each critical
// section a worker writes a journal file, "works", and deletes the journal: a
// journal left on disk means an update was half-done. The demo SIGKILLs a
// worker while it holds 'orders'. Another worker gets 'orders' *abandoned*,
// is told who died, finds the half-written journal, repairs it, and marks the
// lock consistent. The `locktable` tool then lists the table and dumps its
// history.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "locktable/locktable.h"

namespace {

using namespace locktable;
using Clock = std::chrono::steady_clock;

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> killed_at_ns{0};  // steady clock, when the victim was SIGKILLed
  std::atomic<int> takeovers{0};
};

const char* kNames[] = {"orders", "inventory", "ledger"};

int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

// One whole line per write(2), so lines of different processes never mix.
template <class... Args>
void say(fmt::format_string<Args...> f, Args&&... args) {
  std::string line = fmt::format(f, std::forward<Args>(args)...) + "\n";
  (void)!::write(1, line.data(), line.size());
}

std::string journal_path(const std::string& dir, const std::string& name) { return dir + "/" + name + ".journal"; }

int worker(int id, const std::string& dir, Shared* shared) {
  std::unique_ptr<Table> table;
  Status s = Table::open(dir, {}, &table);
  if (!s.ok()) {
    say("worker {}: {}", id, s.to_string());
    return 1;
  }
  std::vector<Lock> locks(3);
  for (int i = 0; i < 3; ++i) {
    if (!(s = table->lookup(kNames[i], &locks[size_t(i)])).ok()) return 1;
  }
  std::mt19937 rng(unsigned(::getpid()));
  const std::string who = fmt::format("worker {} (pid {})", id, ::getpid());
  while (!shared->stop.load()) {
    int pick = int(rng() % 4) == 3 ? 1 + int(rng() % 2) : 0;  // mostly 'orders': contention
    Lock& lock = locks[size_t(pick)];
    auto started = Clock::now();
    AcquireResult r = lock.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(5)));
    if (r.status.code() == Code::timed_out) continue;
    if (!r.held()) {
      say("{}: {}", who, r.status.to_string());
      return 1;
    }
    double waited = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    std::string journal = journal_path(dir, lock.name());
    if (r.abandoned()) {
      double since_kill = double(now_ns() - shared->killed_at_ns.load()) / 1e6;
      say("");
      say(">>> {} acquired '{}' ABANDONED: its holder pid {} tid {} died holding it ({:.2f} ms after the SIGKILL)",
          who, lock.name(), r.dead_owner.pid, r.dead_owner.tid, since_kill);
      std::ifstream in(journal);
      std::string left;
      std::getline(in, left);
      if (!left.empty()) {
        say(">>> {} found the half-written journal: \"{}\"; rolling it back", who, left);
        std::filesystem::remove(journal);
      }
      (void)lock.mark_consistent();
      say(">>> {} repaired '{}' and marked it consistent", who, lock.name());
      say("");
      shared->takeovers.fetch_add(1);
    } else {
      say("    {} acquired '{}'{}", who, lock.name(), waited >= 1 ? fmt::format(" after waiting {:.0f} ms", waited) : "");
    }
    std::ofstream(journal) << fmt::format("update by pid {} in progress", ::getpid()) << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(60 + rng() % 120));  // the "work"
    std::filesystem::remove(journal);
    if (!(s = lock.release()).ok()) {
      say("{}: {}", who, s.to_string());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
  }
  return 0;
}

void run_tool(const std::string& tool, const std::vector<std::string>& args) {
  std::string cmd = tool;
  for (const std::string& a : args) cmd += " '" + a + "'";
  say("");
  say("$ locktable {}", fmt::join(args, " "));
  std::fflush(stdout);
  if (std::system(cmd.c_str()) != 0) say("(locktable exited non-zero)");
}

std::string rfc3339_ms(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  time_t secs = time_t(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

std::string default_tool(const char* argv0) {
  std::filesystem::path self = std::filesystem::weakly_canonical(std::filesystem::path(argv0));
  std::filesystem::path sibling = self.parent_path().parent_path() / "locktable" / "locktable";
  if (std::filesystem::exists(sibling)) return sibling.string();
  return "locktable";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"locktable demo: workers, a SIGKILL, an abandoned lock taken over and repaired"};
  std::string tool = default_tool(argv[0]);
  bool keep = false;
  bool json_history = false;
  int workers = 4;
  double seconds = 2.5;
  app.add_option("--tool", tool, "Path of the locktable tool");
  app.add_flag("--keep", keep, "Keep the temporary table folder");
  app.add_option("--workers", workers, "Worker processes")->check(CLI::Range(2, 32));
  app.add_option("--seconds", seconds, "How long the workers run")->check(CLI::Range(2.0, 60.0));
  app.add_flag("--json", json_history, "Also dump the history around the kill as JSON Lines");
  CLI11_PARSE(app, argc, argv);

  char tmpl[] = "/tmp/locktable-demo-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return 1;
  const std::string dir = std::string(tmpl) + "/table";
  auto* shared = new (::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0))
      Shared();

  say("locktable demo: {} worker processes contend on 3 named locks in {}", workers, dir);
  {
    std::unique_ptr<Table> table;
    Status s = Table::open(dir, {}, &table);
    if (!s.ok()) {
      say("{}", s.to_string());
      return 1;
    }
    for (const char* n : kNames) {
      Lock l;
      if (!(s = table->lookup(n, &l)).ok()) return 1;
    }
  }
  say("Inside a critical section a worker writes <lock>.journal, works, then deletes it.");
  say("");

  std::vector<pid_t> pids;
  for (int i = 1; i <= workers; ++i) {
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid == 0) std::_Exit(worker(i, dir, shared));
    pids.push_back(pid);
  }

  // Let them contend, then kill whoever holds 'orders' in the middle of its update.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  std::unique_ptr<Table> table;
  Status s = Table::open(dir, {}, &table);
  if (!s.ok()) return 1;
  // The holder of 'orders' while its journal is on disk, or 0.
  auto orders_holder = [&]() -> pid_t {
    std::vector<LockInfo> locks;
    if (!table->list(&locks).ok()) return 0;
    for (const LockInfo& l : locks) {
      if (l.name == "orders" && l.state == LockState::held && !l.holders.empty() && l.holders[0].alive &&
          std::filesystem::exists(journal_path(dir, "orders"))) {
        return pid_t(l.holders[0].owner.pid);
      }
    }
    return 0;
  };
  // The victim is frozen (SIGSTOP) before it is checked again, so that it
  // cannot finish its update and release between the choice, the `ls` that
  // shows it holding, and the SIGKILL.
  pid_t victim = 0;
  for (int attempt = 0; attempt < 2000 && victim == 0; ++attempt) {
    if (pid_t candidate = orders_holder(); candidate != 0) {
      int status = 0;
      ::kill(candidate, SIGSTOP);
      ::waitpid(candidate, &status, WUNTRACED);  // a worker is this process's child
      if (orders_holder() == candidate) {
        victim = candidate;
        break;
      }
      ::kill(candidate, SIGCONT);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  run_tool(tool, {"ls", dir});
  say("");
  std::string since = rfc3339_ms(std::chrono::system_clock::now() - std::chrono::milliseconds(250));
  if (victim != 0) {
    say("*** SIGKILL pid {}: it holds 'orders' and its journal is half-written", victim);
    shared->killed_at_ns.store(now_ns());
    ::kill(victim, SIGKILL);
  } else {
    say("*** nobody held 'orders' with a journal in time; not killing anyone");
  }

  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.6, seconds - 1.2)));
  shared->stop.store(true);
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
  }
  say("");
  say("Workers stopped. {} abandoned lock(s) taken over and repaired.", shared->takeovers.load());

  run_tool(tool, {"ls", dir});
  say("");
  say("The history of 'orders' around the kill (the takeover is the 'recovered' event):");
  run_tool(tool, {"history", dir, "--name", "orders", "--since", since});
  if (json_history) run_tool(tool, {"history", dir, "--event", "recovered", "--json"});
  run_tool(tool, {"check", dir});
  say("");
  if (keep) {
    say("Table kept in {}", dir);
  } else {
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
  }
  return victim != 0 && shared->takeovers.load() == 1 ? 0 : 1;
}
