// EtcdClient: etcd v3's JSON gateway (POST /v3/kv/txn, /v3/lease/grant, ...)
// over HTTP, with libcurl and nlohmann-json.
//
// Why the gateway and not gRPC: it needs only libcurl (a Debian package every
// machine has), no generated code and no gRPC runtime, whose threads do not
// survive fork(); each call is one HTTP request on a pooled connection, so a
// child after fork() that opens the table again starts clean. The cost is
// JSON and base64 per call, small next to a Raft round trip.
//
// Keys and values travel base64-encoded, 64-bit numbers as decimal strings
// (the gateway's JSON mapping of protobuf).
//
// Failover: endpoints are tried in turn, starting with the one that answered
// last; a connection that cannot be made within the connect timeout moves to
// the next. Every call may be made from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "locktable/status.h"

namespace locktable::detail {

std::string base64_encode(std::string_view bytes);
bool base64_decode(std::string_view text, std::string* bytes);

// A JSON number field of the gateway (int64 as a string, or absent: 0).
int64_t json_int(const nlohmann::json& j, const char* field);

class EtcdClient {
 public:
  // `location` names the table in messages.
  EtcdClient(std::string location, std::vector<std::string> endpoints, std::chrono::milliseconds connect_timeout);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // POST /v3/<path>. Errors: io_error (no endpoint answered: names them all),
  // corrupt (an answer that is not JSON), and etcd's own errors (its message).
  Status call(std::string_view path, const nlohmann::json& body, nlohmann::json* out,
              std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Waits until a key in [key, range_end) (base64, as etcd takes them) is
  // deleted at a revision above `after`, or `timeout` passes: POST /v3/watch,
  // a stream read until its first DELETE event (PUTs, such as new waiters
  // queueing behind, are skipped). *deleted says which ended it. Errors:
  // io_error (the stream could not be opened, or broke); the caller then
  // polls instead.
  Status watch_for_delete(const std::string& key, const std::string& range_end, int64_t after,
                          std::chrono::milliseconds timeout, bool* deleted);

  const std::vector<std::string>& endpoints() const { return endpoints_; }

 private:
  // Sets `handle` up for one POST of `payload` (JSON) to `url`, its answer
  // going to write(..., data), within `timeout`.
  using WriteFn = size_t (*)(char* data, size_t size, size_t n, void* out);
  void prepare_post(void* handle, const std::string& url, const std::string& payload, WriteFn write, void* data,
                    std::chrono::milliseconds timeout) const;
  void* take_handle();           // a pooled CURL easy handle (keeps its connection)
  void give_handle(void* handle);

  std::string location_;
  std::vector<std::string> endpoints_;
  std::chrono::milliseconds connect_timeout_;
  std::mutex mu_;                // guards preferred_ and pool_ (a leaf lock)
  size_t preferred_ = 0;
  std::vector<void*> pool_;
};

}  // namespace locktable::detail
