#include "etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "locktable/locktable.h"

extern char** environ;

namespace testing {

pid_t start_quiet_process(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

namespace {

bool bindable(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int free_loopback_ports(int count) {
  int ephemeral_low = 32768;  // the kernel's default, if the file cannot be read
  if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d", &ephemeral_low) != 1) ephemeral_low = 32768;
    std::fclose(f);
  }
  constexpr int kLowest = 10000;
  const int span = (std::max(ephemeral_low, kLowest + 1000) - kLowest) / count;  // starting points
  const int first = int(::getpid() % span);
  for (int k = 0; k < span; ++k) {
    const int base = kLowest + ((first + k) % span) * count;
    bool all = true;
    for (int i = 0; i < count && all; ++i) all = bindable(base + i);
    if (all) return base;
  }
  return kLowest;  // nothing free: etcd's start fails and says so
}

bool make_test_certificates(const std::string& dir) {
  const std::string in = "cd '" + dir + "' && ";
  const std::string quiet = " >/dev/null 2>&1";
  // A CA, then a key and a request for each certificate, signed by the CA
  // (the member's with its address as subjectAltName, as TLS clients check).
  return std::system((in + "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2"
                           " -subj /CN=locktable-test-ca" + quiet).c_str()) == 0 &&
         std::system((in + "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr"
                           " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1" + quiet + " && " +
                      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem"
                      " -days 2 -copy_extensions copy" + quiet).c_str()) == 0 &&
         std::system((in + "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client" +
                      quiet + " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
                              " -out client.pem -days 2" + quiet).c_str()) == 0;
}

EtcdProcess::EtcdProcess(int client_port, const std::string& name, const std::vector<std::string>& extra,
                         const std::string& tls_dir)
    : tls_dir_(tls_dir) {
  char tmpl[] = "/tmp/locktable-etcd-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return;
  dir_ = tmpl;
  client_ = "127.0.0.1:" + std::to_string(client_port);
  const std::string scheme = tls_dir.empty() ? "http://" : "https://";
  const std::string peer = "http://127.0.0.1:" + std::to_string(client_port + 1);
  std::vector<std::string> args{"etcd", "--data-dir", dir_ + "/data", "--name", name, "--listen-client-urls",
                                scheme + client_, "--advertise-client-urls", scheme + client_,
                                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
                                name + "=" + peer};
  if (!tls_dir.empty()) {
    args.insert(args.end(), {"--cert-file", tls_dir + "/server.pem", "--key-file", tls_dir + "/server.key",
                             "--client-cert-auth", "--trusted-ca-file", tls_dir + "/ca.pem"});
  }
  args.insert(args.end(), extra.begin(), extra.end());
  pid_ = start_quiet_process(args, dir_ + "/etcd.log");
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

bool EtcdProcess::ready(int ms) {
  if (pid_ <= 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    std::unique_ptr<locktable::Table> t;
    if (locktable::Table::open(url("ready"), {}, &t).ok()) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // it exited (a port taken, ...): its log says why
      pid_ = -1;
      return false;
    }
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string EtcdProcess::log_tail() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > 5 ? lines.size() - 5 : 0; i < lines.size(); ++i) out += lines[i] + "\n";
  return out.empty() ? "(etcd wrote nothing)" : out;
}

}  // namespace testing
