// locktable-bench --etcd: locktable's etcd backend against etcd's own lock
// service (the v3lock Lock and Unlock RPCs, through the same JSON gateway),
// on a single-member etcd this mode starts on loopback high ports and stops.
#include "etcd_mode.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "etcd_client.h"  // base64_encode, as the etcd backend writes keys
#include "harness.h"
#include "locktable/locktable.h"

extern char** environ;

namespace bench {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

size_t collect(char* d, size_t s, size_t n, void* out) {
  static_cast<std::string*>(out)->append(d, s * n);
  return s * n;
}

// etcd's own lock service, one HTTP connection (what a client of it does).
class EtcdLockService {
 public:
  explicit EtcdLockService(std::string endpoint) : endpoint_(std::move(endpoint)), curl_(curl_easy_init()) {}
  ~EtcdLockService() { curl_easy_cleanup(curl_); }
  json post(const std::string& path, const json& body) {
    std::string response;
    const std::string url = "http://" + endpoint_ + "/v3/" + path;
    const std::string payload = body.dump();
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl_, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 60000L);
    if (curl_easy_perform(curl_) != CURLE_OK) return json();
    return json::parse(response, nullptr, false);
  }
  std::string grant(int ttl) {
    json r = post("lease/grant", json{{"TTL", std::to_string(ttl)}});
    return r.is_object() ? r.value("ID", std::string()) : std::string();
  }
  // Lock blocks until held; returns the lock's key (base64).
  std::string lock(const std::string& name, const std::string& lease) {
    json r = post("lock/lock", json{{"name", locktable::detail::base64_encode(name)}, {"lease", lease}});
    return r.is_object() ? r.value("key", std::string()) : std::string();
  }
  void unlock(const std::string& key) { (void)post("lock/unlock", json{{"key", key}}); }

 private:
  std::string endpoint_;
  CURL* curl_;
};

class EtcdProcess {
 public:
  bool start() {
    dir_ = std::filesystem::temp_directory_path() / fmt::format("locktable-bench-etcd-{}", ::getpid());
    std::filesystem::remove_all(dir_);
    const int base = 20000 + int(::getpid() % 5000) * 2;  // below the ephemeral ports (32768 and up)
    endpoint_ = fmt::format("127.0.0.1:{}", base);
    const std::string peer = fmt::format("http://127.0.0.1:{}", base + 1);
    std::vector<std::string> args = {"etcd", "--data-dir", (dir_ / "data").string(), "--name", "bench",
                                     "--listen-client-urls", "http://" + endpoint_, "--advertise-client-urls",
                                     "http://" + endpoint_, "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench=" + peer};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    const int rc = posix_spawnp(&pid_, "etcd", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    const auto until = Clock::now() + std::chrono::seconds(15);
    while (Clock::now() < until) {
      std::unique_ptr<locktable::Table> t;
      if (locktable::Table::open(url("ready"), {}, &t).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  ~EtcdProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string url(const std::string& prefix, const std::string& query = "") const {
    return "etcd://" + endpoint_ + "/" + prefix + query;
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = -1;
  std::filesystem::path dir_;
  std::string endpoint_;
};

// Two processes taking one lock in turns, `rounds` times each: ms per hand-off.
template <class Child>
double handoff_ms(int rounds, Child child) {
  auto t = Clock::now();
  std::vector<pid_t> kids;
  for (int p = 0; p < 2; ++p) {
    pid_t pid = ::fork();
    if (pid == 0) _exit(child(rounds));
    kids.push_back(pid);
  }
  bool ok = true;
  for (pid_t k : kids) {
    int status = 0;
    ::waitpid(k, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return ok ? ms_since(t) / (2.0 * rounds) : -1;
}

}  // namespace

int run_etcd_mode(bool quick) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  EtcdProcess etcd;
  if (!etcd.start()) {
    fmt::print(stderr, "locktable-bench --etcd: could not start etcd (apt-get install etcd-server)\n");
    return 1;
  }
  const int rounds = quick ? 50 : 300;
  const int pair_rounds = quick ? 100 : 1000;
  const int ttl = 2;
  fmt::print("locktable-bench --etcd: single-member etcd on {}, {} uncontended rounds (interleaved), {} hand-offs, "
             "lease TTL {} s for deaths\n\n",
             etcd.endpoint(), pair_rounds, 2 * (rounds / 5), ttl);

  // Uncontended pairs: locktable, etcd's pair and locktable without history
  // in turns within each round (ABCABC, not AAA BBB CCC), so that a change in
  // the machine's pace moves all three alike.
  std::unique_ptr<locktable::Table> t;
  if (!locktable::Table::open(etcd.url("bench"), {}, &t).ok()) return 1;
  locktable::Lock l;
  if (!t->lookup("pair", &l).ok()) return 1;
  EtcdLockService service(etcd.endpoint());
  const std::string lease = service.grant(60);
  std::unique_ptr<locktable::Table> quiet;
  locktable::Lock ql;
  if (!locktable::Table::open(etcd.url("quiet"), {}, &quiet).ok() ||
      !quiet->set_history_level(locktable::HistoryLevel::off).ok() || !quiet->lookup("pair", &ql).ok()) {
    return 1;
  }
  std::vector<double> lt_ms, etcd_ms, quiet_ms;
  for (int i = 0; i < pair_rounds; ++i) {
    auto t0 = Clock::now();
    (void)l.acquire();
    (void)l.release();
    lt_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    service.unlock(service.lock("peer/pair", lease));
    etcd_ms.push_back(ms_since(t0));
    t0 = Clock::now();
    (void)ql.acquire();
    (void)ql.release();
    quiet_ms.push_back(ms_since(t0));
  }
  const double lt_pair = median(lt_ms), etcd_pair = median(etcd_ms), lt_quiet_pair = median(quiet_ms);

  // Hand-off between two processes.
  const std::string url = etcd.url("bench");
  const double lt_handoff = handoff_ms(rounds / 5, [&](int n) {
    std::unique_ptr<locktable::Table> tt;
    locktable::Lock cl;
    if (!locktable::Table::open(url, {}, &tt).ok() || !tt->lookup("handoff", &cl).ok()) return 1;
    for (int i = 0; i < n; ++i) {
      if (!cl.acquire().held() || !cl.release().ok()) return 2;
    }
    return 0;
  });
  const std::string endpoint = etcd.endpoint();
  const double etcd_handoff = handoff_ms(rounds / 5, [&](int n) {
    EtcdLockService s(endpoint);
    const std::string my_lease = s.grant(60);
    for (int i = 0; i < n; ++i) {
      const std::string key = s.lock("peer/handoff", my_lease);
      if (key.empty()) return 2;
      s.unlock(key);
    }
    return 0;
  });

  // A dead holder: SIGKILL while holding, then the time until a waiter holds.
  const std::string ttl_url = etcd.url("bench", fmt::format("?ttl={}", ttl));
  auto death_ms = [&](bool ours) {
    int fds[2];
    if (::pipe(fds) != 0) return -1.0;
    pid_t holder = ::fork();
    if (holder == 0) {  // holds until killed (its table stays open: closing it would end the lease)
      std::unique_ptr<locktable::Table> tt;
      locktable::Lock cl;
      EtcdLockService s(endpoint);
      if (ours) {
        if (!locktable::Table::open(ttl_url, {}, &tt).ok() || !tt->lookup("death", &cl).ok() || !cl.acquire().held()) {
          _exit(1);
        }
      } else if (s.lock("peer/death", s.grant(ttl)).empty()) {
        _exit(1);
      }
      (void)!::write(fds[1], "y", 1);
      for (;;) ::pause();
    }
    char c = 0;
    (void)!::read(fds[0], &c, 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto killed = Clock::now();
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    double ms = -1;
    if (ours) {
      std::unique_ptr<locktable::Table> tt;
      locktable::Lock cl;
      if (locktable::Table::open(ttl_url, {}, &tt).ok() && tt->lookup("death", &cl).ok()) {
        locktable::AcquireResult r = cl.acquire();
        ms = r.abandoned() ? ms_since(killed) : -1;
        (void)cl.mark_consistent();
        (void)cl.release();
      }
    } else {
      EtcdLockService s(endpoint);
      const std::string key = s.lock("peer/death", s.grant(60));
      ms = key.empty() ? -1 : ms_since(killed);
      s.unlock(key);
    }
    return ms;
  };
  const double lt_death = death_ms(true), etcd_death = death_ms(false);

  fmt::print("| scenario | locktable (etcd://) | etcd Lock/Unlock RPCs | ratio |\n|---|---|---|---|\n");
  fmt::print("| uncontended acquire+release | {:.2f} ms | {:.2f} ms | {:.2f}x |\n", lt_pair, etcd_pair,
             lt_pair / etcd_pair);
  fmt::print("| uncontended, history off | {:.2f} ms | {:.2f} ms | {:.2f}x |\n", lt_quiet_pair, etcd_pair,
             lt_quiet_pair / etcd_pair);
  fmt::print("| hand-off, 2 processes | {:.2f} ms | {:.2f} ms | {:.2f}x |\n", lt_handoff, etcd_handoff,
             lt_handoff / etcd_handoff);
  fmt::print("| SIGKILL of the holder to a waiter's acquire (TTL {} s) | {:.0f} ms (told abandoned) | {:.0f} ms (not "
             "told) | {:.2f}x |\n",
             ttl, lt_death, etcd_death, lt_death / etcd_death);
  return lt_pair > 0 && etcd_pair > 0 && lt_death > 0 ? 0 : 1;
}

}  // namespace bench
