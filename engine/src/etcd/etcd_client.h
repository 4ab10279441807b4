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
//
// Security, as the location asks (etcd_location.h): HTTPS with the given CA
// and client certificate (libcurl verifies the member's certificate and
// host name); etcd's authentication by user and password, the password
// read from its file at each POST /v3/auth/authenticate, the token then
// sent as `Authorization` on every request and watch. A token etcd no
// longer takes (it expired after --auth-token-ttl idle seconds, or the
// user's password changed) is replaced and the request sent once more.
#pragma once

#include <chrono>
#include <memory>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "etcd_location.h"
#include "locktable/status.h"

namespace locktable::detail {

std::string base64_encode(std::string_view bytes);
bool base64_decode(std::string_view text, std::string* bytes);

// A JSON number field of the gateway (int64 as a string, or absent: 0).
int64_t json_int(const nlohmann::json& j, const char* field);

class EtcdClient {
 public:
  // `location` names the table in messages; `where` gives the endpoints,
  // TLS and authentication.
  EtcdClient(std::string location, const EtcdLocation& where, std::chrono::milliseconds connect_timeout);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // POST /v3/<path>. Errors: io_error (no endpoint answered: names them all),
  // corrupt (an answer that is not JSON), permission_denied (etcd refused
  // the user, its password or a key; authentication that etcd requires and
  // the URL does not give), not_found and permission_denied for a password
  // file, and etcd's own errors (its message).
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

  // Checks that the files the location names can be read. Errors: not_found,
  // permission_denied, io_error, naming the file.
  Status check_files() const;

 private:
  // Sets `handle` up for one POST of `payload` (JSON) to /v3/<path> on
  // endpoint `e` with `headers`, its answer going to write(..., data), within
  // `timeout`; curl's error text goes to `error` (CURL_ERROR_SIZE bytes).
  using WriteFn = size_t (*)(char* data, size_t size, size_t n, void* out);
  void prepare_post(void* handle, size_t e, std::string_view path, const std::string& payload, const void* headers,
                    WriteFn write, void* data, std::chrono::milliseconds timeout, char* error) const;
  // What went wrong with a transfer to endpoint `e`, for messages: curl's
  // text, and what a TLS mismatch most likely means.
  std::string transfer_error(size_t e, int rc, const char* error) const;

  // One request to endpoint `e`, authenticated when the location asks:
  // OK with *http and *response when `e` answered; io_error (naming `e` and
  // what failed) when it did not; authenticate's other errors.
  Status exchange(void* handle, size_t e, std::string_view path, const std::string& payload,
                  std::chrono::milliseconds timeout, std::string* response, long* http);
  // The headers of a request: with the current token when the location
  // authenticates (nullptr: none yet). *epoch names the token.
  std::shared_ptr<const void> headers(uint64_t* epoch);
  // POST /v3/auth/authenticate on endpoint `e`, unless the token is newer
  // than `stale_epoch` already. Errors: io_error (`e` did not answer: the
  // caller tries the next), permission_denied (a wrong user or password, an
  // unreadable password file), not_found (no password file).
  Status authenticate(void* handle, size_t e, uint64_t stale_epoch);

  void* take_handle();           // a pooled CURL easy handle (keeps its connection)
  void give_handle(void* handle);

  std::string location_;
  std::vector<std::string> endpoints_;
  EtcdLocation security_;        // its tls, certificate and user fields
  std::chrono::milliseconds connect_timeout_;
  std::mutex mu_;                // guards preferred_, pool_, headers_ and epoch_ (a leaf lock)
  size_t preferred_ = 0;
  std::vector<void*> pool_;
  std::shared_ptr<const void> headers_;  // a curl_slist with the token (authenticating locations)
  uint64_t epoch_ = 0;                   // counts the tokens taken
};

}  // namespace locktable::detail
