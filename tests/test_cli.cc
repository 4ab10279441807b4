// The locktable tool, driven as a real binary (LOCKTABLE_CLI names it).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "helpers.h"
#include "locktable/version.h"
#include "table_format.h"

using namespace locktable;
using nlohmann::json;
using testing::ends_within;
using testing::TempDir;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

std::string cli_path() {
  const char* p = std::getenv("LOCKTABLE_CLI");
  REQUIRE(p != nullptr);
  return p;
}

// Starts the tool with stdout/stderr to pipes. Returns the pid.
pid_t start(const std::vector<std::string>& args, int* out_fd, int* err_fd) {
  int out[2], err[2];
  REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<std::string> argv_s{cli_path()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // its own group: kill_group reaches its command
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  ::close(err[1]);
  *out_fd = out[0];
  *err_fd = err[0];
  return pid;
}

std::string drain(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, size_t(n));
  ::close(fd);
  return s;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Result run(const std::vector<std::string>& args) {
  int out, err;
  pid_t pid = start(args, &out, &err);
  Result r;
  std::thread t([&] { r.err = drain(err); });
  r.out = drain(out);
  t.join();
  r.code = wait_exit(pid);
  return r;
}

// SIGKILLs a started tool and whatever command it runs.
void kill_group(pid_t pid) { ::kill(-pid, SIGKILL); }

bool contains(const std::string& h, const std::string& n) { return h.find(n) != std::string::npos; }

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// Waits until `name` shows as held in `ls --json`.
json wait_held(const std::string& dir, const std::string& name) {
  for (int i = 0; i < 2000; ++i) {
    Result r = run({"ls", dir, "--json"});
    if (r.code == 0) {
      for (const json& l : json::parse(r.out)) {
        if (l["name"] == name && l["state"] != "free") return l;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL("lock never held");
  return {};
}

}  // namespace

TEST_CASE("cli: every subcommand has --help; usage errors exit 2") {
  for (const char* sub : {"init", "ls", "run", "history", "recover", "check", "stat", "rm"}) {
    Result r = run({sub, "--help"});
    INFO(sub);
    CHECK(r.code == 0);
    CHECK(contains(r.out, "Usage"));
  }
  CHECK(run({}).code == 2);
  Result bogus = run({"bogus"});
  CHECK(bogus.code == 2);
  CHECK(contains(bogus.err, "unknown subcommand 'bogus'"));
  CHECK(run({"ls"}).code == 2);
  CHECK(run({"ls", "a", "b"}).code == 2);
}

TEST_CASE("cli: --version prints the library's version and exits 0, and --help names it") {
  Result r = run({"--version"});
  CHECK(r.code == 0);
  CHECK(r.out == std::string("locktable ") + LOCKTABLE_VERSION + "\n");
  CHECK(r.err.empty());
  CHECK(contains(run({"--help"}).out, "--version"));
}

TEST_CASE("cli: ls --prefix lists only its names; a name that is not UTF-8 is in --json as name_hex, exactly") {
  TempDir tmp;
  const std::string dir = tmp.table();
  for (const std::string name : {"jobs/1", "jobs/2", "jobs0", "orders", "bad\xff"}) {
    REQUIRE(run({"run", dir, name, "--", "true"}).code == 0);
  }
  Result r = run({"ls", dir, "--prefix", "jobs/", "--json"});
  REQUIRE(r.code == 0);
  std::set<std::string> names;
  for (const json& l : json::parse(r.out)) names.insert(l["name"].get<std::string>());
  CHECK(names == std::set<std::string>{"jobs/1", "jobs/2"});
  r = run({"ls", dir, "--prefix", "bad", "--json"});
  REQUIRE(r.code == 0);
  const json ls = json::parse(r.out);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0]["name_hex"] == "626164ff");
  r = run({"history", dir, "--name", "bad\xff", "--json"});
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "\"name_hex\":\"626164ff\""));
  CHECK(run({"ls", dir, "--prefix", "jobs", "--waits"}).code == 2);
}

TEST_CASE("cli: init, ls, stat, rm happy paths") {
  TempDir tmp;
  std::string dir = tmp.table();
  Result r = run({"init", dir, "--slots", "16"});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "created a table with 16 slots"));
  r = run({"init", dir});  // idempotent
  CHECK(r.code == 0);
  CHECK(r.err.empty());
  // Creation settings on an existing table are not applied, and it says so.
  r = run({"init", dir, "--history", "ring", "--slots", "16", "--max-slots", "1024"});
  CHECK(r.code == 0);
  CHECK(contains(r.err, "not applied: --history ring (it is persisted), --max-slots 1024 (it is 16777216)"));
  CHECK(!contains(r.err, "--slots 16"));  // what it has
  r = run({"ls", dir, "--json"});
  CHECK(r.code == 0);
  CHECK(json::parse(r.out) == json::array());
  CHECK(run({"run", dir, "alpha", "--", "true"}).code == 0);
  r = run({"ls", dir});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "NAME"));
  CHECK(contains(r.out, "alpha"));
  r = run({"stat", dir, "--json"});
  REQUIRE(r.code == 0);
  json st = json::parse(r.out);
  CHECK(st["slots"]["capacity"] == 16);
  CHECK(st["slots"]["used"] == 1);
  CHECK(st["format_version"] == locktable::format::kVersion);
  CHECK(st["boot_id"].get<std::string>().size() == 36);
  CHECK(st["history"]["level"] == "persisted");
  CHECK(st["ring"]["segments"] == 64);
  CHECK(st["ring"]["appended"] == 3);  // `created`, and run's `acquired` and `released`
  CHECK(st["ring"]["undrained"] == 3);
  CHECK(run({"stat", dir}).code == 0);
  CHECK(run({"rm", dir, "alpha"}).code == 0);
  CHECK(run({"rm", dir, "alpha"}).code == 3);
  CHECK(json::parse(run({"ls", dir, "--json"}).out) == json::array());
}

TEST_CASE("cli: run passes the command's exit status through, and holds the lock while it runs") {
  TempDir tmp;
  std::string dir = tmp.table();
  CHECK(run({"run", dir, "x", "--", "sh", "-c", "exit 7"}).code == 7);
  CHECK(run({"run", dir, "x", "--", "sh", "-c", "kill -TERM $$"}).code == 128 + SIGTERM);
  Result missing = run({"run", dir, "x", "--", "/no/such/command"});
  CHECK(missing.code == 127);
  CHECK(contains(missing.err, "/no/such/command"));
  Result env = run({"run", dir, "x", "--", "sh", "-c", "echo $LOCKTABLE_ABANDONED $LOCKTABLE_NAME"});
  CHECK(env.out == "0 x\n");

  // While one run holds it, a second with --timeout gives up with 1 (or the conflict code).
  int out, err;
  pid_t holder = start({"run", dir, "x", "--", "sleep", "2"}, &out, &err);
  json held = wait_held(dir, "x");
  CHECK(held["state"] == "held");
  CHECK(held["mode"] == "exclusive");
  CHECK(held["owner"]["pid"] == holder);
  CHECK(held["owner"]["comm"] == "locktable");
  CHECK(held.contains("held_for_ms"));
  CHECK(held.contains("waiters"));
  Result timed = run({"run", dir, "x", "--timeout", "0.2", "--", "true"});
  CHECK(timed.code == 1);
  CHECK(contains(timed.err, "timed out"));
  CHECK(run({"run", dir, "x", "-w", "0", "-E", "42", "--", "true"}).code == 42);
  // A timeout longer than the clock can count is a wait for ever: this run
  // waits for the holder's `sleep 2` to end, then runs.
  Result patient = run({"run", dir, "x", "--timeout", "1e300", "--", "sh", "-c", "echo in"});
  CHECK(patient.code == 0);
  CHECK(patient.out == "in\n");
  kill_group(holder);
  wait_exit(holder);
  drain(out);
  drain(err);
}

// The pids of `pid`'s children.
std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

TEST_CASE("cli: a run killed with SIGKILL takes its command with it and leaves the lock abandoned; "
          "the next run is told") {
  TempDir tmp;
  std::string dir = tmp.table();
  int out, err;
  pid_t victim = start({"run", dir, "jobs", "--", "sleep", "30"}, &out, &err);
  wait_held(dir, "jobs");
  const std::vector<pid_t> command = children_of(victim);
  REQUIRE(command.size() == 1);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  wait_exit(victim);
  // The locks are gone with run: its command must not go on without them.
  CHECK(ends_within(command[0], 2000));
  kill_group(victim);  // (so that a failure leaves no sleep behind)
  drain(out);
  drain(err);

  json l = json::parse(run({"ls", dir, "--json"}).out)[0];
  CHECK(l["state"] == "dead-owner");
  CHECK(l["owner"]["pid"] == victim);

  Result r = run({"run", dir, "jobs", "--", "sh", "-c", "echo $LOCKTABLE_ABANDONED; exit 3"});
  CHECK(r.code == 3);
  CHECK(r.out == "1\n");
  CHECK(contains(r.err, "abandoned"));
  CHECK(contains(r.err, "pid " + std::to_string(victim)));
  // The command failed: the repair is not confirmed, the next run is told again.
  r = run({"run", dir, "jobs", "--", "sh", "-c", "echo $LOCKTABLE_ABANDONED"});
  CHECK(r.out == "1\n");
  CHECK(r.code == 0);
  // That one succeeded: consistent from now on.
  r = run({"run", dir, "jobs", "--", "sh", "-c", "echo $LOCKTABLE_ABANDONED"});
  CHECK(r.out == "0\n");
  CHECK(r.err.empty());

  r = run({"history", dir, "--json", "--event", "recovered"});
  REQUIRE(r.code == 0);
  std::vector<json> ev = json_lines(r.out);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0]["dead_owner"]["pid"] == victim);
  CHECK(ev[0]["dead_owner"].contains("tid"));
  CHECK(ev[0]["dead_owner"].contains("start_time"));
}

TEST_CASE("cli: signals to run reach the command, and the lock is released after it") {
  TempDir tmp;
  std::string dir = tmp.table();
  int out, err;
  pid_t r = start({"run", dir, "sig", "--", "sleep", "30"}, &out, &err);
  wait_held(dir, "sig");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(::kill(r, SIGTERM) == 0);
  CHECK(wait_exit(r) == 128 + SIGTERM);  // the command's status: sleep died of TERM
  drain(out);
  drain(err);
  json l = json::parse(run({"ls", dir, "--json"}).out)[0];
  CHECK(l["state"] == "free");
  CHECK(l["abandoned"] == false);
}

TEST_CASE("cli: run waiting for its lock dies of INT, TERM or HUP at once, without running its command, its wait withdrawn") {
  TempDir tmp;
  std::string dir = tmp.table();
  int hout, herr;
  pid_t holder = start({"run", dir, "w", "--", "sleep", "30"}, &hout, &herr);
  wait_held(dir, "w");
  const std::string marker = tmp.path() + "/ran";
  auto lock_w = [&] {
    for (const json& l : json::parse(run({"ls", dir, "--json"}).out)) {
      if (l["name"] == "w") return l;
    }
    FAIL("no lock w");
    return json();
  };
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    INFO("signal " << sig);
    int out, err;
    pid_t waiter = start({"run", dir, "w", "--", "touch", marker}, &out, &err);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (lock_w()["waiters"].empty() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(lock_w()["waiters"].size() == 1);
    REQUIRE(::kill(waiter, sig) == 0);
    CHECK(testing::ends_within(waiter, 1000));
    CHECK(wait_exit(waiter) == 128 + sig);
    drain(out);
    drain(err);
    CHECK(::access(marker.c_str(), F_OK) != 0);  // the command never ran
    json l = lock_w();
    CHECK(l["state"] == "held");  // the holder's lock, untouched
    CHECK(l["holders"][0]["pid"] == holder);
    CHECK(l["waiters"].empty());  // the wait was withdrawn
  }
  kill_group(holder);
  wait_exit(holder);
  drain(hout);
  drain(herr);
}

TEST_CASE("cli: run --shared lets readers in together and keeps writers out") {
  TempDir tmp;
  std::string dir = tmp.table();
  int out, err;
  pid_t reader = start({"run", dir, "r", "--shared", "--", "sleep", "2"}, &out, &err);
  json l = wait_held(dir, "r");
  CHECK(l["mode"] == "shared");
  CHECK(l["holders"].size() == 1);
  CHECK(run({"run", dir, "r", "--shared", "-w", "0", "--", "true"}).code == 0);
  CHECK(run({"run", dir, "r", "-w", "0", "--", "true"}).code == 1);
  kill_group(reader);
  wait_exit(reader);
  drain(out);
  drain(err);
}

TEST_CASE("cli: --no-create refuses missing tables and names") {
  TempDir tmp;
  std::string dir = tmp.table();
  Result r = run({"run", dir, "x", "--no-create", "--", "true"});
  CHECK(r.code == 3);
  CHECK(contains(r.err, dir));
  CHECK(run({"init", dir}).code == 0);
  r = run({"run", dir, "x", "--no-create", "--", "true"});
  CHECK(r.code == 3);
  CHECK(contains(r.err, "'x'"));
}

TEST_CASE("cli: history prints JSON Lines with the contract's keys, and filters") {
  TempDir tmp;
  std::string dir = tmp.table();
  for (const char* n : {"a", "b", "a"}) REQUIRE(run({"run", dir, n, "--", "true"}).code == 0);
  Result r = run({"history", dir, "--json"});
  REQUIRE(r.code == 0);
  std::vector<json> ev = json_lines(r.out);
  REQUIRE(ev.size() == 8);  // created a, a acq/rel, created b, b acq/rel, a acq/rel
  // Times carry the decimals the table's clock supports (stat says its
  // resolution): the coarse clock ticks every 1 to 10 ms, so 2 or 3.
  const uint64_t resolution = json::parse(run({"stat", dir, "--json"}).out)["time_resolution_ns"];
  REQUIRE(resolution >= 1'000'000);
  const int digits = resolution >= 10'000'000 ? 2 : 3;
  std::regex rfc3339("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{" + std::to_string(digits) + "}Z");
  uint64_t prev = 0;
  for (const json& e : ev) {
    for (const char* k : {"seq", "time", "event", "name", "slot", "pid", "tid", "comm"}) {
      INFO(e.dump() << " lacks " << k);
      CHECK(e.contains(k));
    }
    CHECK(std::regex_match(e["time"].get<std::string>(), rfc3339));
    CHECK(e["seq"].get<uint64_t>() > prev);  // oldest first
    prev = e["seq"];
  }
  CHECK(ev[0]["event"] == "created");
  CHECK(ev[1]["event"] == "acquired");
  CHECK(ev[2]["event"] == "released");
  CHECK(json_lines(run({"history", dir, "--json", "--name", "a"}).out).size() == 5);
  CHECK(json_lines(run({"history", dir, "--json", "--event", "created"}).out).size() == 2);
  std::vector<json> last = json_lines(run({"history", dir, "--json", "--limit", "2"}).out);
  REQUIRE(last.size() == 2);
  CHECK(last[1]["seq"] == ev.back()["seq"]);  // --limit keeps the newest
  CHECK(json_lines(run({"history", dir, "--json", "--since", "2000-01-01T00:00:00Z"}).out).size() == 8);
  CHECK(json_lines(run({"history", dir, "--json", "--since", "2100-01-01T00:00:00Z"}).out).empty());
  CHECK(json_lines(run({"history", dir, "--json", "--since", "1h"}).out).size() == 8);
  CHECK(run({"history", dir, "--since", "yesterday-ish"}).code == 2);
  // Times too far for 64 bits of nanoseconds, ago or ahead, are the edges of
  // time: everything, or nothing (not an overflow, not an exception).
  for (const char* ago : {"99999999999999999999999s", "99999999999s", "300000000000d"}) {
    INFO(ago);
    CHECK(json_lines(run({"history", dir, "--json", "--since", ago}).out).size() == 8);
  }
  for (const char* ahead : {"99999999999999999999", "99999999999999", "9999-01-01T00:00:00.5Z"}) {
    INFO(ahead);
    Result far = run({"history", dir, "--json", "--since", ahead});
    CHECK(far.code == 0);
    CHECK(json_lines(far.out).empty());
  }
  CHECK(run({"history", dir, "--event", "exploded"}).code == 2);
  r = run({"history", dir});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "SEQ"));
}

TEST_CASE("cli: history --follow prints new events as they happen") {
  TempDir tmp;
  std::string dir = tmp.table();
  REQUIRE(run({"init", dir}).code == 0);
  int out, err;
  pid_t f = start({"history", dir, "--json", "--follow"}, &out, &err);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  REQUIRE(run({"run", dir, "late", "--", "true"}).code == 0);
  std::string got;
  pollfd p{out, POLLIN, 0};
  for (int i = 0; i < 50 && std::count(got.begin(), got.end(), '\n') < 3; ++i) {
    if (::poll(&p, 1, 100) > 0) {
      char buf[4096];
      ssize_t n = ::read(out, buf, sizeof buf);
      if (n > 0) got.append(buf, size_t(n));
    }
  }
  ::kill(f, SIGINT);
  CHECK(wait_exit(f) == 0);
  drain(out);
  drain(err);
  std::vector<json> ev = json_lines(got);
  REQUIRE(ev.size() >= 3);
  CHECK(ev[0]["event"] == "created");
  CHECK(ev[0]["name"] == "late");
}

TEST_CASE("cli: history --follow at level ring goes on printing once the ring has lapped, and counts what it lost") {
  TempDir tmp;
  std::string dir = tmp.table();
  Options o;
  o.history = HistoryLevel::ring;
  o.ring_entries = 64;  // this thread's segment holds 14 events
  auto t = testing::open_table(dir, o);
  Lock l;
  REQUIRE(t->lookup("lapped", &l).ok());  // `created`
  int out, err;
  pid_t f = start({"history", dir, "--json", "--follow"}, &out, &err);
  std::string got;
  auto read_for = [&](std::chrono::milliseconds d) {
    pollfd p{out, POLLIN, 0};
    for (auto until = std::chrono::steady_clock::now() + d; std::chrono::steady_clock::now() < until;) {
      if (::poll(&p, 1, 20) > 0) {
        char buf[4096];
        ssize_t n = ::read(out, buf, sizeof buf);
        if (n > 0) got.append(buf, size_t(n));
      }
    }
  };
  read_for(std::chrono::milliseconds(500));
  REQUIRE(contains(got, "created"));
  constexpr int kBatches = 10, kPairs = 3;  // 60 events, a few at a time: the ring laps four times
  for (int b = 0; b < kBatches; ++b) {
    for (int i = 0; i < kPairs; ++i) {
      REQUIRE(l.acquire().held());
      REQUIRE(l.release().ok());
    }
    read_for(std::chrono::milliseconds(450));  // more than a poll (200 ms)
  }
  ::kill(f, SIGINT);
  CHECK(wait_exit(f) == 0);
  got += drain(out);
  drain(err);
  uint64_t holds = 0, lost = 0;
  std::set<uint64_t> tokens;
  for (const json& e : json_lines(got)) {
    if (e["event"] == "lost") lost += e["count"].get<uint64_t>();
    if (e["event"] == "acquired" || e["event"] == "released") {
      ++holds;
      if (e["event"] == "acquired") CHECK(tokens.insert(e["token"].get<uint64_t>()).second);  // each printed once
    }
  }
  INFO(got);
  CHECK(holds + lost == 2 * kBatches * kPairs);  // every event printed once or counted lost
  CHECK(holds > 14);                             // more than the ring holds at once
}

TEST_CASE("cli: recover frees dead holders; --dry-run only reports") {
  TempDir tmp;
  std::string dir = tmp.table();
  REQUIRE(run({"init", dir}).code == 0);
  pid_t kid = testing::spawn([&] {
    std::unique_ptr<Table> t;
    Lock l = testing::child_lock(dir, "stuck", &t);
    if (!l.acquire().status.ok()) return 1;
    ::raise(SIGKILL);
    return 0;
  });
  CHECK(testing::wait_child(kid) == 128 + SIGKILL);
  Result r = run({"recover", dir, "--dry-run", "--json"});
  REQUIRE(r.code == 0);
  json acts = json::parse(r.out);
  REQUIRE(acts.size() == 1);
  CHECK(acts[0]["name"] == "stuck");
  CHECK(acts[0]["dead_owner"]["pid"] == kid);
  CHECK(json::parse(run({"ls", dir, "--json"}).out)[0]["state"] == "dead-owner");  // unchanged
  r = run({"recover", dir});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "stuck"));
  CHECK(contains(r.out, "freed"));
  json l = json::parse(run({"ls", dir, "--json"}).out)[0];
  CHECK(l["state"] == "free");
  CHECK(l["abandoned"] == true);
  CHECK(run({"recover", dir}).out == "nothing to recover\n");
  r = run({"run", dir, "stuck", "--", "sh", "-c", "echo $LOCKTABLE_ABANDONED"});
  CHECK(r.out == "1\n");  // still told
  CHECK(json_lines(run({"history", dir, "--json", "--event", "recovered"}).out).size() == 1);
}

TEST_CASE("cli: check reports problems with exit 1") {
  TempDir tmp;
  std::string dir = tmp.table();
  REQUIRE(run({"run", dir, "a", "--", "true"}).code == 0);
  Result r = run({"check", dir});
  CHECK(r.code == 0);
  CHECK(contains(r.out, "consistent"));
  {
    testing::RawTable raw(dir);
    raw.slot(0)->incarnation = 99;  // the name map and the slot now disagree
  }
  r = run({"check", dir});
  CHECK(r.code == 1);
  CHECK(contains(r.out, "incarnation"));
}

// `command` run by sh under a file size limit of 0 (ulimit -f 0), its output
// through a pipe (a file would be past the limit too), then "rc=N".
std::string under_no_file_size(const std::string& command) {
  FILE* p = ::popen(("ulimit -f 0; " + command + " 2>&1; echo rc=$?").c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST_CASE("cli: past the process's file size limit the tool says capacity, naming the file, and does not die of "
          "SIGXFSZ") {
  TempDir tmp;
  const std::string dir = tmp.table();
  REQUIRE(run({"run", dir, "existing", "--", "true"}).code == 0);
  const std::string lt = "'" + cli_path() + "' ";
  // A new name is an LMDB commit: refused, cleanly, and the table stays whole.
  std::string out = under_no_file_size(lt + "run '" + dir + "' new-name -- true");
  CHECK(contains(out, dir + "/data.mdb"));
  CHECK(contains(out, "File too large"));
  CHECK(contains(out, "rc=9"));
  out = under_no_file_size(lt + "init '" + tmp.path() + "/other'");  // the table file's allocation
  CHECK(contains(out, tmp.path() + "/other"));
  CHECK(contains(out, "rc=9"));
  Result r = run({"check", dir});
  CHECK(r.code == 0);
  CHECK(run({"ls", dir, "--json"}).out.find("new-name") == std::string::npos);
  // The command run starts gets SIGXFSZ's default back (it dies of it, as without run).
  out = under_no_file_size(lt + "run '" + dir + "' existing -- sh -c 'head -c 10 /dev/zero > " + tmp.path() + "/big'");
  CHECK(contains(out, "rc=" + std::to_string(128 + SIGXFSZ)));
  json l = json::parse(run({"ls", dir, "--json"}).out)[0];
  CHECK(l["state"] == "free");
}

TEST_CASE("cli: bad input is a clear error with its exit code, never a crash") {
  TempDir tmp;
  std::string dir = tmp.table();
  Result r = run({"ls", tmp.path() + "/missing"});
  CHECK(r.code == 3);
  CHECK(contains(r.err, tmp.path() + "/missing"));
  r = run({"ls", tmp.path()});  // a folder, but not a table
  CHECK(r.code == 3);
  CHECK(contains(r.err, tmp.path() + "/table"));
  // A bad name is refused before the table is created.
  r = run({"run", dir, "ok", "", "--", "true"});
  CHECK(r.code == 2);
  CHECK(contains(r.err, "lock name is empty"));
  CHECK(!std::filesystem::exists(dir));
  r = run({"run", dir, "twice", "other", "twice", "--", "true"});
  CHECK(r.code == 2);
  CHECK(contains(r.err, "'twice': lock name given twice"));
  CHECK(!std::filesystem::exists(dir));
  REQUIRE(run({"init", dir}).code == 0);
  for (const char* limit : {"-1", "1.5", "many", ""}) {
    r = run({"history", dir, "--limit", limit});
    INFO("--limit '" << limit << "': " << r.err);
    CHECK(r.code == 2);
    CHECK(contains(r.err, "--limit"));
    CHECK(r.err.size() < 200);  // the reason, not a range of 300 digits
  }
  // A picture that cannot be written says why, with the exit code of the cause.
  r = run({"history", dir, "--svg", tmp.path() + "/no-such-folder/t.svg"});
  CHECK(r.code == 3);
  CHECK(contains(r.err, tmp.path() + "/no-such-folder/t.svg: cannot write the picture: No such file or directory"));
  r = run({"history", dir, "--svg", tmp.path()});
  CHECK(r.code == 10);
  CHECK(contains(r.err, "Is a directory"));
  CHECK(run({"run", dir, "", "--", "true"}).code == 2);
  CHECK(run({"run", dir, std::string(256, 'n'), "--", "true"}).code == 2);
  CHECK(run({"run", dir, "x", "--timeout", "-1", "--", "true"}).code == 2);
  CHECK(run({"run", dir, "x", "--timeout", "soon", "--", "true"}).code == 2);
  std::filesystem::resize_file(dir + "/table", 1000);
  for (const char* sub : {"ls", "stat", "check", "recover", "history"}) {
    r = run({sub, dir});
    INFO(sub);
    CHECK(r.code == 5);
    CHECK(contains(r.err, dir + "/table"));
    CHECK(contains(r.err, "truncated"));
  }
  r = run({"run", dir, "x", "--", "true"});
  CHECK(r.code == 5);
  std::ofstream(dir + "/table", std::ios::trunc) << std::string(8192, 'q');
  r = run({"ls", dir});
  CHECK(r.code == 5);
  CHECK(contains(r.err, "not a locktable file"));
}

TEST_CASE("cli: a location with a scheme no backend handles is refused, naming the scheme") {
  for (const char* sub : {"ls", "stat", "check", "recover", "history", "init"}) {
    Result r = run({sub, "foo://x"});
    INFO(sub << ": " << r.err);
    CHECK(r.code == 8);
    CHECK(contains(r.err, "unsupported table location scheme 'foo'"));
    CHECK(contains(r.err, "foo://x"));
  }
  Result r = run({"run", "foo://x", "name", "--", "true"});
  CHECK(r.code == 8);
  CHECK(contains(r.err, "'foo'"));
  CHECK(!std::filesystem::exists("foo:"));
}

TEST_CASE("cli: run holds several names, exposes their tokens, and names the abandoned ones") {
  TempDir tmp;
  std::string dir = tmp.table();
  Result r = run({"run", dir, "b", "a", "--", "sh", "-c",
                  "printf '%s|%s|%s|%s' \"$LOCKTABLE_NAME\" \"$LOCKTABLE_NAMES\" \"$LOCKTABLE_TOKEN\" "
                  "\"$LOCKTABLE_ABANDONED\""});
  REQUIRE(r.code == 0);
  std::smatch m;
  REQUIRE(std::regex_match(r.out, m, std::regex("b\\|b\na\\|([0-9]+) ([0-9]+)\\|0")));
  const uint64_t first_b = std::stoull(m[1]);
  CHECK(std::stoull(m[2]) > 0);
  // The next holder of b gets a larger token.
  r = run({"run", dir, "b", "--", "sh", "-c", "printf %s \"$LOCKTABLE_TOKEN\""});
  REQUIRE(r.code == 0);
  CHECK(std::stoull(r.out) > first_b);
  // Without a command after --: a usage error, nothing held.
  CHECK(run({"run", dir, "a", "b"}).code == 2);

  // One of two names abandoned: the command is told which.
  int out, err;
  pid_t victim = start({"run", dir, "a", "--", "sleep", "30"}, &out, &err);
  wait_held(dir, "a");
  REQUIRE(::kill(victim, SIGKILL) == 0);
  wait_exit(victim);
  kill_group(victim);
  drain(out);
  drain(err);
  r = run({"run", dir, "a", "b", "--", "sh", "-c", "printf '%s|%s' \"$LOCKTABLE_ABANDONED\" \"$LOCKTABLE_ABANDONED_NAMES\""});
  CHECK(r.code == 0);
  CHECK(r.out == "1|a");
  CHECK(contains(r.err, "'a' was abandoned"));
  // ls --json shows a holder's token.
  pid_t holder = start({"run", dir, "a", "--", "sleep", "30"}, &out, &err);
  json held = wait_held(dir, "a");
  CHECK(held["owner"]["token"].get<uint64_t>() > first_b);
  kill_group(holder);
  wait_exit(holder);
  drain(out);
  drain(err);
}

TEST_CASE("cli: ls shows what each waiter waits for, and ls --waits prints the cycle") {
  TempDir tmp;
  std::string dir = tmp.table();
  testing::open_table(dir);
  // Two processes in a cycle, detection off, so that it stays.
  testing::Pipe ready, go;
  Options no_detection;
  no_detection.deadlock_timeout = std::chrono::milliseconds(0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 2; ++i) {
    kids.push_back(testing::spawn([&, i] {
      std::unique_ptr<Table> t;
      if (!Table::open(dir, no_detection, &t).ok()) return 1;
      Lock mine, theirs;
      if (!t->lookup(i == 0 ? "left" : "right", &mine).ok() || !t->lookup(i == 0 ? "right" : "left", &theirs).ok()) {
        return 2;
      }
      if (!mine.acquire().held()) return 3;
      ready.send();
      go.receive();
      (void)theirs.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30)));
      return 0;
    }));
  }
  REQUIRE(ready.receive() != 0);
  REQUIRE(ready.receive() != 0);
  go.send();
  go.send();
  json locks;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    locks = json::parse(run({"ls", dir, "--json"}).out);
  } while ((locks[0]["waiters"].empty() || locks[1]["waiters"].empty()) && std::chrono::steady_clock::now() < until);
  REQUIRE(locks.size() == 2);
  for (const json& l : locks) {
    REQUIRE(l["waiters"].size() == 1);
    const json& w = l["waiters"][0];
    CHECK(w["mode"] == "exclusive");
    CHECK(w.contains("waiting_ms"));
    CHECK(w.contains("comm"));
    CHECK(w["pid"] != l["owner"]["pid"]);
  }
  Result waits = run({"ls", dir, "--waits"});
  CHECK(waits.code == 0);
  CHECK(contains(waits.out, "waits"));
  CHECK(contains(waits.out, "cycle: "));
  CHECK(contains(waits.out, "-[left]->"));
  CHECK(contains(waits.out, "-[right]->"));
  INFO(waits.out);
  for (pid_t k : kids) ::kill(k, SIGKILL);
  for (pid_t k : kids) testing::wait_child(k);
  // Nobody waits any more.
  CHECK(contains(run({"ls", dir, "--waits"}).out, "no thread waits"));
}

TEST_CASE("cli: a thread name with escape sequences or a line break is printed escaped, never raw") {
  TempDir tmp;
  std::string dir = tmp.table();
  testing::open_table(dir);
  const std::string comm = "e\x1b[2J\nvil";  // 10 bytes: clear the screen, break the line
  testing::Pipe held, done;
  auto named_thread = [&](bool holder) {
    return testing::spawn([&, holder] {
      ::prctl(PR_SET_NAME, comm.c_str(), 0, 0, 0);
      std::unique_ptr<Table> t;
      Lock l;
      if (!Table::open(dir, {}, &t).ok() || !t->lookup("named", &l).ok()) return 1;
      if (!holder) return l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30))).held() ? 0 : 2;
      if (!l.acquire().held()) return 3;
      held.send();
      done.receive();
      return l.release().ok() ? 0 : 4;
    });
  };
  const pid_t holder = named_thread(true);
  REQUIRE(held.receive() != 0);
  const pid_t waiter = named_thread(false);
  for (int i = 0; i < 400 && json::parse(run({"ls", dir, "--json"}).out)[0]["waiters"].empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const json ls = json::parse(run({"ls", dir, "--json"}).out);
  CHECK(ls[0]["owner"]["comm"] == comm);  // JSON carries it exactly
  REQUIRE(ls[0]["waiters"].size() == 1);
  std::vector<std::pair<std::string, Result>> outputs;
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls", dir}, {"ls", dir, "--waits"}, {"top", dir}, {"history", dir}}) {
    outputs.emplace_back(args[0] + (args.size() > 2 ? " " + args[2] : ""), run(args));
  }
  done.send();
  CHECK(testing::wait_child(holder) == 0);
  CHECK(testing::wait_child(waiter) == 0);
  for (const auto& [what, r] : outputs) {
    INFO(what << ":\n" << r.out << r.err);
    CHECK(r.code == 0);
    CHECK(r.out.find('\x1b') == std::string::npos);
    CHECK(contains(r.out, "e\\x1b[2J\\x0avil"));
    CHECK(!contains(r.out, "\nvil"));
  }
}

TEST_CASE("cli: the man pages and the bash completion come from the definitions --help prints") {
  TempDir tmp;
  REQUIRE(run({"generate-docs", tmp.path()}).code == 0);
  for (const char* sub : {"init", "ls", "run", "history", "recover", "check", "stat", "rm", "metrics", "top"}) {
    std::ifstream in(tmp.path() + "/locktable-" + sub + ".1");
    REQUIRE(in.good());
    const std::string page((std::istreambuf_iterator<char>(in)), {});
    CHECK(contains(page, std::string(".TH LOCKTABLE-") + sub + " 1"));
    // Every long option --help lists is on the page (roff writes '-' as '\-').
    const std::string help = run({sub, "--help"}).out;
    std::smatch m;
    for (auto it = help.cbegin(); std::regex_search(it, help.cend(), m, std::regex("--([a-z][a-z-]+)")); it = m.suffix().first) {
      if (m[1] == "help" || m[1] == "help-all") continue;
      std::string roffed = "\\-\\-";
      for (char c : m[1].str()) roffed += c == '-' ? std::string("\\-") : std::string(1, c);
      INFO(sub << ": " << m[0]);
      CHECK(contains(page, roffed));
    }
  }
  std::ifstream main_page(tmp.path() + "/locktable.1");
  const std::string text((std::istreambuf_iterator<char>(main_page)), {});
  CHECK(contains(text, "locktable\\-run(1)"));
  CHECK(contains(text, "\\-\\-version"));  // the tool's own options too
  // The completion completes subcommands and a subcommand's options.
  const std::string script = tmp.path() + "/locktable.bash";
  auto complete = [&](const std::string& words, int cword) {
    const std::string out = tmp.path() + "/reply";
    const std::string cmd = "bash -c 'source " + script + "; COMP_WORDS=(" + words + "); COMP_CWORD=" +
                            std::to_string(cword) + "; _locktable; echo ${COMPREPLY[@]}' > " + out;
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream in(out);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  const std::string subs = complete("locktable r", 1);
  CHECK(contains(subs, "run"));
  CHECK(contains(subs, "recover"));
  CHECK(contains(subs, "rm"));
  CHECK_FALSE(contains(subs, "ls"));
  CHECK(contains(complete("locktable --v", 1), "--version"));
  CHECK(contains(complete("locktable run /tmp/x --ti", 3), "--timeout"));
  CHECK_FALSE(contains(complete("locktable r", 1), "generate-docs"));
}

TEST_CASE("cli: metrics count acquisitions in both modes, contention, timeouts and abandonment, and promtool accepts them") {
  TempDir tmp;
  std::string dir = tmp.table();
  for (int i = 0; i < 3; ++i) REQUIRE(run({"run", dir, "jobs", "--", "true"}).code == 0);
  int out, err;
  pid_t holder = start({"run", dir, "jobs", "--", "sleep", "30"}, &out, &err);
  wait_held(dir, "jobs");
  CHECK(run({"run", dir, "jobs", "-w", "0.2", "--", "true"}).code == 1);  // a timeout
  REQUIRE(::kill(holder, SIGKILL) == 0);                                  // an abandoned lock
  wait_exit(holder);
  kill_group(holder);
  drain(out);
  drain(err);
  REQUIRE(run({"run", dir, "jobs", "--", "true"}).code == 0);
  for (int i = 0; i < 2; ++i) REQUIRE(run({"run", dir, "jobs", "--shared", "--", "true"}).code == 0);
  Result m = run({"metrics", dir});
  REQUIRE(m.code == 0);
  INFO(m.out);
  CHECK(contains(m.out, "# TYPE locktable_exclusive_acquisitions_total counter"));
  CHECK(contains(m.out, "locktable_exclusive_acquisitions_total{lock=\"jobs\"} 5\n"));
  CHECK(contains(m.out, "locktable_shared_acquisitions_total{lock=\"jobs\"} 2\n"));
  CHECK(contains(m.out, "locktable_timeouts_total{lock=\"jobs\"} 1\n"));
  CHECK(contains(m.out, "locktable_abandoned_acquisitions_total{lock=\"jobs\"} 1\n"));
  CHECK(contains(m.out, "locktable_contended_acquisitions_total{lock=\"jobs\"} 1\n"));  // the takeover waited
  CHECK(contains(m.out, "locktable_held{lock=\"jobs\"} 0\n"));
  CHECK(contains(m.out, "locktable_names 1\n"));
  // promtool (Debian's prometheus package) checks the exposition format.
  const std::string file = tmp.path() + "/metrics.txt";
  std::ofstream(file) << m.out;
  CHECK(std::system(("promtool check metrics < " + file).c_str()) == 0);
  // The same counters in ls --json and, added up, in stat --json.
  json l = json::parse(run({"ls", dir, "--json"}).out)[0];
  CHECK(l["counters"]["exclusive_acquisitions"] == 5);
  CHECK(l["counters"]["shared_acquisitions"] == 2);
  CHECK(l["counters"]["timeouts"] == 1);
  json st = json::parse(run({"stat", dir, "--json"}).out);
  CHECK(st["counters"]["abandoned"] == 1);
  CHECK(st["counters"]["shared_acquisitions"] == 2);
  CHECK(contains(run({"stat", dir}).out, "acquisitions     5 exclusive, 2 shared; 1 waited, 1 timed out, 1 abandoned"));
}

TEST_CASE("cli: top shows the busiest locks first; without a terminal it prints one snapshot; under tmux q quits") {
  TempDir tmp;
  std::string dir = tmp.table();
  REQUIRE(run({"run", dir, "idle", "--", "true"}).code == 0);
  int out, err, out2, err2;
  pid_t holder = start({"run", dir, "busy", "--", "sleep", "30"}, &out, &err);
  wait_held(dir, "busy");
  pid_t waiter = start({"run", dir, "busy", "--", "true"}, &out2, &err2);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (json::parse(run({"ls", dir, "--json"}).out)[0]["waiters"].empty() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // No terminal: one plain snapshot, busiest first.
  Result snap = run({"top", dir});
  REQUIRE(snap.code == 0);
  INFO(snap.out);
  REQUIRE(contains(snap.out, "NAME"));
  CHECK(snap.out.find("busy") < snap.out.find("idle"));
  CHECK(contains(snap.out, std::to_string(holder) + "/"));

  // A terminal (tmux, 80x24): the live view, redrawn at a new size; q quits.
  const std::string session = "lt-top-" + std::to_string(::getpid());
  const std::string capture = tmp.path() + "/screen";
  auto screen = [&] {
    REQUIRE(std::system(("tmux capture-pane -p -t " + session + " > " + capture).c_str()) == 0);
    std::ifstream in(capture);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  REQUIRE(std::system(("tmux new-session -d -s " + session + " -x 80 -y 24 '" + cli_path() + " top " + dir + "'").c_str()) == 0);
  std::string text;
  for (int i = 0; i < 50 && !contains(text, "busy"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    text = screen();
  }
  INFO(text);
  CHECK(contains(text, "locktable top"));
  CHECK(contains(text, "1 waiting"));
  CHECK(text.find("busy") < text.find("idle"));
  for (const std::string& line : [&] {
         std::vector<std::string> v;
         std::istringstream in(text);
         for (std::string l; std::getline(in, l);) v.push_back(l);
         return v;
       }()) {
    CHECK(line.size() <= 80);  // it fits 80 columns
  }
  REQUIRE(std::system(("tmux resize-window -t " + session + " -x 120 -y 30").c_str()) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(contains(screen(), "busy"));
  // A later refresh (which reads only the busy locks and a screen's worth of
  // others) shows a lock that became busy since: held, above the idle ones.
  int out3, err3;
  pid_t later = start({"run", dir, "later", "--", "sleep", "30"}, &out3, &err3);
  wait_held(dir, "later");
  text.clear();
  for (int i = 0; i < 50 && !contains(text, "later"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    text = screen();
  }
  INFO(text);
  CHECK(contains(text, "later"));
  CHECK(text.find("later") < text.find("idle"));
  CHECK(contains(text, std::to_string(later) + "/"));
  REQUIRE(std::system(("tmux send-keys -t " + session + " q").c_str()) == 0);
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gone = std::system(("tmux has-session -t " + session + " 2>/dev/null").c_str()) != 0;
  }
  CHECK(gone);
  if (!gone) (void)std::system(("tmux kill-session -t " + session).c_str());
  kill_group(holder);
  kill_group(later);
  wait_exit(holder);
  wait_exit(waiter);
  wait_exit(later);
  for (int fd : {out, err, out2, err2, out3, err3}) drain(fd);
}

TEST_CASE("cli: history --svg draws a timeline that headless Chromium renders as a picture, not a blank page") {
  TempDir tmp;
  std::string dir = tmp.table();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(run({"run", dir, "orders", "--", "sleep", "0.05"}).code == 0);
    REQUIRE(run({"run", dir, "ledger", "--shared", "--", "sleep", "0.03"}).code == 0);
  }
  REQUIRE(run({"run", dir, "ledger", "-w", "0", "--", "true"}).code == 0);
  const std::string svg = tmp.path() + "/timeline.svg";
  Result r = run({"history", dir, "--svg", svg});
  REQUIRE(r.code == 0);
  {
    std::ifstream in(svg);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    CHECK(contains(text, "<svg"));
  }
  CHECK(run({"history", dir, "--svg", "/no/such/folder/x.svg"}).code != 0);  // an error naming the file
  // Render it, then look at the pixels: many colours, and far from all white.
  const std::string png = tmp.path() + "/timeline.png";
  const std::string render = "cd " + tmp.path() + " && timeout 120 chromium --headless --no-sandbox --disable-gpu "
                             "--hide-scrollbars --window-size=1200,300 --screenshot=" + png + " file://" + svg +
                             " >/dev/null 2>&1";
  REQUIRE(std::system(render.c_str()) == 0);
  const std::string count = tmp.path() + "/colours";
  const std::string script =
      "import struct,sys,zlib\n"
      "d=open(sys.argv[1],'rb').read(); assert d[:8]==b'\\x89PNG\\r\\n\\x1a\\n'\n"
      "i=8; idat=b''\n"
      "while i<len(d):\n"
      "  n,=struct.unpack('>I',d[i:i+4]); t=d[i+4:i+8]; c=d[i+8:i+8+n]; i+=12+n\n"
      "  if t==b'IHDR': w,h,bd,ct=struct.unpack('>IIBB',c[:10])\n"
      "  if t==b'IDAT': idat+=c\n"
      "raw=zlib.decompress(idat); bpp={2:3,6:4}[ct]; stride=w*bpp; prev=bytearray(stride); px=set(); ink=0; p=0\n"
      "for y in range(h):\n"
      "  f=raw[p]; line=bytearray(raw[p+1:p+1+stride]); p+=1+stride\n"
      "  for x in range(stride):\n"
      "    a=line[x-bpp] if x>=bpp else 0; b=prev[x]; c=prev[x-bpp] if x>=bpp else 0\n"
      "    if f==1: line[x]=(line[x]+a)&255\n"
      "    elif f==2: line[x]=(line[x]+b)&255\n"
      "    elif f==3: line[x]=(line[x]+(a+b)//2)&255\n"
      "    elif f==4:\n"
      "      q=a+b-c; pa,pb,pc=abs(q-a),abs(q-b),abs(q-c)\n"
      "      line[x]=(line[x]+(a if pa<=pb and pa<=pc else b if pb<=pc else c))&255\n"
      "  prev=line\n"
      "  for x in range(0,stride,bpp):\n"
      "    v=bytes(line[x:x+3]); px.add(v); ink+=v!=b'\\xff\\xff\\xff'\n"
      "print(len(px), ink/(w*h))\n";
  std::ofstream(tmp.path() + "/colours.py") << script;
  REQUIRE(std::system(("/usr/bin/python3 " + tmp.path() + "/colours.py " + png + " > " + count).c_str()) == 0);
  std::ifstream in(count);
  size_t colours = 0;
  double ink = 0;
  in >> colours >> ink;
  INFO(colours << " colours, " << ink << " of the pixels not white");
  CHECK(colours >= 8);
  CHECK(ink > 0.05);
}

TEST_CASE("cli: top, metrics, ls and history --svg work on a table with 1,000,000 names") {
  TempDir tmp;
  const std::string dir = tmp.table();
  constexpr size_t kNames = 1'000'000;
  {
    Options o;
    o.initial_slots = 1 << 20;
    o.max_slots = 1 << 21;
    o.history = HistoryLevel::ring;  // a million `created` events are not the point here
    auto t = testing::open_table(dir, o);
    std::vector<std::string> names;
    std::vector<Lock> locks;
    for (size_t i = 0; i < kNames; ++i) {
      char name[16];
      std::snprintf(name, sizeof name, "lock-%07zu", i);
      names.push_back(name);
      if (names.size() == 100'000 || i + 1 == kNames) {
        REQUIRE(t->lookup(names, &locks).ok());
        names.clear();
      }
    }
    REQUIRE(t->set_history_level(HistoryLevel::persisted).ok());
    Lock l;
    REQUIRE(t->lookup("lock-0500000", &l).ok());
    for (int i = 0; i < 3; ++i) {
      REQUIRE(l.acquire().held());
      REQUIRE(l.release().ok());
    }
  }
  const std::string lt = cli_path(), out = tmp.path() + "/out";
  auto lines_of = [&](const std::string& args) {
    REQUIRE(std::system((lt + " " + args + " > " + out).c_str()) == 0);
    std::ifstream in(out);
    size_t n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  CHECK(lines_of("top " + dir + " --once") == kNames + 1);            // a header and a row per lock
  CHECK(lines_of("metrics " + dir) == 2 + 1 + 10 * (2 + kNames));      // names, then 10 families of HELP, TYPE, rows
  CHECK(std::system(("grep -q 'locktable_exclusive_acquisitions_total{lock=\"lock-0500000\"} 3' " + out).c_str()) == 0);
  CHECK(lines_of("ls " + dir + " --json") == kNames + 2);
  // The busy ones only, from the slots: a header and the one held while ls runs.
  CHECK(lines_of("run " + dir + " lock-0999999 -- " + lt + " ls " + dir + " --busy") == 2);
  CHECK(std::system(("grep -q '^lock-0999999 ' " + out).c_str()) == 0);
  CHECK(lines_of("history " + dir + " --svg " + tmp.path() + "/t.svg") == 0);
  std::ifstream svg(tmp.path() + "/t.svg");
  CHECK(svg.good());
}
