#include "etcd_client.h"

#include <curl/curl.h>

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

#include <fmt/format.h>

#include "posix_error.h"

namespace locktable::detail {

using nlohmann::json;

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t append_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The headers of every request without a token: no "Expect: 100-continue"
// (curl adds it to bodies over 1 KiB; it costs a round trip per call).
curl_slist* base_headers() {
  static curl_slist* const headers =
      curl_slist_append(curl_slist_append(nullptr, "Expect:"), "Content-Type: application/json");
  return headers;
}

// The same, as headers() hands them out (never freed).
const std::shared_ptr<const void>& plain_headers() {
  static const std::shared_ptr<const void> plain(base_headers(), [](const void*) {});
  return plain;
}

// gRPC's codes in the gateway's error answers.
constexpr int kGrpcPermissionDenied = 7;
constexpr int kGrpcUnauthenticated = 16;

}  // namespace

void EtcdClient::prepare_post(void* handle, size_t e, std::string_view path, const std::string& payload,
                              const void* headers, WriteFn write, void* data, std::chrono::milliseconds timeout,
                              char* error) const {
  CURL* curl = static_cast<CURL*>(handle);
  curl_easy_reset(curl);  // keeps the connection, and TLS sessions, for the next request
  const std::string url = fmt::format("{}://{}/v3/{}", security_.tls ? "https" : "http", endpoints_[e], path);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());  // curl copies it
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, long(payload.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, static_cast<const curl_slist*>(headers));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, data);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, long(connect_timeout_.count()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, long(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM in a library
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  if (security_.tls) {
    if (!security_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, security_.ca_file.c_str());
    if (!security_.cert_file.empty()) {
      curl_easy_setopt(curl, CURLOPT_SSLCERT, security_.cert_file.c_str());
      curl_easy_setopt(curl, CURLOPT_SSLKEY, security_.key_file.c_str());
    }
  }
}

std::string EtcdClient::transfer_error(size_t e, int rc, const char* error) const {
  std::string text = fmt::format("{}: {}", endpoints_[e], *error != 0 ? error : curl_easy_strerror(CURLcode(rc)));
  if (!security_.tls && rc == CURLE_GOT_NOTHING) text += " (a member that speaks TLS? then etcds://)";
  if (security_.tls && rc == CURLE_SSL_CONNECT_ERROR &&
      (std::strstr(error, "wrong version number") != nullptr || std::strstr(error, "SSL_ERROR_SYSCALL") != nullptr)) {
    text += " (a member without TLS? then etcd://)";
  }
  if (security_.tls && security_.ca_file.empty() && rc == CURLE_PEER_FAILED_VERIFICATION) {
    text += " (not signed by a CA of this system: cacert=PATH names the one that signed it)";
  }
  if (security_.tls && security_.cert_file.empty() &&
      (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || std::strstr(error, " alert ") != nullptr)) {
    text += " (does the member require a client certificate? cert=PATH&key=PATH)";
  }
  return text;
}

Status EtcdClient::check_files() const {
  const std::pair<const char*, const std::string*> files[] = {{"cacert", &security_.ca_file},
                                                               {"cert", &security_.cert_file},
                                                               {"key", &security_.key_file},
                                                               {"password_file", &security_.password_file}};
  for (const auto& [what, path] : files) {
    if (!path->empty() && ::access(path->c_str(), R_OK) != 0) {
      return posix_error(location_, fmt::format("{} {}", what, *path), errno);
    }
  }
  return Status::OK();
}

std::shared_ptr<const void> EtcdClient::headers(uint64_t* epoch) {
  if (security_.user.empty()) {
    *epoch = 0;
    return plain_headers();
  }
  std::lock_guard<std::mutex> guard(mu_);
  *epoch = epoch_;
  return headers_;
}

Status EtcdClient::authenticate(void* handle, size_t e, uint64_t stale_epoch) {
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (epoch_ > stale_epoch) return Status::OK();  // another thread took a newer token meanwhile
  }
  std::string password;
  {
    std::ifstream in(security_.password_file);
    if (!in) return posix_error(location_, "password_file " + security_.password_file, errno);
    std::getline(in, password);
    if (!password.empty() && password.back() == '\r') password.pop_back();
  }
  const std::string payload = json{{"name", security_.user}, {"password", password}}.dump();
  std::string response;
  char error[CURL_ERROR_SIZE] = {};
  prepare_post(handle, e, "auth/authenticate", payload, base_headers(), append_body, &response,
               std::chrono::seconds(5), error);
  const CURLcode rc = curl_easy_perform(static_cast<CURL*>(handle));
  if (rc != CURLE_OK) return Status(Code::io_error, transfer_error(e, rc, error));
  long http = 0;
  curl_easy_getinfo(static_cast<CURL*>(handle), CURLINFO_RESPONSE_CODE, &http);
  const json parsed = json::parse(response, nullptr, false);
  std::shared_ptr<const void> fresh;
  if (http == 200 && parsed.is_object() && parsed.value("token", "") != "") {
    curl_slist* list = curl_slist_append(curl_slist_append(nullptr, "Expect:"), "Content-Type: application/json");
    list = curl_slist_append(list, ("Authorization: " + parsed["token"].get<std::string>()).c_str());
    fresh = std::shared_ptr<const void>(
        list, [](const void* l) { curl_slist_free_all(const_cast<curl_slist*>(static_cast<const curl_slist*>(l))); });
  } else if (response.find("authentication is not enabled") != std::string::npos) {
    fresh = plain_headers();  // an operator turned it off
  } else {
    const std::string message = parsed.is_object() ? parsed.value("message", response) : response;
    return Status(Code::permission_denied, fmt::format("{}: etcd at {} refused user '{}': {}", location_,
                                                       endpoints_[e], security_.user, message));
  }
  std::lock_guard<std::mutex> guard(mu_);
  headers_ = std::move(fresh);
  ++epoch_;
  return Status::OK();
}

Status EtcdClient::exchange(void* handle, size_t e, std::string_view path, const std::string& payload,
                            std::chrono::milliseconds timeout, std::string* response, long* http) {
  CURL* curl = static_cast<CURL*>(handle);
  bool fresh_token_tried = false;
  for (;;) {
    uint64_t epoch = 0;
    const std::shared_ptr<const void> h = headers(&epoch);
    if (h == nullptr) {  // no token yet
      if (Status a = authenticate(curl, e, epoch); !a.ok()) return a;
      continue;
    }
    response->clear();
    char error[CURL_ERROR_SIZE] = {};
    prepare_post(curl, e, path, payload, h.get(), append_body, response, timeout, error);
    const CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) return Status(Code::io_error, transfer_error(e, rc, error));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http);
    if (*http != 200 && !security_.user.empty() && !fresh_token_tried &&
        (response->find("invalid auth token") != std::string::npos ||
         response->find("user name is empty") != std::string::npos)) {
      // The token expired, or the password changed; or authentication was
      // off at the last login and is on now: once more with a new token.
      fresh_token_tried = true;
      if (Status a = authenticate(curl, e, epoch); !a.ok()) return a;
      continue;
    }
    return Status::OK();
  }
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (size_t left = in.size() - i; left > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (left == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(left == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool base64_decode(std::string_view in, std::string* out) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[uint8_t(kAlphabet[i])] = int8_t(i);
    return t;
  }();
  out->clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      if (pad > 0 || table[uint8_t(c)] < 0) return false;
      v = (v << 6) | uint32_t(table[uint8_t(c)]);
    }
    out->push_back(char(v >> 16));
    if (pad < 2) out->push_back(char((v >> 8) & 0xff));
    if (pad < 1) out->push_back(char(v & 0xff));
  }
  return true;
}

int64_t json_int(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

EtcdClient::EtcdClient(std::string location, const EtcdLocation& where, std::chrono::milliseconds connect_timeout)
    : location_(std::move(location)), endpoints_(where.endpoints), security_(where), connect_timeout_(connect_timeout) {
  global_init();
}

EtcdClient::~EtcdClient() {
  for (void* h : pool_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* EtcdClient::take_handle() {
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (!pool_.empty()) {
      void* h = pool_.back();
      pool_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void EtcdClient::give_handle(void* h) {
  std::lock_guard<std::mutex> guard(mu_);
  pool_.push_back(h);
}

Status EtcdClient::call(std::string_view path, const json& body, json* out, std::chrono::milliseconds timeout) {
  CURL* curl = static_cast<CURL*>(take_handle());
  if (curl == nullptr) return Status(Code::io_error, fmt::format("{}: cannot make an HTTP handle", location_));
  const std::string payload = body.dump();
  size_t first;
  {
    std::lock_guard<std::mutex> guard(mu_);
    first = preferred_;
  }
  std::string errors;
  for (size_t attempt = 0; attempt < endpoints_.size(); ++attempt) {
    const size_t e = (first + attempt) % endpoints_.size();
    std::string response;
    long http = 0;
    if (Status sent = exchange(curl, e, path, payload, timeout, &response, &http); !sent.ok()) {
      if (sent.code() != Code::io_error) {  // etcd answered: refused the user
        give_handle(curl);
        return sent;
      }
      errors += fmt::format("{}{}", errors.empty() ? "" : "; ", sent.message());
      continue;
    }
    give_handle(curl);
    {
      std::lock_guard<std::mutex> guard(mu_);
      preferred_ = e;
    }
    json parsed = json::parse(response, nullptr, false);
    if (parsed.is_discarded()) {
      return Status(Code::corrupt, fmt::format("{}: {} answered {} with something that is not JSON", location_,
                                               endpoints_[e], path));
    }
    if (http != 200) {
      std::string message = parsed.is_object() && parsed.contains("message") && parsed["message"].is_string()
                                ? parsed["message"].get<std::string>()
                                : parsed.dump();
      // etcd's space quota used up (gRPC's RESOURCE_EXHAUSTED, 8, which etcd
      // also answers when overloaded: "too many requests", a transient
      // io_error): it then takes only reads and deletions until an operator
      // frees space.
      const int code = parsed.is_object() ? parsed.value("code", 0) : 0;
      const bool full = code == 8 && message.find("database space exceeded") != std::string::npos;
      // Authentication etcd requires and the URL does not give; a key the
      // user's roles do not grant.
      const bool anonymous = message.find("user name is empty") != std::string::npos;
      const bool refused = anonymous || code == kGrpcPermissionDenied || code == kGrpcUnauthenticated;
      return Status(full ? Code::capacity : refused ? Code::permission_denied : Code::io_error,
                    fmt::format("{}: etcd at {} refused {}{}: {}{}", location_, endpoints_[e], path,
                                security_.user.empty() ? "" : fmt::format(" to user '{}'", security_.user), message,
                                anonymous ? " (it requires authentication: add user=NAME&password_file=PATH)" : ""));
    }
    *out = std::move(parsed);
    return Status::OK();
  }
  curl_easy_cleanup(curl);
  return Status(Code::io_error, fmt::format("{}: etcd unreachable ({})", location_, errors));
}

namespace {

// The watch stream's reader: one JSON object per line.
struct WatchStream {
  std::string pending;
  bool deleted = false;
  bool failed = false;
};

size_t read_watch(char* data, size_t size, size_t n, void* out) {
  auto* w = static_cast<WatchStream*>(out);
  w->pending.append(data, size * n);
  for (size_t eol; (eol = w->pending.find('\n')) != std::string::npos;) {
    const json message = json::parse(w->pending.substr(0, eol), nullptr, false);
    w->pending.erase(0, eol + 1);
    const json result = message.is_object() ? message.value("result", json()) : json();
    if (!result.is_object() || result.value("canceled", false)) {
      w->failed = true;
      return 0;  // stops the transfer
    }
    for (const json& e : result.value("events", json::array())) {
      if (e.value("type", "") == "DELETE") {
        w->deleted = true;
        return 0;
      }
    }
  }
  return size * n;
}

}  // namespace

Status EtcdClient::watch_for_delete(const std::string& key, const std::string& range_end, int64_t after,
                                    std::chrono::milliseconds timeout, bool* deleted) {
  *deleted = false;
  CURL* curl = static_cast<CURL*>(take_handle());
  if (curl == nullptr) return Status(Code::io_error, fmt::format("{}: cannot make an HTTP handle", location_));
  const std::string payload =
      json{{"create_request", {{"key", key}, {"range_end", range_end}, {"start_revision", std::to_string(after + 1)}}}}
          .dump();
  size_t e;
  {
    std::lock_guard<std::mutex> guard(mu_);
    e = preferred_;
  }
  uint64_t epoch = 0;
  std::shared_ptr<const void> h = headers(&epoch);
  if (h == nullptr) {  // no token yet (a token etcd no longer takes ends the stream: the caller's next call renews it)
    if (Status a = authenticate(curl, e, epoch); !a.ok()) {
      give_handle(curl);
      return a;
    }
    h = headers(&epoch);
  }
  WatchStream stream;
  char error[CURL_ERROR_SIZE] = {};
  prepare_post(curl, e, "watch", payload, h.get(), read_watch, &stream, std::max(timeout, std::chrono::milliseconds(1)),
               error);
  const CURLcode rc = curl_easy_perform(curl);
  give_handle(curl);  // an ended stream closed its connection: the handle opens another
  if (stream.deleted) {
    *deleted = true;
    return Status::OK();
  }
  if ((rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_OK) && !stream.failed) return Status::OK();  // nothing left
  return Status(Code::io_error, fmt::format("{}: watch on {} failed: {}", location_, endpoints_[e],
                                            stream.failed ? "etcd ended it" : transfer_error(e, rc, error)));
}

}  // namespace locktable::detail
