#include "etcd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "locktable/locktable.h"

extern char** environ;

namespace testing {

pid_t start_quiet_process(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

EtcdProcess::EtcdProcess(int client_port, const std::string& name) {
  char tmpl[] = "/tmp/locktable-etcd-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return;
  dir_ = tmpl;
  client_ = "127.0.0.1:" + std::to_string(client_port);
  const std::string peer = "http://127.0.0.1:" + std::to_string(client_port + 1);
  pid_ = start_quiet_process({"etcd", "--data-dir", dir_ + "/data", "--name", name, "--listen-client-urls",
                              "http://" + client_, "--advertise-client-urls", "http://" + client_,
                              "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
                              name + "=" + peer});
  owner_ = ::getpid();
}

EtcdProcess::~EtcdProcess() {
  if (::getpid() != owner_) return;  // a forked child leaves it alone
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

bool EtcdProcess::ready(int ms) const {
  if (pid_ <= 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    std::unique_ptr<locktable::Table> t;
    if (locktable::Table::open(url("ready"), {}, &t).ok()) return true;
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace testing
