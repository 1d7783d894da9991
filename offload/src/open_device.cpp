#include "offload/open_device.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>

#include "internal.h"
#include "offload/serve_config.h"
#include "opu_sim/sim_device.h"

namespace opu::offload {
namespace {

Result<std::int64_t> positive_integer(const std::string& uri, const std::string& name,
                                      const std::string& value) {
  std::int64_t out = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || error != std::errc() || end != value.data() + value.size() || out < 1) {
    return invalid_argument("open_device: parameter " + name + "='" + value + "' in '" + uri +
                            "' is not a positive integer");
  }
  return out;
}

// A day, the longest deadline or backoff: they are added to the system clock in nanoseconds,
// where 2^63 ns is 292 years and a larger count of milliseconds overflows.
constexpr std::int64_t kMaxMilliseconds = 86'400'000;
// Attempts per call: far beyond any useful retry policy, and an int.
constexpr std::int64_t kMaxAttempts = 1000;
// gRPC takes the message limit as an int of bytes: 2047 MiB is the largest that fits.
constexpr std::int64_t kMaxMessageMiB = 2047;

// A positive integer no larger than `most` (`meaning` says why that bound, in the error).
Result<std::int64_t> bounded_integer(const std::string& uri, const std::string& name,
                                     const std::string& value, std::int64_t most,
                                     const std::string& meaning) {
  Result<std::int64_t> n = positive_integer(uri, name, value);
  if (!n.ok()) return n.status();
  if (*n > most) {
    return invalid_argument("open_device: parameter " + name + "='" + value + "' in '" + uri +
                            "' is above " + std::to_string(most) + " (" + meaning + ")");
  }
  return *n;
}

Result<std::chrono::milliseconds> milliseconds(const std::string& uri, const std::string& name,
                                               const std::string& value) {
  Result<std::int64_t> ms = bounded_integer(uri, name, value, kMaxMilliseconds, "a day");
  if (!ms.ok()) return ms.status();
  return std::chrono::milliseconds(*ms);
}

std::string trim(std::string text) {
  const auto not_space = [](unsigned char c) { return std::isspace(c) == 0; };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  return text;
}

}  // namespace

Result<RemoteOptions> remote_options_from_uri(std::string_view uri_view) {
  const std::string uri(uri_view);
  RemoteOptions options;
  std::string_view rest;
  if (uri_view.starts_with("grpc://")) {
    rest = uri_view.substr(7);
  } else if (uri_view.starts_with("grpcs://")) {
    rest = uri_view.substr(8);
    options.tls = true;
  } else {
    return invalid_argument("open_device: '" + uri + "' is not a grpc:// or grpcs:// URI");
  }
  const std::size_t question = rest.find('?');
  std::string_view hosts = rest.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view() : rest.substr(question + 1);
  if (hosts.ends_with('/')) hosts.remove_suffix(1);
  if (hosts.empty()) {
    return invalid_argument("open_device: '" + uri + "' names no server, want " +
                            (options.tls ? "grpcs" : "grpc") + "://HOST:PORT[,HOST:PORT...]");
  }
  if (hosts.find('/') != std::string_view::npos) {
    return invalid_argument("open_device: '" + uri +
                            "' has a path; want only HOST:PORT[,...] "
                            "and an optional ?query");
  }
  for (std::size_t start = 0; start <= hosts.size();) {
    const std::size_t comma = std::min(hosts.find(',', start), hosts.size());
    const std::string_view address = hosts.substr(start, comma - start);
    Result<HostPort> parsed = split_host_port(address, /*allow_port_zero=*/false);
    if (!parsed.ok()) return parsed.status().with_context("open_device: '" + uri + "'");
    options.addresses.emplace_back(address);
    start = comma + 1;
  }

  Result<std::map<std::string, std::string>> params = sim::parse_query(query);
  if (!params.ok()) return params.status().with_context("open_device: query of '" + uri + "'");
  for (const auto& [name, value] : *params) {
    if (name == "token") {
      Result<std::string> token = read_text_file(value, "token file");
      if (!token.ok()) return token.status().with_context("open_device: token=");
      options.token = trim(*token);
      if (options.token.empty()) {
        return invalid_argument("open_device: token file '" + value + "' is empty");
      }
    } else if (name == "ca") {
      if (!options.tls) {
        return invalid_argument("open_device: ca= in '" + uri + "' needs grpcs://, not grpc://");
      }
      Result<std::string> pem = read_text_file(value, "CA certificate");
      if (!pem.ok()) return pem.status().with_context("open_device: ca=");
      options.ca_pem = *pem;
    } else if (name == "server_name") {
      options.server_name = value;
    } else if (name == "deadline_ms") {
      Result<std::chrono::milliseconds> ms = milliseconds(uri, name, value);
      if (!ms.ok()) return ms.status();
      options.deadline = *ms;
    } else if (name == "retries") {
      Result<std::int64_t> n = bounded_integer(uri, name, value, kMaxAttempts, "attempts per call");
      if (!n.ok()) return n.status();
      options.retry.max_attempts = static_cast<int>(*n);
    } else if (name == "backoff_ms") {
      Result<std::chrono::milliseconds> ms = milliseconds(uri, name, value);
      if (!ms.ok()) return ms.status();
      options.retry.initial_backoff = *ms;
      options.retry.max_backoff =
          std::max(options.retry.max_backoff, options.retry.initial_backoff);
    } else if (name == "max_message_mb") {
      Result<std::int64_t> mb =
          bounded_integer(uri, name, value, kMaxMessageMiB, "gRPC's message limit is an int");
      if (!mb.ok()) return mb.status();
      options.max_message_bytes = *mb << 20;
    } else {
      return invalid_argument("open_device: unknown parameter '" + name + "' in '" + uri +
                              "', want token, ca, server_name, deadline_ms, retries, backoff_ms "
                              "or max_message_mb");
    }
  }
  return options;
}

Result<sim::SimConfig> sim_config_from_uri(std::string_view uri_view) {
  const std::string uri(uri_view);
  if (!uri_view.starts_with("sim:")) {
    return invalid_argument("open_device: '" + uri + "' is not a sim:// URI");
  }
  std::string_view rest = uri_view.substr(4);
  if (rest.starts_with("//")) rest.remove_prefix(2);
  if (rest.starts_with('/')) rest.remove_prefix(1);
  if (!rest.empty() && rest.front() != '?') {
    return invalid_argument("open_device: '" + uri +
                            "': sim:// takes no host or path, only "
                            "?name=value parameters");
  }
  if (!rest.empty()) rest.remove_prefix(1);
  Result<std::map<std::string, std::string>> params = sim::parse_query(rest);
  if (!params.ok()) return params.status().with_context("open_device: query of '" + uri + "'");
  Result<sim::SimConfig> config = sim::SimConfig::from_params(*params);
  if (!config.ok()) return config.status().with_context("open_device: '" + uri + "'");
  return config;
}

Result<std::unique_ptr<sim::Device>> open_device(std::string_view uri_view) {
  const std::string uri(uri_view);
  const std::size_t colon = uri_view.find(':');
  const std::string scheme(colon == std::string_view::npos ? std::string_view()
                                                           : uri_view.substr(0, colon));
  if (scheme == "sim") {
    Result<sim::SimConfig> config = sim_config_from_uri(uri_view);
    if (!config.ok()) return config.status();
    Result<std::unique_ptr<sim::SimDevice>> device = sim::SimDevice::create(*config);
    if (!device.ok()) return device.status().with_context("open_device: '" + uri + "'");
    return std::unique_ptr<sim::Device>(std::move(*device));
  }
  if (scheme == "grpc" || scheme == "grpcs") {
    Result<RemoteOptions> options = remote_options_from_uri(uri_view);
    if (!options.ok()) return options.status();
    Result<std::unique_ptr<RemoteDevice>> device = RemoteDevice::connect(*options);
    if (!device.ok()) return device.status();
    return std::unique_ptr<sim::Device>(std::move(*device));
  }
  return invalid_argument("open_device: scheme '" + scheme + "' of '" + uri +
                          "' unknown, want sim://, grpc:// or grpcs://");
}

}  // namespace opu::offload
