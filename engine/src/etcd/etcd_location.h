// An etcd table location:
//
//   etcd://host:port[,host:port...]/prefix[?ttl=SECONDS]
//
// The endpoints are tried in turn (failover); the prefix is where the table's
// keys live (the lock named N queues under <prefix>/<N>/, as `etcdctl lock
// <prefix>/<N>` does); ttl is the lease's time to live, 10 s by default.
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
};

// Errors: invalid_argument, naming the URL and what is wrong with it.
Status parse_etcd_location(const std::string& url, EtcdLocation* out);

// A lock name as one etcd key segment: bytes other than letters, digits,
// '-', '_' and '.' (and a leading '.') become %XX (upper-case hex), so that
// no name can reach into another name's keys or the table's own.
std::string encode_name_segment(std::string_view name);
bool decode_name_segment(std::string_view segment, std::string* name);

}  // namespace locktable::detail
