// Real etcd servers for the tests and the torture: single members started on
// loopback ports chosen by the caller (never 2379/2380, which a system etcd
// may hold), each with its data in a fresh temporary folder, stopped and
// removed by the process that started them.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace testing {

// Starts `args` (argv[0] looked up in PATH) with stdout and stderr appended
// to `log` (default /dev/null); returns its pid, or -1 if it could not be
// started.
pid_t start_quiet_process(const std::vector<std::string>& args, const std::string& log = "/dev/null");

// The first of `count` consecutive loopback ports that nothing is bound to
// now, below the kernel's ephemeral range (ip_local_port_range), where no
// client connection of any process can be holding one; the search starts at
// a point derived from the pid, so that programs running at once start apart.
int free_loopback_ports(int count);

// Makes, with the openssl tool, a test CA (ca.pem) and certificates it
// signed, for a member on 127.0.0.1 (server.pem, server.key) and for a client
// (client.pem, client.key), in `dir`. False if openssl failed.
bool make_test_certificates(const std::string& dir);

class EtcdProcess {
 public:
  // A member named `name` serving clients on 127.0.0.1:client_port and peers
  // on 127.0.0.1:client_port+1, its output in a log beside its data; `extra`
  // goes on etcd's command line. With `tls_dir` (make_test_certificates'),
  // it serves clients over TLS only and requires a client certificate that
  // CA signed; url() then gives an etcds:// URL with the client's.
  explicit EtcdProcess(int client_port, const std::string& name = "lt", const std::vector<std::string>& extra = {},
                       const std::string& tls_dir = "");
  ~EtcdProcess();  // SIGTERM, wait, remove the data folder (only in the starting process)
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // True once a table opens there, within `ms`; false at once if etcd exited.
  bool ready(int ms = 15000);
  // The last lines etcd wrote (for a failure message).
  std::string log_tail() const;
  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& client() const { return client_; }
  // `query` starts with '?' (or is empty).
  std::string url(const std::string& prefix, const std::string& query = "") const {
    if (tls_dir_.empty()) return "etcd://" + client_ + "/" + prefix + query;
    const std::string tls =
        "cacert=" + tls_dir_ + "/ca.pem&cert=" + tls_dir_ + "/client.pem&key=" + tls_dir_ + "/client.key";
    return "etcds://" + client_ + "/" + prefix + "?" + tls + (query.empty() ? "" : "&" + query.substr(1));
  }

 private:
  std::string dir_;
  std::string tls_dir_;
  std::string client_;
  pid_t pid_ = -1;
  pid_t owner_ = 0;
};

}  // namespace testing
