// An etcd table location:
//
//   etcd[s]://host:port[,host:port...]/prefix[?PARAMETER=VALUE&...]
//
// The endpoints are tried in turn (failover); the prefix is where the table's
// keys live (the lock named N queues under <prefix>/<N>/, as `etcdctl lock
// <prefix>/<N>` does). `etcds://` speaks HTTPS to the members. Parameters
// (values may be %XX-encoded), as etcdctl's --cacert, --cert, --key, --user:
//   ttl=SECONDS          the lease's time to live, 2 to 3600 (default 10)
//   cacert=PATH          etcds: the CA that signed the members' certificates
//                        (default: the system's CAs)
//   cert=PATH, key=PATH  etcds: a client certificate and its key, together
//   user=NAME            etcd's authentication, with
//   password_file=PATH   the user's password (the file's first line), read
//                        at every authentication: a password is never part
//                        of a URL, which messages and `ps` show
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "locktable/status.h"

namespace locktable::detail {

struct EtcdLocation {
  std::vector<std::string> endpoints;  // "host:port"
  std::string prefix;                  // without a leading or trailing '/'
  std::chrono::seconds ttl{10};
  bool tls = false;            // etcds://
  std::string ca_file;         // empty: the system's CAs
  std::string cert_file;       // with key_file, or neither
  std::string key_file;
  std::string user;            // empty: no authentication
  std::string password_file;   // set exactly when user is
};

// The form of a location, for messages.
inline constexpr const char* kEtcdLocationForm =
    "etcd[s]://host:port[,host:port...]/prefix[?ttl=SECONDS][&user=NAME&password_file=PATH]"
    "[&cacert=PATH][&cert=PATH&key=PATH]";

// The prefix and the parameters' values are percent-decoded. Errors:
// invalid_argument, naming the URL and what is wrong with it (the files it
// names are not opened here).
Status parse_etcd_location(const std::string& url, EtcdLocation* out);

// A lock name as one etcd key segment: bytes other than letters, digits,
// '-', '_' and '.' (and a leading '.') become %XX (upper-case hex), so that
// no name can reach into another name's keys or the table's own.
std::string encode_name_segment(std::string_view name);
bool decode_name_segment(std::string_view segment, std::string* name);

}  // namespace locktable::detail
