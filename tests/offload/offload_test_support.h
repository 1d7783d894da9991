// Helpers shared by the offload tests: small simulated devices, deterministic inputs, a
// self-signed certificate, and a child process (opu-serve) with its stdout on a pipe.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "opu_sim/packing.h"
#include "opu_sim/sim_device.h"
#include "test_support.h"

extern char** environ;  // NOLINT: POSIX

namespace opu::test {

/// The device most offload tests use: small, one compute thread, ideal camera and no drift unless
/// asked (then replicas and repeated requests answer identically).
inline std::map<std::string, std::string> small_params(const std::string& camera = "ideal") {
  return {{"seed", "7"}, {"n_in", "256"}, {"n_out", "64"}, {"camera", camera}, {"threads", "1"}};
}

inline std::unique_ptr<sim::SimDevice> make_sim(
    const std::map<std::string, std::string>& params = small_params()) {
  auto config = sim::SimConfig::from_params(params);
  auto device = sim::SimDevice::create(config.value());
  return std::move(device).value();
}

/// splitmix64: a tiny counter-based generator, so inputs do not depend on the standard library.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// `batch` packed frames of n_in bits, about half on; unused high bits of each frame are zero.
inline std::vector<std::uint8_t> random_frames(std::int64_t n_in, std::int64_t batch,
                                               std::uint64_t seed) {
  const std::int64_t bytes = sim::packed_bytes(n_in);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(bytes * batch));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(mix(seed + i));
  if (n_in % 8 != 0) {
    const auto mask = static_cast<std::uint8_t>((1U << (n_in % 8)) - 1U);
    for (std::int64_t s = 0; s < batch; ++s)
      out[static_cast<std::size_t>((s + 1) * bytes - 1)] &= mask;
  }
  return out;
}

/// batch x n floats in [-1, 1), sample after sample.
inline std::vector<float> random_values(std::int64_t n, std::int64_t batch, std::uint64_t seed) {
  std::vector<float> out(static_cast<std::size_t>(n * batch));
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<float>(static_cast<double>(mix(seed + i) >> 11) * 0x1.0p-52 - 1.0);
  }
  return out;
}

inline sim::TransformRequest transform_request(const std::vector<std::uint8_t>& inputs,
                                               std::int64_t n_in, std::int64_t n_out,
                                               std::int64_t batch) {
  sim::TransformRequest request;
  request.n_in = n_in;
  request.n_out = n_out;
  request.batch = batch;
  request.inputs = inputs;
  return request;
}

inline sim::LinearRequest linear_request(const std::vector<float>& values, std::int64_t n_in,
                                         std::int64_t n_out, std::int64_t batch,
                                         sim::Encoding encoding = sim::Encoding::kTernary) {
  sim::LinearRequest request;
  request.n_in = n_in;
  request.n_out = n_out;
  request.batch = batch;
  request.values = values;
  request.options.encoding = encoding;
  return request;
}

/// A fresh directory under the system's temp dir, removed with its content.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "opu-offload-XXXXXX").string();
    path_ = mkdtemp(pattern.data()) != nullptr ? pattern : std::string();
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

#ifdef OPU_SERVE_PATH
/// The opu-serve command line for small_params()' device on `listen`, quiet and single-threaded.
inline std::vector<std::string> opu_serve_args(const std::string& listen) {
  return {OPU_SERVE_PATH, "--listen", listen, "--seed", "7", "--n-in", "256", "--n-out", "64",
          "--camera", "ideal", "--threads", "1", "--log-level", "warn", "--summary-interval-s",
          "0"};
}
#endif

inline bool write_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok;
}

/// A self-signed certificate for localhost and 127.0.0.1, made by the openssl CLI.
inline bool make_self_signed_cert(const std::string& cert, const std::string& key) {
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout '" +
      key + "' -out '" + cert + "' 2>&1";
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return false;
  char buffer[256];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
  }
  return pclose(pipe) == 0;
}

/// A child process whose stdout is a pipe we read lines from; stderr is inherited.
class Subprocess {
 public:
  explicit Subprocess(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_ = fdopen(fds[0], "r");
  }
  ~Subprocess() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) std::fclose(out_);
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  bool started() const { return pid_ > 0 && out_ != nullptr; }
  /// The next line of the child's stdout without its newline; empty at end of file.
  std::string read_line() {
    std::string line;
    for (int c = std::fgetc(out_); c != EOF && c != '\n'; c = std::fgetc(out_)) {
      line.push_back(static_cast<char>(c));
    }
    return line;
  }
  void signal(int sig) const { kill(pid_, sig); }
  /// Waits for the child; its exit code, or 128 + signal when a signal ended it.
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }

 private:
  pid_t pid_ = -1;
  std::FILE* out_ = nullptr;
  bool reaped_ = false;
};

}  // namespace opu::test
