#include "offload/serve_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace opu::offload {
namespace {

std::string trim(std::string text) {
  const auto not_space = [](unsigned char c) { return std::isspace(c) == 0; };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  return text;
}

Result<double> parse_number(const std::string& name, const std::string& value, double min) {
  double out = 0.0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || error != std::errc() || end != value.data() + value.size() ||
      !std::isfinite(out) || out < min) {
    return invalid_argument("opu-serve: " + name + " is '" + value +
                            "', want a number >= " + std::to_string(min));
  }
  return out;
}

Result<bool> parse_bool(const std::string& name, const std::string& value) {
  if (value == "true" || value == "1" || value == "yes" || value == "on") return true;
  if (value == "false" || value == "0" || value == "no" || value == "off") return false;
  return invalid_argument("opu-serve: " + name + " is '" + value + "', want true or false");
}

}  // namespace

std::string normalize_param_name(std::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

std::vector<std::pair<std::string, std::string>> describe_serve_params() {
  return {
      {"listen", "HOST:PORT to listen on; port 0 picks a free one (default 127.0.0.1:0)"},
      {"tls_cert", "PEM certificate chain file: serve TLS (needs tls_key)"},
      {"tls_key", "PEM private key file of tls_cert"},
      {"token_file", "file holding the bearer token clients must send (default: none)"},
      {"max_message_mb", "largest message received or sent, MiB (default 64)"},
      {"max_inflight", "requests served at once; more get RESOURCE_EXHAUSTED (default 64)"},
      {"serve_linear", "serve LinearTransform (false: UNIMPLEMENTED, frames only) (default true)"},
      {"log_level", "trace, debug, info, warn, error or off (default info)"},
      {"summary_interval_s", "period of the info-level summary, seconds; 0 = at exit (default 10)"},
      {"shutdown_grace_s", "time in-flight calls get on SIGINT/SIGTERM, seconds (default 30)"},
      {"calibration",
       "calibration file (opu-calibrate ... --out FILE): its exposure becomes the default "
       "exposure, its masked pixels project to 0 in LinearTransform (default: none)"},
  };
}

Status apply_serve_params(const std::map<std::string, std::string>& params, ServeConfig& config) {
  for (const auto& [raw_name, value] : params) {
    const std::string name = normalize_param_name(raw_name);
    if (name == "listen") {
      config.listen = value;
    } else if (name == "tls_cert") {
      config.tls_cert_file = value;
    } else if (name == "tls_key") {
      config.tls_key_file = value;
    } else if (name == "calibration") {
      config.calibration_file = value;
    } else if (name == "token_file") {
      config.token_file = value;
    } else if (name == "log_level") {
      config.log_level = value;
    } else if (name == "max_message_mb") {
      Result<double> mb = parse_number(name, value, 0.004);
      if (!mb.ok()) return mb.status();
      config.max_message_mb = std::min(*mb, 2047.0);
    } else if (name == "max_inflight") {
      Result<double> n = parse_number(name, value, 1.0);
      if (!n.ok()) return n.status();
      config.max_inflight = static_cast<int>(std::min(*n, 1e6));
    } else if (name == "serve_linear") {
      Result<bool> on = parse_bool(name, value);
      if (!on.ok()) return on.status();
      config.serve_linear = *on;
    } else if (name == "summary_interval_s") {
      Result<double> s = parse_number(name, value, 0.0);
      if (!s.ok()) return s.status();
      config.summary_interval_s = *s;
    } else if (name == "shutdown_grace_s") {
      Result<double> s = parse_number(name, value, 0.0);
      if (!s.ok()) return s.status();
      config.shutdown_grace_s = *s;
    } else {
      config.sim_params[name] = value;
    }
  }
  return {};
}

Result<std::string> read_text_file(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(std::string(what) + " '" + path + "' cannot be opened");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return data_loss(std::string(what) + " '" + path + "' cannot be read");
  return text.str();
}

Result<std::map<std::string, std::string>> read_json_params(const std::string& path) {
  Result<std::string> text = read_text_file(path, "config file");
  if (!text.ok()) return text.status();
  return parse_json_params(*text, path);
}

Result<std::map<std::string, std::string>> parse_json_params(std::string_view text,
                                                             const std::string& path) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return invalid_argument("config file '" + path + "' is not valid JSON");
  }
  if (!json.is_object()) {
    return invalid_argument("config file '" + path + "' is not a JSON object of name: value");
  }
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : json.items()) {
    if (value.is_string()) {
      out[normalize_param_name(name)] = value.get<std::string>();
    } else if (value.is_boolean()) {
      out[normalize_param_name(name)] = value.get<bool>() ? "true" : "false";
    } else if (value.is_number_integer() || value.is_number_unsigned()) {
      out[normalize_param_name(name)] = value.dump();
    } else if (value.is_number_float()) {
      std::ostringstream number;
      number.precision(17);
      number << value.get<double>();
      out[normalize_param_name(name)] = number.str();
    } else {
      return invalid_argument("config file '" + path + "': '" + name +
                              "' must be a string, number or boolean, got " + value.type_name());
    }
  }
  return out;
}

Result<ServerOptions> ServeConfig::server_options() const {
  ServerOptions options;
  options.listen = listen;
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return invalid_argument("opu-serve: TLS needs both --tls-cert and --tls-key");
  }
  if (!tls_cert_file.empty()) {
    Result<std::string> cert = read_text_file(tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    Result<std::string> key = read_text_file(tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    options.tls_cert_pem = *cert;
    options.tls_key_pem = *key;
  }
  if (!token_file.empty()) {
    Result<std::string> token = read_text_file(token_file, "token file");
    if (!token.ok()) return token.status();
    options.token = trim(*token);
    if (options.token.empty()) {
      return invalid_argument("opu-serve: token file '" + token_file + "' is empty");
    }
  }
  options.max_message_bytes = static_cast<std::int64_t>(max_message_mb * 1024.0 * 1024.0);
  options.max_inflight = max_inflight;
  options.serve_linear = serve_linear;
  return options;
}

}  // namespace opu::offload
