// Configuration of opu-serve: one set of names for flags, JSON config files and sim:// URIs.
//
// Server settings have their own names (listen, tls_cert, ...); every other name is a simulator
// parameter and goes to SimConfig::from_params(), which owns those names. Flags use the same
// names with dashes (--n-in = n_in); JSON config files are one flat object of the same names
// (underscores or dashes), with string, number or boolean values. Precedence: defaults < --config
// file < flags.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "offload/server.h"
#include "opu_sim/status.h"

namespace opu::offload {

struct ServeConfig {
  std::string listen = "127.0.0.1:0";
  std::string tls_cert_file;  // PEM certificate chain; needs tls_key_file
  std::string tls_key_file;
  std::string token_file;  // bearer token (content trimmed); empty = no authentication
  double max_message_mb = 64.0;
  int max_inflight = 64;
  bool serve_linear = true;
  std::string log_level = "info";
  double summary_interval_s = 10.0;  // info-level summary period; 0 = only at exit
  double shutdown_grace_s = 30.0;    // time in-flight calls get on SIGINT/SIGTERM
  /// Calibration file (opu-calibrate --out FILE) applied to the simulator before serving: its
  /// exposure and masked pixels (offload/serve_calibration.h). Empty = none.
  std::string calibration_file;
  /// Everything else: simulator parameters for SimConfig::from_params().
  std::map<std::string, std::string> sim_params;

  /// The ServerOptions these settings give (reads the TLS and token files).
  Result<ServerOptions> server_options() const;
};

/// "n-in" -> "n_in": flags and JSON may use dashes.
std::string normalize_param_name(std::string_view name);

/// The server's own settings with a description each, for --help.
std::vector<std::pair<std::string, std::string>> describe_serve_params();

/// Applies name -> value pairs: server names set the server fields, other names are stored as
/// simulator parameters (checked later by SimConfig::from_params). INVALID_ARGUMENT naming the
/// parameter for a malformed value.
Status apply_serve_params(const std::map<std::string, std::string>& params, ServeConfig& config);

/// Reads a JSON config file (one flat object) into name -> value strings.
Result<std::map<std::string, std::string>> read_json_params(const std::string& path);
/// The same for a config file's content; `path` names it in errors.
Result<std::map<std::string, std::string>> parse_json_params(std::string_view text,
                                                             const std::string& path);

/// Whole file as text; NOT_FOUND / INVALID_ARGUMENT naming `what` and the path.
Result<std::string> read_text_file(const std::string& path, std::string_view what);

}  // namespace opu::offload
