// opu-soak: a soak of opu-serve. Minutes of concurrent, hostile traffic against one server
// process, with checks that can fail:
//
//   - the server never dies (alive at the end of the run) and exits 0 on SIGTERM;
//   - every malformed request gets the status code docs/offload.md promises (INVALID_ARGUMENT,
//     OUT_OF_RANGE, RESOURCE_EXHAUSTED, UNIMPLEMENTED), and every valid request succeeds;
//   - every valid answer is well formed (request_id, shape, byte count, FrameInfo consistent with
//     the batch and the frame time, counts within full scale, a client's device times increasing),
//     and a sample of Transform answers is *reproduced bit for bit* by an in-process SimDevice of
//     the same parameters: camera noise is a pure function of (noise seed, frame index, pixel) and
//     the frame index is device_time_start_ns / frame time as long as every frame costs the same
//     time (every exposure this soak sends is at most the readout time), so a checker device skips
//     to the answer's frame index and computes the same frames. LinearTransform answers (whose
//     frames are reserved in several runs) are compared with SimDevice::exact_linear() of the code
//     their encoding makes: their correlation must stay above a bound a wrong answer cannot reach
//     (layouts with two or more mirrors per feature; one-mirror layouts are reported);
//   - the server's resident memory (VmRSS, sampled every second) must not grow by more than a
//     stated factor after a warm-up;
//   - two outcomes are documented deviations, counted and printed but not failures
//     (docs/offload.md, "Soak"): a stream message that is not a protobuf ends the stream OK, one
//     answer short, and a linear call whose reference reads no light above dark (a handful of
//     pixels, or one mirror per feature) is FAILED_PRECONDITION.
//
// Traffic (seeded): valid GetInfo, Transform, TransformStream and LinearTransform calls of varied
// shapes; malformed requests of every kind (sizes, enums, options, NaN, oversized messages,
// garbage bytes through a generic stub, an unknown method, a bad message inside a stream); streams
// cancelled mid-way (ClientContext::TryCancel); calls whose deadline expires; connections that
// drop abruptly (raw TCP: an HTTP/2 request and then a reset, half a message, non-HTTP/2 bytes),
// and clients that throw their channel away every few hundred calls.
//
// The run starts and ends with a quiet phase (one client, valid calls only): throughput under
// soak and after it are given as ratios to that single quiet client's, measured in the same run.
// Progress every 10 s; at the end a table and one JSON object (the last line of stdout). The exit
// code is 1 when any check failed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "opu/v1/opu.grpc.pb.h"
#include "opu/v1/opu.pb.h"
#include "opu_sim/holography.h"
#include "opu_sim/packing.h"
#include "opu_sim/sim_device.h"

extern char** environ;  // NOLINT: POSIX

namespace {

namespace pb = ::opu::v1;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

#ifndef OPU_SERVE_PATH
#define OPU_SERVE_PATH "opu-serve"
#endif

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ------------------------------------------------------------------------------------------------
// Options

struct Options {
  std::string serve = OPU_SERVE_PATH;
  std::string target;  // HOST:PORT of a running server; empty = start opu-serve
  int server_pid = 0;  // with --target: the process whose RSS to sample (0 = none)
  std::string serve_log;
  int clients = 8;
  double duration_s = 180.0;
  double quiet_s = 10.0;
  double warmup_s = 30.0;
  double progress_s = 10.0;
  double rss_growth_max = 1.5;
  double min_quiet_ratio = 0.25;
  double check_fraction = 0.2;
  double linear_min_corr = 0.3;
  double call_deadline_s = 60.0;
  double shutdown_timeout_s = 60.0;
  std::uint64_t seed = 1;
  // The device (the server's flags, and the checker's in-process SimDevice).
  std::uint64_t device_seed = 7;
  std::int64_t n_in = 1024;
  std::int64_t n_out = 256;
  std::string camera = "realistic";
  int server_threads = 1;
  std::int64_t max_batch = 4096;
  int max_message_mb = 4;
  int max_inflight = 64;
  std::vector<std::string> params;  // extra NAME=VALUE simulator parameters, both sides
};

// ------------------------------------------------------------------------------------------------
// Small helpers

// splitmix64: seeded, identical on every platform (the standard distributions are not).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t x = (state_ += 0x9E3779B97F4A7C15ULL);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  }
  std::int64_t below(std::int64_t n) {
    return n <= 1 ? 0 : static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n));
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return uniform() < p; }
  template <typename T>
  T pick(std::initializer_list<T> values) {
    return *(values.begin() + below(static_cast<std::int64_t>(values.size())));
  }

 private:
  std::uint64_t state_;
};

std::string code_name(int code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "CODE_" + std::to_string(code);
}

std::string describe(const grpc::Status& status) {
  return code_name(status.error_code()) +
         (status.error_message().empty() ? "" : " '" + status.error_message() + "'");
}

std::vector<std::uint8_t> random_frames(Rng& rng, std::int64_t n_in, std::int64_t batch) {
  const std::int64_t bytes = opu::sim::packed_bytes(n_in);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(bytes * batch));
  for (auto& byte : out) byte = static_cast<std::uint8_t>(rng.next());
  if (n_in % 8 != 0) {  // unused high bits are zero (opu.proto)
    const auto mask = static_cast<std::uint8_t>((1U << (n_in % 8)) - 1U);
    for (std::int64_t s = 0; s < batch; ++s)
      out[static_cast<std::size_t>((s + 1) * bytes - 1)] &= mask;
  }
  return out;
}

std::string as_bytes(const void* data, std::size_t size) {
  return std::string(static_cast<const char*>(data), size);
}

grpc::ByteBuffer byte_buffer(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

std::chrono::system_clock::time_point deadline_in(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<std::int64_t>(seconds * 1e6));
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("model name")) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

// VmRSS (KiB) and thread count of a process from /proc/<pid>/status; rss -1 when it cannot be
// read (the process is gone).
struct ProcStatus {
  std::int64_t rss_kib = -1;
  int threads = 0;
};
ProcStatus proc_status(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  ProcStatus out;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) out.rss_kib = std::stoll(line.substr(6));
    if (line.starts_with("Threads:")) out.threads = std::stoi(line.substr(8));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// opu-serve as a child: stdout on a pipe (the bound address is its first line), stderr to a file.

class ServeProcess {
 public:
  ServeProcess() = default;
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;
  ~ServeProcess() {
    if (pid_ > 0 && !exited()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) close(out_fd_);
  }

  bool start(const std::vector<std::string>& args, const std::string& log_path,
             std::string* error) {
    int fds[2];
    if (pipe(fds) != 0) {
      *error = std::string("pipe: ") + std::strerror(errno);
      return false;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_fd_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      *error = "cannot start '" + args[0] + "': " + std::strerror(rc);
      return false;
    }
    return true;
  }

  // The first line of the child's stdout (without the newline); empty on EOF or timeout.
  std::string read_line(double timeout_s) {
    std::string line;
    const auto start = Clock::now();
    while (seconds_since(start) < timeout_s) {
      pollfd p{out_fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char c = 0;
      const ssize_t n = read(out_fd_, &c, 1);
      if (n <= 0) return {};
      if (c == '\n') return line;
      line.push_back(c);
    }
    return {};
  }

  int pid() const { return pid_; }

  // Whether the child has exited (reaps it once; thread-safe).
  bool exited() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (pid_ <= 0) return true;
    if (reaped_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status)
                                     : (WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1);
    }
    return reaped_;
  }
  int exit_code() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return exit_code_;
  }

  // SIGTERM, then waits up to `timeout_s`; the exit code, or -1 after a timeout (then SIGKILL).
  int terminate(double timeout_s) {
    if (exited()) return exit_code();
    kill(pid_, SIGTERM);
    const auto start = Clock::now();
    while (seconds_since(start) < timeout_s) {
      if (exited()) return exit_code();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    while (!exited()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::mutex mutex_;
  bool reaped_ = false;
  int exit_code_ = -1;
};

// ------------------------------------------------------------------------------------------------
// Statistics

enum Kind : int {
  kGetInfo,
  kTransform,
  kStream,
  kLinear,
  kMalformed,
  kCancelled,
  kDeadline,
  kDisconnect,
  kKinds
};
const char* const kKindNames[kKinds] = {"GetInfo",         "Transform",        "TransformStream",
                                        "LinearTransform", "malformed",        "cancelled_stream",
                                        "short_deadline",  "abrupt_disconnect"};

struct KindStats {
  std::vector<float> latency_ms;
  std::map<int, std::int64_t> codes;
};

struct Stats {
  std::array<KindStats, kKinds> kinds;
  std::map<std::string, std::int64_t> malformed_cases;   // case name -> calls
  std::map<std::string, std::int64_t> known_deviations;  // documented, not failures
  std::int64_t valid_calls = 0;
  std::int64_t transform_frames = 0;  // frames of valid Transform and TransformStream answers
  std::int64_t linear_checked = 0;
  double linear_min_corr = 1.0;
  std::map<std::int64_t, std::vector<float>> linear_corr_by_n_in;
  std::int64_t get_info_checked = 0;

  void merge(const Stats& other) {
    for (int k = 0; k < kKinds; ++k) {
      auto& mine = kinds[static_cast<std::size_t>(k)];
      const auto& theirs = other.kinds[static_cast<std::size_t>(k)];
      mine.latency_ms.insert(mine.latency_ms.end(), theirs.latency_ms.begin(),
                             theirs.latency_ms.end());
      for (const auto& [code, n] : theirs.codes) mine.codes[code] += n;
    }
    for (const auto& [name, n] : other.malformed_cases) malformed_cases[name] += n;
    for (const auto& [name, n] : other.known_deviations) known_deviations[name] += n;
    valid_calls += other.valid_calls;
    transform_frames += other.transform_frames;
    linear_checked += other.linear_checked;
    linear_min_corr = std::min(linear_min_corr, other.linear_min_corr);
    for (const auto& [n_in, corr] : other.linear_corr_by_n_in) {
      auto& mine = linear_corr_by_n_in[n_in];
      mine.insert(mine.end(), corr.begin(), corr.end());
    }
    get_info_checked += other.get_info_checked;
  }
};

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
  std::size_t n = 0;
};

Percentiles percentiles(std::vector<float> values) {
  Percentiles p;
  p.n = values.size();
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  const auto at = [&](double q) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
    return static_cast<double>(values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)]);
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = static_cast<double>(values.back());
  return p;
}

// ------------------------------------------------------------------------------------------------
// The exact checker: a SimDevice of the server's parameters reproduces sampled Transform answers
// bit for bit. Its frame counter only moves forward, so answers are checked in frame order: jobs
// wait in a heap for a moment (answers of concurrent clients arrive slightly out of order), and a
// job whose frames the checker has already passed is counted as late, not checked.

struct CheckJob {
  std::int64_t first_frame = 0;
  std::int64_t n_in = 0, n_out = 0, batch = 0;
  double exposure_us = 0.0;
  std::vector<std::uint8_t> inputs;
  std::string frames;
  pb::FrameInfo info;
  std::string where;
  Clock::time_point queued;
  bool operator>(const CheckJob& other) const { return first_frame > other.first_frame; }
};

class Failures;

class Checker {
 public:
  Checker(std::unique_ptr<opu::sim::SimDevice> device, Failures& failures)
      : device_(std::move(device)), failures_(failures) {}
  ~Checker() { finish(); }
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  void submit(CheckJob job) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (jobs_.size() >= kMaxQueued) {
      ++dropped_;
      return;
    }
    job.queued = Clock::now();
    jobs_.push(std::move(job));
    wake_.notify_one();
  }
  // Checks what is queued and stops.
  void finish() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      wake_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

  std::int64_t checked() const { return checked_.load(); }
  std::int64_t mismatched() const { return mismatched_.load(); }
  std::int64_t late() const { return late_.load(); }
  std::int64_t dropped() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
  }
  std::int64_t skipped_frames() const { return skipped_frames_.load(); }

 private:
  static constexpr std::size_t kMaxQueued = 512;
  static constexpr double kHoldSeconds = 2.0;

  void loop();
  void check(const CheckJob& job);
  void skip_to(std::int64_t frame);

  std::unique_ptr<opu::sim::SimDevice> device_;
  Failures& failures_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::priority_queue<CheckJob, std::vector<CheckJob>, std::greater<>> jobs_;
  bool stopping_ = false;
  std::int64_t dropped_ = 0;
  std::atomic<std::int64_t> checked_{0}, mismatched_{0}, late_{0}, skipped_frames_{0};
  std::thread thread_;
};

// Failed checks: counted, the first ones kept and logged.
class Failures {
 public:
  void add(const std::string& message) {
    const std::int64_t n = count_.fetch_add(1) + 1;
    if (n <= kKept) {
      spdlog::error("check failed: {}", message);
      const std::lock_guard<std::mutex> lock(mutex_);
      kept_.push_back(message);
    } else if (n == kKept + 1) {
      spdlog::error("more failed checks: only counted from now on");
    }
  }
  std::int64_t count() const { return count_.load(); }
  std::vector<std::string> kept() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return kept_;
  }

 private:
  static constexpr std::int64_t kKept = 40;
  std::atomic<std::int64_t> count_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> kept_;
};

void Checker::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (jobs_.empty()) {
      if (stopping_) return;
      wake_.wait_for(lock, std::chrono::milliseconds(500));
      continue;
    }
    const bool ripe = seconds_since(jobs_.top().queued) >= kHoldSeconds;
    if (!ripe && !stopping_ && jobs_.size() < kMaxQueued / 2) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      continue;
    }
    CheckJob job = jobs_.top();
    jobs_.pop();
    lock.unlock();
    check(job);
    lock.lock();
  }
}

void Checker::skip_to(std::int64_t frame) {
  // One-mirror, one-pixel frames: they move the checker's frame counter (and device clock) as the
  // server's other calls moved the server's, at almost no cost.
  const std::int64_t max_batch = device_->info().max_batch;
  std::vector<std::uint8_t> zeros(static_cast<std::size_t>(max_batch), 0);
  while (device_->frames_taken() < frame) {
    const std::int64_t k = std::min(max_batch, frame - device_->frames_taken());
    opu::sim::TransformRequest skip;
    skip.n_in = 1;
    skip.n_out = 1;
    skip.batch = k;
    skip.inputs = std::span<const std::uint8_t>(zeros.data(), static_cast<std::size_t>(k));
    auto done = device_->transform(skip);
    if (!done.ok()) {
      failures_.add("checker: cannot skip frames: " + done.status().to_string());
      return;
    }
    skipped_frames_.fetch_add(k);
  }
}

void Checker::check(const CheckJob& job) {
  if (job.first_frame < device_->frames_taken()) {
    late_.fetch_add(1);
    return;
  }
  skip_to(job.first_frame);
  opu::sim::TransformRequest request;
  request.n_in = job.n_in;
  request.n_out = job.n_out;
  request.batch = job.batch;
  request.inputs = job.inputs;
  request.exposure_us = job.exposure_us;
  auto local = device_->transform(request);
  checked_.fetch_add(1);
  if (!local.ok()) {
    mismatched_.fetch_add(1);
    failures_.add(job.where +
                  ": the checker device refused the request: " + local.status().to_string());
    return;
  }
  std::string problem;
  if (local->data.size() != job.frames.size()) {
    problem = "frames have " + std::to_string(job.frames.size()) + " bytes, the checker's " +
              std::to_string(local->data.size());
  } else if (std::memcmp(local->data.data(), job.frames.data(), job.frames.size()) != 0) {
    std::size_t differ = 0, first = job.frames.size();
    for (std::size_t i = 0; i < job.frames.size(); ++i) {
      if (static_cast<std::uint8_t>(job.frames[i]) != local->data[i]) {
        ++differ;
        first = std::min(first, i);
      }
    }
    problem = std::to_string(differ) + " of " + std::to_string(job.frames.size()) +
              " frame bytes differ from the checker's, the first at byte " + std::to_string(first);
  } else if (local->info.device_time_start_ns != job.info.device_time_start_ns() ||
             local->info.device_time_end_ns != job.info.device_time_end_ns() ||
             local->info.saturated_pixels != job.info.saturated_pixels()) {
    problem = "FrameInfo differs: server start/end/saturated " +
              std::to_string(job.info.device_time_start_ns()) + "/" +
              std::to_string(job.info.device_time_end_ns()) + "/" +
              std::to_string(job.info.saturated_pixels()) + ", checker " +
              std::to_string(local->info.device_time_start_ns) + "/" +
              std::to_string(local->info.device_time_end_ns) + "/" +
              std::to_string(local->info.saturated_pixels);
  }
  if (!problem.empty()) {
    mismatched_.fetch_add(1);
    failures_.add(job.where + " (frame " + std::to_string(job.first_frame) + ", batch " +
                  std::to_string(job.batch) + ", n_in " + std::to_string(job.n_in) + ", n_out " +
                  std::to_string(job.n_out) + "): " + problem);
  }
}

// ------------------------------------------------------------------------------------------------
// Raw TCP: HTTP/2 by hand, to drop a connection the way a crashed client or a pulled cable does
// (a gRPC channel keeps its connection until its calls end, whatever the application drops).

std::string h2_frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream,
                     const std::string& payload) {
  std::string frame;
  const auto length = static_cast<std::uint32_t>(payload.size());
  frame.push_back(static_cast<char>((length >> 16) & 0xFF));
  frame.push_back(static_cast<char>((length >> 8) & 0xFF));
  frame.push_back(static_cast<char>(length & 0xFF));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  frame.push_back(static_cast<char>((stream >> 24) & 0x7F));  // the top bit is reserved
  for (int shift = 16; shift >= 0; shift -= 8)
    frame.push_back(static_cast<char>((stream >> shift) & 0xFF));
  return frame + payload;
}

// HPACK "literal header field without indexing, new name", no Huffman (lengths below 127).
std::string hpack_literal(const std::string& name, const std::string& value) {
  std::string out(1, '\0');
  out.push_back(static_cast<char>(name.size()));
  out += name;
  out.push_back(static_cast<char>(value.size()));
  out += value;
  return out;
}

// The bytes of a connection that sends one gRPC call: preface, SETTINGS, HEADERS and the
// message in DATA frames of at most 16 KiB (the default frame size before the server's SETTINGS
// arrive). Returns {everything up to the DATA, the DATA frames}.
std::pair<std::string, std::string> h2_call(const std::string& authority, const std::string& path,
                                            const std::string& message) {
  std::string head = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  head += h2_frame(0x4, 0, 0, "");  // SETTINGS, empty
  std::string headers = hpack_literal(":method", "POST") + hpack_literal(":scheme", "http") +
                        hpack_literal(":path", path) + hpack_literal(":authority", authority) +
                        hpack_literal("content-type", "application/grpc") +
                        hpack_literal("te", "trailers");
  head += h2_frame(0x1, 0x4, 1, headers);  // HEADERS, END_HEADERS, stream 1
  std::string body(1, '\0');               // not compressed
  const auto length = static_cast<std::uint32_t>(message.size());
  for (int shift = 24; shift >= 0; shift -= 8)
    body.push_back(static_cast<char>((length >> shift) & 0xFF));
  body += message;
  std::string data;
  for (std::size_t at = 0; at < body.size(); at += 16384) {
    const std::size_t n = std::min<std::size_t>(16384, body.size() - at);
    const bool last = at + n == body.size();
    data += h2_frame(0x0, last ? 0x1 : 0x0, 1, body.substr(at, n));  // DATA, END_STREAM on the last
  }
  return {head, data};
}

int connect_tcp(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) return -1;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    timeval timeout{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  std::size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n <= 0) return false;
    at += static_cast<std::size_t>(n);
  }
  return true;
}

// close() with SO_LINGER 0: the peer gets a TCP reset, not an orderly FIN.
void reset_connection(int fd) {
  linger hard{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  close(fd);
}

// ------------------------------------------------------------------------------------------------
// What every client shares.

struct Shared {
  Options options;
  std::string address;  // HOST:PORT
  std::string host, port;
  opu::sim::DeviceInfo info;  // what the server should report (from an identical SimDevice)
  std::int64_t frametime_ns = 0;
  double max_exposure_sent = 0.0;  // every exposure sent is <= this: all frames cost frametime_ns
  int reference_blocks = 8;
  std::shared_ptr<opu::sim::SimDevice> control;  // exact_linear() for the linear checks
  Checker* checker = nullptr;
  Failures failures;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> calls{0};
};

// grpc::ClientBidiReactor over raw bytes: sends `messages` on a TransformStream (through the
// generic stub, so that any bytes can be sent), counts the answers and keeps the final status.
class RawStream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RawStream(grpc::GenericStub& stub, grpc::ClientContext* context,
            std::vector<grpc::ByteBuffer> messages)
      : messages_(std::move(messages)) {
    stub.PrepareBidiStreamingCall(context, "/opu.v1.OpuDevice/TransformStream", grpc::StubOptions(),
                                  this);
    StartRead(&in_);
    if (messages_.empty()) {
      StartWritesDone();
    } else {
      StartWrite(&messages_[0]);
    }
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the stream ended
    if (++next_ < messages_.size()) {
      StartWrite(&messages_[next_]);
    } else {
      StartWritesDone();
    }
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    ++answers_;
    StartRead(&in_);
  }
  void OnDone(const grpc::Status& status) override {
    const std::lock_guard<std::mutex> lock(mutex_);
    status_ = status;
    done_ = true;
    finished_.notify_all();
  }
  grpc::Status wait(int* answers) {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [&] { return done_; });
    *answers = answers_;
    return status_;
  }

 private:
  std::vector<grpc::ByteBuffer> messages_;
  std::size_t next_ = 0;
  grpc::ByteBuffer in_;
  int answers_ = 0;  // touched by the reactor's callbacks only until OnDone
  std::mutex mutex_;
  std::condition_variable finished_;
  bool done_ = false;
  grpc::Status status_;
};

// ------------------------------------------------------------------------------------------------
// One client: its own channel (its own TCP connection), its own seeded mix.

class Client {
 public:
  Client(Shared& shared, int index, std::uint64_t seed)
      : s_(shared), index_(index), rng_(seed * 1000003ULL + static_cast<std::uint64_t>(index)) {}

  // Runs calls until `until` (or a stop): valid calls only when `hostile` is false.
  void run(Clock::time_point until, bool hostile) {
    while (Clock::now() < until && !s_.stop.load()) {
      if (!channel_ || --calls_left_on_channel_ <= 0) connect();
      const double r = rng_.uniform();
      if (!hostile || r < 0.62) {
        valid_call();
      } else if (r < 0.80) {
        malformed_call();
      } else if (r < 0.87) {
        cancelled_stream();
      } else if (r < 0.94) {
        short_deadline();
      } else {
        abrupt_disconnect();
      }
      s_.calls.fetch_add(1, std::memory_order_relaxed);
    }
  }

  const Stats& stats() const { return stats_; }

 private:
  // --- plumbing ---------------------------------------------------------------------------------

  void connect() {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel(s_.address, grpc::InsecureChannelCredentials(), args);
    stub_ = pb::OpuDevice::NewStub(channel_);
    generic_ = std::make_unique<grpc::GenericStub>(channel_);
    calls_left_on_channel_ = 50 + static_cast<int>(rng_.below(250));  // then a new connection
    last_end_ns_ = -1;  // device times are compared within one connection's sequence of calls
  }

  void prepare(grpc::ClientContext& context, double deadline_s = -1.0) const {
    context.set_deadline(deadline_in(deadline_s > 0 ? deadline_s : s_.options.call_deadline_s));
  }

  void record(Kind kind, Clock::time_point start, const grpc::Status& status) {
    auto& k = stats_.kinds[static_cast<std::size_t>(kind)];
    k.latency_ms.push_back(static_cast<float>(seconds_since(start) * 1e3));
    ++k.codes[status.error_code()];
  }

  void fail(const std::string& what) {
    s_.failures.add("client " + std::to_string(index_) + ": " + what);
  }

  std::uint64_t next_id() { return (static_cast<std::uint64_t>(index_) << 40) | ++request_count_; }

  // --- valid calls ------------------------------------------------------------------------------

  void valid_call() {
    const double r = rng_.uniform();
    if (r < 0.08) {
      get_info();
    } else if (r < 0.55) {
      transform();
    } else if (r < 0.75) {
      transform_stream();
    } else {
      linear_transform();
    }
    ++stats_.valid_calls;
  }

  void get_info() {
    grpc::ClientContext context;
    prepare(context);
    pb::DeviceInfo info;
    const auto start = Clock::now();
    const grpc::Status status = stub_->GetInfo(&context, pb::GetInfoRequest(), &info);
    record(kGetInfo, start, status);
    if (!status.ok()) return fail("GetInfo: " + describe(status));
    const opu::sim::DeviceInfo& want = s_.info;
    const bool same = info.max_n_in() == want.max_n_in && info.max_n_out() == want.max_n_out &&
                      info.adc_bits() == want.adc_bits && info.max_batch() == want.max_batch &&
                      info.frametime_us() == want.frametime_us &&
                      info.exposure_us() == want.exposure_us &&
                      info.max_exposure_us() == want.max_exposure_us && info.simulated() &&
                      info.supports_linear() && info.api_version() == "opu.v1" &&
                      info.max_message_bytes() == std::int64_t{s_.options.max_message_mb} << 20;
    ++stats_.get_info_checked;
    if (!same) fail("GetInfo answered an unexpected DeviceInfo: " + info.ShortDebugString());
  }

  pb::TransformRequest valid_transform_request(std::int64_t max_batch) {
    pb::TransformRequest request;
    const std::int64_t n_in =
        rng_.chance(0.7) ? s_.info.max_n_in : 1 + rng_.below(s_.info.max_n_in);
    const std::int64_t n_out =
        rng_.chance(0.6) ? s_.info.max_n_out : 1 + rng_.below(s_.info.max_n_out);
    std::int64_t batch =
        rng_.pick<std::int64_t>({1, 2, 3, 8, 15, 16, 17, 32, 63, 64, 65, 100, 256});
    batch = std::min(batch, max_batch);
    request.set_n_in(n_in);
    request.set_n_out(n_out);
    request.set_batch(batch);
    const auto inputs = random_frames(rng_, n_in, batch);
    request.set_inputs(as_bytes(inputs.data(), inputs.size()));
    // 0 (the default) or an explicit exposure no longer than the readout: every frame then costs
    // the same device time, which is what maps device times to frame indices for the checker.
    if (rng_.chance(0.5))
      request.set_exposure_us(1.0 + std::floor(rng_.uniform() * s_.max_exposure_sent));
    request.set_request_id(next_id());
    return request;
  }

  // Everything an answer must satisfy on its own; `check` also queues it for the exact checker.
  void check_frames(const pb::TransformRequest& request, const pb::TransformResponse& response,
                    const std::string& where) {
    const std::int64_t batch = request.batch();
    const std::int64_t n_out = request.n_out();
    const int bytes_per_pixel = s_.info.adc_bits <= 8 ? 1 : 2;
    const double exposure = request.exposure_us() > 0 ? request.exposure_us() : s_.info.exposure_us;
    const pb::FrameInfo& info = response.info();
    std::string problem;
    if (response.request_id() != request.request_id()) {
      problem = "request_id " + std::to_string(response.request_id()) + ", want " +
                std::to_string(request.request_id());
    } else if (response.batch() != batch || response.n_out() != n_out ||
               response.adc_bits() != s_.info.adc_bits) {
      problem = "shape batch " + std::to_string(response.batch()) + " n_out " +
                std::to_string(response.n_out()) + " adc_bits " +
                std::to_string(response.adc_bits());
    } else if (static_cast<std::int64_t>(response.frames().size()) !=
               batch * n_out * bytes_per_pixel) {
      problem = "frames has " + std::to_string(response.frames().size()) + " bytes";
    } else if (info.frames() != batch || info.exposure_us() != exposure ||
               info.device_time_end_ns() - info.device_time_start_ns() != batch * s_.frametime_ns ||
               info.device_time_start_ns() % s_.frametime_ns != 0 || info.saturated_pixels() < 0 ||
               info.saturated_pixels() > batch * n_out) {
      problem = "FrameInfo " + info.ShortDebugString();
    } else if (info.device_time_start_ns() < last_end_ns_) {
      problem = "device time went back: start " + std::to_string(info.device_time_start_ns()) +
                " ns before this connection's previous end " + std::to_string(last_end_ns_);
    } else if (s_.info.adc_bits < 8) {
      const auto full = static_cast<std::uint8_t>((1U << s_.info.adc_bits) - 1U);
      for (const char c : response.frames()) {
        if (static_cast<std::uint8_t>(c) > full) {
          problem = "a count above full scale";
          break;
        }
      }
    }
    if (!problem.empty()) return fail(where + ": " + problem);
    last_end_ns_ = info.device_time_end_ns();
    stats_.transform_frames += batch;
    if (s_.checker != nullptr && rng_.chance(s_.options.check_fraction)) {
      CheckJob job;
      job.first_frame = info.device_time_start_ns() / s_.frametime_ns;
      job.n_in = request.n_in();
      job.n_out = n_out;
      job.batch = batch;
      job.exposure_us = request.exposure_us();
      job.inputs.assign(request.inputs().begin(), request.inputs().end());
      job.frames = response.frames();
      job.info = info;
      job.where = where + " id " + std::to_string(request.request_id());
      s_.checker->submit(std::move(job));
    }
  }

  void transform() {
    const pb::TransformRequest request = valid_transform_request(s_.info.max_batch);
    grpc::ClientContext context;
    prepare(context);
    pb::TransformResponse response;
    const auto start = Clock::now();
    const grpc::Status status = stub_->Transform(&context, request, &response);
    record(kTransform, start, status);
    if (!status.ok()) return fail("Transform: " + describe(status));
    check_frames(request, response, "Transform");
  }

  void transform_stream() {
    const int messages = 1 + static_cast<int>(rng_.below(6));
    std::vector<pb::TransformRequest> requests;
    for (int i = 0; i < messages; ++i) requests.push_back(valid_transform_request(64));
    grpc::ClientContext context;
    prepare(context);
    const auto start = Clock::now();
    auto stream = stub_->TransformStream(&context);
    for (const auto& request : requests) {
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
    std::vector<pb::TransformResponse> responses;
    pb::TransformResponse response;
    while (stream->Read(&response)) responses.push_back(response);
    const grpc::Status status = stream->Finish();
    record(kStream, start, status);
    if (!status.ok()) return fail("TransformStream: " + describe(status));
    if (responses.size() != requests.size()) {
      return fail("TransformStream: " + std::to_string(responses.size()) + " answers to " +
                  std::to_string(requests.size()) + " requests");
    }
    for (std::size_t i = 0; i < requests.size(); ++i) {
      check_frames(requests[i], responses[i], "TransformStream message " + std::to_string(i));
    }
  }

  pb::LinearTransformRequest valid_linear_request() {
    pb::LinearTransformRequest request;
    // Up to the widest layout: one mirror per feature (a dim reference of reference_blocks
    // mirrors), and two mirrors per feature.
    const std::int64_t widest = s_.info.max_n_in - s_.reference_blocks;
    const std::int64_t wide = s_.info.max_n_in / 2 - s_.reference_blocks;
    const std::int64_t n_in = std::clamp<std::int64_t>(
        rng_.pick<std::int64_t>({1, 10, 64, 200, wide, widest}), 1, widest);
    const std::int64_t n_out =
        rng_.chance(0.6) ? s_.info.max_n_out : 1 + rng_.below(s_.info.max_n_out);
    const std::int64_t batch = rng_.pick<std::int64_t>({1, 4, 16, 64, 128});
    request.set_n_in(n_in);
    request.set_n_out(n_out);
    request.set_batch(batch);
    std::vector<float> values(static_cast<std::size_t>(n_in * batch));
    for (auto& v : values) v = static_cast<float>(2.0 * rng_.uniform() - 1.0);
    request.set_values(as_bytes(values.data(), values.size() * sizeof(float)));
    const double e = rng_.uniform();
    if (e < 0.4) {
      request.set_encoding(pb::TERNARY);
      request.set_threshold(static_cast<float>(rng_.pick<double>({0.0, 0.05, 0.1, 0.3})));
    } else if (e < 0.7) {
      request.set_encoding(pb::BITPLANES);
      request.set_bitplanes(static_cast<std::int32_t>(1 + rng_.below(8)));
    } else {
      request.set_encoding(pb::STOCHASTIC);
      request.set_bitplanes(static_cast<std::int32_t>(1 + rng_.below(4)));
      request.set_dither_seed(rng_.next());
    }
    request.set_share_frames(rng_.chance(0.5));
    request.set_repeats(rng_.pick<std::int32_t>({0, 1, 2}));
    request.set_reference_repeats(rng_.pick<std::int32_t>({0, 1, 8, 64}));
    request.set_reference_max_age_s(rng_.pick<double>({0.0, 0.0, 0.0, 0.5}));
    // Explicit, and no longer than the readout: automatic exposure could lengthen the frame time
    // of these frames and break the frame-index arithmetic of the exact checks.
    // Wide layouts (few mirrors per feature, a dim reference) need the longest of them.
    const double fraction = n_in <= 64 ? rng_.pick<double>({0.5, 0.75, 1.0}) : 1.0;
    request.set_exposure_us(std::max(1.0, std::floor(s_.max_exposure_sent * fraction)));
    request.set_request_id(next_id());
    return request;
  }

  void linear_transform() {
    const pb::LinearTransformRequest request = valid_linear_request();
    grpc::ClientContext context;
    prepare(context);
    pb::LinearTransformResponse response;
    const auto start = Clock::now();
    const grpc::Status status = stub_->LinearTransform(&context, request, &response);
    record(kLinear, start, status);
    const bool one_mirror_per_feature =
        s_.info.max_n_in / (request.n_in() + s_.reference_blocks) < 2;
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
        (request.n_out() <= 16 || one_mirror_per_feature) &&
        status.error_message().find("the reference reads") != std::string::npos) {
      // Known and documented (docs/offload.md, "Soak"): averaged over a handful of pixels, or
      // made of one mirror per reference block (a third of a count at 400 us), the reference can
      // read no light above dark, and holography cannot scale its projection.
      const std::string what =
          "LinearTransform with n_out <= 16 or one mirror per feature: FAILED_PRECONDITION, no "
          "reference light above dark";
      ++stats_.known_deviations[what];
      return;
    }
    if (!status.ok()) {
      return fail("LinearTransform (n_in " + std::to_string(request.n_in()) + ", n_out " +
                  std::to_string(request.n_out()) + ", batch " + std::to_string(request.batch()) +
                  ", exposure " + std::to_string(request.exposure_us()) +
                  " us, reference_repeats " + std::to_string(request.reference_repeats()) +
                  "): " + describe(status));
    }
    const std::int64_t batch = request.batch();
    const std::int64_t n_out = request.n_out();
    const pb::FrameInfo& info = response.info();
    std::string problem;
    if (response.request_id() != request.request_id() || response.batch() != batch ||
        response.n_out() != n_out ||
        static_cast<std::int64_t>(response.projections().size()) != 4 * batch * n_out) {
      problem = "request_id/shape/bytes " + std::to_string(response.request_id()) + " " +
                std::to_string(response.batch()) + "x" + std::to_string(response.n_out()) + " " +
                std::to_string(response.projections().size());
    } else if (info.exposure_us() != request.exposure_us() || info.frames() < 0 ||
               info.device_time_end_ns() - info.device_time_start_ns() <
                   info.frames() * s_.frametime_ns ||
               info.device_time_start_ns() % s_.frametime_ns != 0) {
      problem = "FrameInfo " + info.ShortDebugString();
    } else if (info.device_time_start_ns() < last_end_ns_) {
      problem = "device time went back";
    }
    if (!problem.empty()) return fail("LinearTransform: " + problem);
    last_end_ns_ = info.device_time_end_ns();
    std::vector<float> got(static_cast<std::size_t>(batch * n_out));
    std::memcpy(got.data(), response.projections().data(), got.size() * sizeof(float));
    for (const float v : got) {
      if (!std::isfinite(v)) return fail("LinearTransform: a projection is not finite");
    }
    if (batch * n_out < 256) return;  // too few values for a correlation that means something
    // One mirror per feature: the reference is so dim that camera noise alone takes the
    // correlation down to about 0.3 at times (docs/offload.md, "Soak"): reported, not checked.
    const bool checked = s_.info.max_n_in / (request.n_in() + s_.reference_blocks) >= 2;
    // The control: the exact projection (no optics) of the code the request's encoding makes of
    // its values, so that only the camera's noise separates it from the answer.
    const std::int64_t n_in = request.n_in();
    Eigen::MatrixXf values(n_in, batch);
    std::memcpy(values.data(), request.values().data(),
                static_cast<std::size_t>(n_in * batch) * sizeof(float));
    opu::sim::LinearOptions options;
    options.encoding = static_cast<opu::sim::Encoding>(request.encoding());
    options.threshold = request.threshold();
    if (options.encoding != opu::sim::Encoding::kTernary) options.bitplanes = request.bitplanes();
    options.dither_seed = request.dither_seed();
    auto code = opu::sim::encode(values, options);
    if (!code.ok())
      return fail("LinearTransform: cannot encode for the control: " + code.status().to_string());
    const Eigen::MatrixXf decoded = code->decode();
    opu::sim::LinearRequest exact;
    exact.n_in = n_in;
    exact.n_out = n_out;
    exact.batch = batch;
    exact.values = std::span<const float>(decoded.data(), static_cast<std::size_t>(decoded.size()));
    auto want = s_.control->exact_linear(exact);
    if (!want.ok())
      return fail("LinearTransform: the control refused: " + want.status().to_string());
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    const double n = static_cast<double>(got.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double x = got[i];
      const double y = want->data()[i];
      sx += x;
      sy += y;
      sxx += x * x;
      syy += y * y;
      sxy += x * y;
    }
    const double cov = sxy - sx * sy / n;
    const double var = (sxx - sx * sx / n) * (syy - sy * sy / n);
    const double corr = var > 0 ? cov / std::sqrt(var) : 0.0;
    stats_.linear_corr_by_n_in[n_in].push_back(static_cast<float>(corr));
    if (!checked) return;
    ++stats_.linear_checked;
    stats_.linear_min_corr = std::min(stats_.linear_min_corr, corr);
    if (!(corr >= s_.options.linear_min_corr)) {
      fail("LinearTransform id " + std::to_string(request.request_id()) + " (n_in " +
           std::to_string(request.n_in()) + ", n_out " + std::to_string(n_out) + ", batch " +
           std::to_string(batch) + ", encoding " + std::to_string(request.encoding()) +
           "): correlation with the exact projection " + std::to_string(corr) +
           ", want >= " + std::to_string(s_.options.linear_min_corr));
    }
  }

  // --- malformed requests -----------------------------------------------------------------------

  void expect(const std::string& name, Clock::time_point start, const grpc::Status& status,
              std::initializer_list<grpc::StatusCode> want) {
    record(kMalformed, start, status);
    ++stats_.malformed_cases[name];
    if (std::find(want.begin(), want.end(), status.error_code()) != want.end()) return;
    std::string codes;
    for (const auto code : want) codes += (codes.empty() ? "" : " or ") + code_name(code);
    fail("malformed request '" + name + "': got " + describe(status) + ", want " + codes);
  }

  pb::TransformRequest small_transform() {
    pb::TransformRequest request;
    request.set_n_in(s_.info.max_n_in);
    request.set_n_out(s_.info.max_n_out);
    request.set_batch(2);
    const auto inputs = random_frames(rng_, s_.info.max_n_in, 2);
    request.set_inputs(as_bytes(inputs.data(), inputs.size()));
    request.set_request_id(next_id());
    return request;
  }

  pb::LinearTransformRequest small_linear() {
    pb::LinearTransformRequest request;
    request.set_n_in(10);
    request.set_n_out(s_.info.max_n_out);
    request.set_batch(4);
    std::vector<float> values(40);
    for (auto& v : values) v = static_cast<float>(2.0 * rng_.uniform() - 1.0);
    request.set_values(as_bytes(values.data(), values.size() * sizeof(float)));
    request.set_encoding(pb::TERNARY);
    request.set_threshold(0.1F);
    request.set_exposure_us(s_.max_exposure_sent);
    request.set_request_id(next_id());
    return request;
  }

  void send_transform(const std::string& name, const pb::TransformRequest& request,
                      std::initializer_list<grpc::StatusCode> want) {
    grpc::ClientContext context;
    prepare(context);
    pb::TransformResponse response;
    const auto start = Clock::now();
    expect(name, start, stub_->Transform(&context, request, &response), want);
  }

  void send_linear(const std::string& name, const pb::LinearTransformRequest& request,
                   std::initializer_list<grpc::StatusCode> want) {
    grpc::ClientContext context;
    prepare(context);
    pb::LinearTransformResponse response;
    const auto start = Clock::now();
    expect(name, start, stub_->LinearTransform(&context, request, &response), want);
  }

  void send_raw(const std::string& name, const std::string& method, const std::string& bytes,
                std::initializer_list<grpc::StatusCode> want) {
    grpc::ClientContext context;
    prepare(context);
    const grpc::ByteBuffer request = byte_buffer(bytes);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    const auto start = Clock::now();
    generic_->UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                        [&done](const grpc::Status& status) { done.set_value(status); });
    expect(name, start, done.get_future().get(), want);
  }

  // Bytes no protobuf parser accepts: a tag with field number 0 and wire type 7, then noise.
  std::string garbage(std::size_t n) {
    std::string bytes(1, '\x07');
    for (std::size_t i = 1; i < n; ++i) bytes.push_back(static_cast<char>(rng_.next()));
    return bytes;
  }

  void malformed_call() {
    using C = grpc::StatusCode;
    constexpr auto kInvalid = C::INVALID_ARGUMENT;
    constexpr auto kRange = C::OUT_OF_RANGE;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    constexpr int kCases = 37;
    const int which = static_cast<int>(rng_.below(kCases));
    pb::TransformRequest t = small_transform();
    pb::LinearTransformRequest l = small_linear();
    switch (which) {
      case 0:
        t.mutable_inputs()->pop_back();
        return send_transform("Transform inputs one byte short", t, {kInvalid});
      case 1:
        t.mutable_inputs()->push_back('\0');
        return send_transform("Transform inputs one byte long", t, {kInvalid});
      case 2:
        t.set_batch(0);
        t.clear_inputs();
        return send_transform("Transform batch 0", t, {kInvalid});
      case 3:
        t.set_batch(-3);
        return send_transform("Transform batch negative", t, {kInvalid});
      case 4: {
        const std::int64_t batch = s_.info.max_batch + 1;
        t.set_batch(batch);
        const std::int64_t bytes = batch * opu::sim::packed_bytes(t.n_in());
        if (bytes < (std::int64_t{s_.options.max_message_mb} << 20) - 4096) {
          t.mutable_inputs()->assign(static_cast<std::size_t>(bytes), '\x55');
        }
        return send_transform("Transform batch above max_batch", t, {kRange});
      }
      case 5:
        t.set_batch(std::numeric_limits<std::int64_t>::max());
        return send_transform("Transform batch INT64_MAX", t, {kRange});
      case 6:
        t.set_n_in(0);
        return send_transform("Transform n_in 0", t, {kInvalid});
      case 7:
        t.set_n_in(s_.info.max_n_in + 1);
        return send_transform("Transform n_in above max_n_in", t, {kRange});
      case 8:
        t.set_n_out(0);
        return send_transform("Transform n_out 0", t, {kInvalid});
      case 9:
        t.set_n_out(s_.info.max_n_out + 1);
        return send_transform("Transform n_out above max_n_out", t, {kRange});
      case 10:
        t.set_exposure_us(nan);
        return send_transform("Transform exposure NaN", t, {kInvalid});
      case 11:
        t.set_exposure_us(rng_.chance(0.5) ? -1.0 : -inf);
        return send_transform("Transform exposure negative", t, {kInvalid});
      case 12:
        t.set_exposure_us(s_.info.max_exposure_us * 2 + 1);
        return send_transform("Transform exposure above max_exposure_us", t, {kRange});
      case 13:
        l.set_encoding(pb::ENCODING_UNSPECIFIED);
        return send_linear("LinearTransform encoding unset", l, {kInvalid});
      case 14:
        l.set_encoding(static_cast<pb::Encoding>(rng_.pick<int>({4, 99, -1})));
        return send_linear("LinearTransform encoding unknown", l, {kInvalid});
      case 15:
        l.set_threshold(rng_.chance(0.5) ? 1.5F : -0.25F);
        return send_linear("LinearTransform threshold out of [0, 1)", l, {kInvalid});
      case 16:
        l.set_threshold(std::numeric_limits<float>::quiet_NaN());
        return send_linear("LinearTransform threshold NaN", l, {kInvalid});
      case 17:
        l.set_encoding(pb::BITPLANES);
        l.set_bitplanes(rng_.chance(0.5) ? 17 : -2);
        return send_linear("LinearTransform bitplanes out of 1..16", l, {kInvalid});
      case 18:
        l.set_encoding(pb::STOCHASTIC);
        l.set_bitplanes(0);
        return send_linear("LinearTransform stochastic bitplanes 0", l, {kInvalid});
      case 19:
        l.set_repeats(rng_.chance(0.5) ? 65 : -1);
        return send_linear("LinearTransform repeats out of 1..64", l, {kInvalid});
      case 20:
        l.set_reference_repeats(rng_.chance(0.5) ? 1025 : -1);
        return send_linear("LinearTransform reference_repeats out of 0..1024", l, {kInvalid});
      case 21:
        l.set_reference_max_age_s(rng_.pick<double>({-1.0, nan, inf}));
        return send_linear("LinearTransform reference_max_age_s negative or not finite", l,
                           {kInvalid});
      case 22:
      case 23: {
        std::string values = l.values();
        const float bad = which == 22 ? std::numeric_limits<float>::quiet_NaN()
                                      : -std::numeric_limits<float>::infinity();
        const std::size_t at = static_cast<std::size_t>(rng_.below(40)) * sizeof(float);
        std::memcpy(values.data() + at, &bad, sizeof(float));
        l.set_values(values);
        return send_linear(
            which == 22 ? "LinearTransform a value NaN" : "LinearTransform a value inf", l,
            {kInvalid});
      }
      case 24:
        l.mutable_values()->resize(l.values().size() - static_cast<std::size_t>(1 + rng_.below(4)));
        return send_linear("LinearTransform values of the wrong length", l, {kInvalid});
      case 25: {
        const std::int64_t n_in = s_.info.max_n_in - s_.reference_blocks + 1;
        l.set_n_in(n_in);
        l.mutable_values()->assign(static_cast<std::size_t>(4 * n_in * 4), '\0');
        return send_linear("LinearTransform n_in leaves no room for the reference", l, {kRange});
      }
      case 26:
        l.set_exposure_us(s_.info.max_exposure_us * 2 + 1);
        return send_linear("LinearTransform exposure above max_exposure_us", l, {kRange});
      case 27:
        l.set_batch(0);
        l.clear_values();
        return send_linear("LinearTransform batch 0", l, {kInvalid});
      case 28: {
        // A message above the server's --max-message-mb: refused by gRPC itself.
        const std::int64_t bytes = (std::int64_t{s_.options.max_message_mb} << 20) + 1024;
        const std::int64_t frame = opu::sim::packed_bytes(t.n_in());
        t.set_batch(bytes / frame + 1);
        t.mutable_inputs()->assign(static_cast<std::size_t>(t.batch() * frame), '\x0f');
        return send_transform("message above the server's size limit", t, {C::RESOURCE_EXHAUSTED});
      }
      case 29:
        return bad_message_in_stream(false);
      case 30:
        return bad_message_in_stream(true);
      case 31:
        return send_raw("garbage bytes as a Transform request", "/opu.v1.OpuDevice/Transform",
                        garbage(static_cast<std::size_t>(1 + rng_.below(300))), {kInvalid});
      case 32:
        return send_raw("garbage bytes as a LinearTransform request",
                        "/opu.v1.OpuDevice/LinearTransform",
                        garbage(static_cast<std::size_t>(1 + rng_.below(300))), {kInvalid});
      case 33: {
        // Random bytes: mostly unparseable, sometimes a message with nonsense fields; both are
        // malformed requests.
        std::string bytes(static_cast<std::size_t>(1 + rng_.below(64)), '\0');
        for (auto& c : bytes) c = static_cast<char>(rng_.next());
        return send_raw("random bytes as a Transform request", "/opu.v1.OpuDevice/Transform", bytes,
                        {kInvalid, kRange});
      }
      case 34:
        return send_raw("an unknown method", "/opu.v1.OpuDevice/Frobnicate", "",
                        {C::UNIMPLEMENTED});
      case 35:
        t.set_n_in(-static_cast<std::int64_t>(1 + rng_.below(1000)));
        return send_transform("Transform n_in negative", t, {kInvalid});
      default:
        l.set_n_out(0);
        return send_linear("LinearTransform n_out 0", l, {kInvalid});
    }
  }

  // A TransformStream whose valid messages are followed by a malformed one: the valid ones are
  // answered, then the stream ends with the malformed one's status (opu.proto). `garbage_bytes`:
  // the bad message is not even a protobuf (sent through the generic stub).
  void bad_message_in_stream(bool garbage_bytes) {
    const int valid = static_cast<int>(rng_.below(4));
    std::vector<grpc::ByteBuffer> messages;
    for (int i = 0; i < valid; ++i) {
      messages.push_back(byte_buffer(valid_transform_request(16).SerializeAsString()));
    }
    pb::TransformRequest bad = small_transform();
    bad.mutable_inputs()->pop_back();
    messages.push_back(byte_buffer(garbage_bytes
                                       ? garbage(static_cast<std::size_t>(1 + rng_.below(200)))
                                       : bad.SerializeAsString()));
    grpc::ClientContext context;
    prepare(context);
    const auto start = Clock::now();
    RawStream stream(*generic_, &context, std::move(messages));
    int answers = 0;
    const grpc::Status status = stream.wait(&answers);
    const std::string name = garbage_bytes
                                 ? "TransformStream: garbage bytes after valid messages"
                                 : "TransformStream: a malformed message after valid ones";
    if (garbage_bytes && status.ok() && answers == valid) {
      // Known and documented (docs/offload.md, "Soak"): gRPC's synchronous API ends Read() on a
      // message that does not parse exactly as on the client's half-close, so the server cannot
      // tell them apart; the stream ends OK after the valid messages' answers, one answer short.
      record(kMalformed, start, status);
      ++stats_.malformed_cases[name];
      ++stats_.known_deviations[name + ": OK, one answer short"];
      return;
    }
    expect(name, start, status, {grpc::StatusCode::INVALID_ARGUMENT});
    if (answers != valid) {
      fail(name + ": " + std::to_string(answers) + " answers to " + std::to_string(valid) +
           " valid messages");
    }
    last_end_ns_ = -1;  // those answers' device times were not looked at
  }

  // --- cancellations, deadlines, disconnects ----------------------------------------------------

  // A stream cancelled by the client mid-way: never half-closed, so the server cannot finish it on
  // its own; the status must be CANCELLED.
  void cancelled_stream() {
    grpc::ClientContext context;
    prepare(context);
    const auto start = Clock::now();
    auto stream = stub_->TransformStream(&context);
    const int messages = 2 + static_cast<int>(rng_.below(4));
    const int read_first = static_cast<int>(rng_.below(messages));
    for (int i = 0; i < messages; ++i) {
      pb::TransformRequest request = valid_transform_request(256);
      if (!stream->Write(request)) break;
    }
    pb::TransformResponse response;
    for (int i = 0; i < read_first && stream->Read(&response); ++i) {
    }
    if (rng_.chance(0.5)) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng_.below(5000)));
    }
    context.TryCancel();
    const grpc::Status status = stream->Finish();
    record(kCancelled, start, status);
    if (status.error_code() != grpc::StatusCode::CANCELLED) {
      fail("cancelled TransformStream: got " + describe(status) + ", want CANCELLED");
    }
    last_end_ns_ = -1;
  }

  // A large call with a deadline far too short: DEADLINE_EXCEEDED (or a correct answer, if the
  // server is faster than the deadline).
  void short_deadline() {
    const double deadline_s = 1e-3 * static_cast<double>(1 + rng_.below(5));
    const auto batch =
        std::min<std::int64_t>(s_.info.max_batch, rng_.pick<std::int64_t>({256, 512, 1024}));
    pb::TransformRequest request;
    request.set_n_in(s_.info.max_n_in);
    request.set_n_out(s_.info.max_n_out);
    request.set_batch(batch);
    const auto inputs = random_frames(rng_, s_.info.max_n_in, batch);
    request.set_inputs(as_bytes(inputs.data(), inputs.size()));
    request.set_request_id(next_id());
    grpc::ClientContext context;
    prepare(context, deadline_s);
    pb::TransformResponse response;
    const auto start = Clock::now();
    const grpc::Status status = stub_->Transform(&context, request, &response);
    record(kDeadline, start, status);
    if (status.ok()) {
      check_frames(request, response, "Transform with a short deadline");
    } else if (status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      fail("Transform with a " + std::to_string(deadline_s * 1e3) + " ms deadline: got " +
           describe(status) + ", want DEADLINE_EXCEEDED");
    }
    last_end_ns_ = -1;
  }

  // Raw TCP connections that end badly: the server must shrug them off.
  void abrupt_disconnect() {
    const auto start = Clock::now();
    const int fd = connect_tcp(s_.host, s_.port);
    if (fd < 0) {
      record(kDisconnect, start, grpc::Status(grpc::StatusCode::UNAVAILABLE, "connect"));
      return fail("abrupt disconnect: cannot connect to " + s_.address);
    }
    const std::int64_t batch = 64 + rng_.below(300);  // <= 46 KiB: within the initial window
    pb::TransformRequest request;
    request.set_n_in(s_.info.max_n_in);
    request.set_n_out(s_.info.max_n_out);
    request.set_batch(batch);
    const auto inputs = random_frames(rng_, s_.info.max_n_in, batch);
    request.set_inputs(as_bytes(inputs.data(), inputs.size()));
    const auto [head, data] =
        h2_call(s_.address, "/opu.v1.OpuDevice/Transform", request.SerializeAsString());
    switch (rng_.below(5)) {
      case 0:  // the whole call, then a reset at once
        send_all(fd, head + data);
        break;
      case 1:  // the whole call, then a reset while the server computes
        send_all(fd, head + data);
        std::this_thread::sleep_for(std::chrono::microseconds(500 + rng_.below(20000)));
        break;
      case 2:  // half a message
        send_all(fd, head + data.substr(0, data.size() / 2));
        break;
      case 3: {  // not HTTP/2 at all
        std::string noise(static_cast<std::size_t>(1 + rng_.below(4096)), '\0');
        for (auto& c : noise) c = static_cast<char>(rng_.next());
        send_all(fd, noise);
        break;
      }
      default:  // the whole call, then an orderly close without reading the answer
        send_all(fd, head + data);
        close(fd);
        record(kDisconnect, start, grpc::Status::OK);
        return;
    }
    reset_connection(fd);
    record(kDisconnect, start, grpc::Status::OK);
  }

  Shared& s_;
  int index_;
  Rng rng_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::OpuDevice::Stub> stub_;
  std::unique_ptr<grpc::GenericStub> generic_;
  int calls_left_on_channel_ = 0;
  std::uint64_t request_count_ = 0;
  std::int64_t last_end_ns_ = -1;
  Stats stats_;
};

// ------------------------------------------------------------------------------------------------
// RSS of the server, every second.

struct RssSample {
  double t_s;
  std::int64_t kib;
  int threads;
};

class RssSampler {
 public:
  RssSampler(int pid, ServeProcess* process, Shared& shared)
      : pid_(pid), process_(process), s_(shared) {}
  ~RssSampler() { stop(); }
  RssSampler(const RssSampler&) = delete;
  RssSampler& operator=(const RssSampler&) = delete;

  void start(Clock::time_point zero) {
    zero_ = zero;
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      wake_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }
  std::vector<RssSample> samples() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return samples_;
  }
  std::int64_t last_kib() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return samples_.empty() ? -1 : samples_.back().kib;
  }
  bool server_died() const { return died_.load(); }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      const bool gone = process_ != nullptr && process_->exited();
      const ProcStatus status = gone ? ProcStatus{} : proc_status(pid_);
      lock.lock();
      if (gone || status.rss_kib < 0) {
        if (!died_.exchange(true)) {
          s_.failures.add("the server process is gone (exit code " +
                          std::to_string(process_ != nullptr ? process_->exit_code() : -1) + ")");
          s_.stop.store(true);
        }
      } else {
        samples_.push_back({seconds_since(zero_), status.rss_kib, status.threads});
      }
      wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_; });
    }
  }

  int pid_;
  ServeProcess* process_;
  Shared& s_;
  Clock::time_point zero_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<RssSample> samples_;
  std::atomic<bool> died_{false};
  std::thread thread_;
};

// ------------------------------------------------------------------------------------------------

struct PhaseResult {
  Stats stats;
  double seconds = 0;
  double valid_calls_per_s() const {
    return seconds > 0 ? static_cast<double>(stats.valid_calls) / seconds : 0.0;
  }
  double frames_per_s() const {
    return seconds > 0 ? static_cast<double>(stats.transform_frames) / seconds : 0.0;
  }
};

PhaseResult quiet_phase(Shared& s, double seconds, std::uint64_t seed) {
  Client client(s, 999, seed);
  const auto start = Clock::now();
  client.run(
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)),
      /*hostile=*/false);
  PhaseResult result;
  result.seconds = seconds_since(start);
  result.stats = client.stats();
  return result;
}

json latency_json(const KindStats& k) {
  const Percentiles p = percentiles(k.latency_ms);
  return {{"n", p.n}, {"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"max", p.max}};
}

json quiet_json(const PhaseResult& r) {
  const auto& t = r.stats.kinds[kTransform];
  return {{"seconds", r.seconds},
          {"valid_calls_per_s", r.valid_calls_per_s()},
          {"transform_frames_per_s", r.frames_per_s()},
          {"transform_p50_ms", percentiles(t.latency_ms).p50}};
}

double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

// The "final summary: ..." line opu-serve logs at exit.
std::string final_summary(const std::string& log_path) {
  std::ifstream in(log_path);
  std::string line, found;
  while (std::getline(in, line)) {
    const std::size_t at = line.find("final summary: ");
    if (at != std::string::npos) found = line.substr(at + 15);
  }
  return found;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "opu-soak: minutes of concurrent valid, malformed, cancelled, expiring and abruptly dropped\n"
      "calls against opu-serve, checking that it never dies, answers every malformed request with\n"
      "the documented status code, answers valid ones correctly (a sample bit for bit against an\n"
      "in-process simulator of the same parameters), keeps its memory bounded and exits 0 on\n"
      "SIGTERM. Progress every 10 s; a table and one JSON object (last line) at the end; exit "
      "code\n"
      "1 when a check failed."};
  app.set_help_flag("-h,--help", "Print this help and exit");
  app.add_option("--serve", o.serve, "opu-serve executable to start")->capture_default_str();
  app.add_option("--target", o.target,
                 "HOST:PORT of an opu-serve already running (started with the device flags "
                 "below); then no process is started, nor stopped")
      ->capture_default_str();
  app.add_option("--server-pid", o.server_pid,
                 "with --target: the server's pid, to sample its RSS (0 = no RSS check)")
      ->capture_default_str();
  app.add_option("--serve-log", o.serve_log,
                 "file for the started opu-serve's stderr (default: opu-soak-serve-<pid>.log in "
                 "the temp dir)");
  app.add_option("--clients", o.clients, "client threads, each with its own connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--duration-s", o.duration_s, "soak time, seconds (the quiet phases add to it)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--quiet-s", o.quiet_s,
                 "a single quiet client's valid calls before and after the soak, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup-s", o.warmup_s,
                 "soak seconds after which the server's RSS is the baseline of the growth check")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option(
         "--rss-growth-max", o.rss_growth_max,
         "fail when the peak RSS after the warm-up exceeds this factor times the RSS at its "
         "end")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  app.add_option(
         "--min-quiet-ratio", o.min_quiet_ratio,
         "fail when the quiet client after the soak is slower than this fraction of the one "
         "before it (frames/s)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--check-fraction", o.check_fraction,
                 "fraction of Transform answers reproduced bit for bit in-process")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--linear-min-corr", o.linear_min_corr,
                 "least correlation of a LinearTransform answer with SimDevice::exact_linear()")
      ->capture_default_str()
      ->check(CLI::Range(-1.0, 1.0));
  app.add_option("--call-deadline-s", o.call_deadline_s, "deadline of every valid call (a hang)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--shutdown-timeout-s", o.shutdown_timeout_s,
                 "how long the server may take to exit after SIGTERM")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "seed of the traffic mix")->capture_default_str();
  app.add_option("--progress-s", o.progress_s, "progress line interval, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  const std::string device = "Device (passed to opu-serve and to the in-process checker)";
  app.add_option("--device-seed", o.device_seed, "the medium's seed (opu-serve --seed)")
      ->capture_default_str()
      ->group(device);
  app.add_option("--n-in", o.n_in, "mirrors")
      ->capture_default_str()
      ->check(CLI::Range(16, 1 << 20))
      ->group(device);
  app.add_option("--n-out", o.n_out, "camera pixels")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20))
      ->group(device);
  app.add_option("--camera", o.camera, "realistic or ideal")
      ->capture_default_str()
      ->check(CLI::IsMember({"realistic", "ideal"}))
      ->group(device);
  app.add_option("--server-threads", o.server_threads, "compute threads per request (--threads)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256))
      ->group(device);
  app.add_option("--max-batch", o.max_batch, "largest batch (--max-batch)")
      ->capture_default_str()
      ->check(CLI::Range(1024, 1 << 16))
      ->group(device);
  app.add_option("--max-message-mb", o.max_message_mb,
                 "server message size limit (--max-message-mb)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64))
      ->group(device);
  app.add_option("--max-inflight", o.max_inflight, "server admission limit (--max-inflight)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000))
      ->group(device);
  app.add_option("--param", o.params,
                 "NAME=VALUE: any other simulator parameter, for both the server and the checker")
      ->group(device);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_pattern("[%H:%M:%S.%e] [opu-soak] [%^%l%$] %v");

  Shared s;
  s.options = o;

  // The device the server should be: an identical SimDevice gives the expected DeviceInfo, the
  // frame time, the exact checker and the linear control.
  std::map<std::string, std::string> params = {
      {"seed", std::to_string(o.device_seed)},    {"n_in", std::to_string(o.n_in)},
      {"n_out", std::to_string(o.n_out)},         {"camera", o.camera},
      {"max_batch", std::to_string(o.max_batch)}, {"threads", "1"}};
  for (const std::string& pair : o.params) {
    const std::size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      spdlog::error("--param '{}' is not NAME=VALUE", pair);
      return 2;
    }
    params[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  auto config = opu::sim::SimConfig::from_params(params);
  if (!config.ok()) {
    spdlog::error("device parameters: {}", config.status().to_string());
    return 2;
  }
  auto make_device = [&]() -> std::unique_ptr<opu::sim::SimDevice> {
    auto created = opu::sim::SimDevice::create(*config);
    if (!created.ok()) {
      spdlog::error("device: {}", created.status().to_string());
      return nullptr;
    }
    return std::move(*created);
  };
  std::unique_ptr<opu::sim::SimDevice> checker_device = make_device();
  std::unique_ptr<opu::sim::SimDevice> control = make_device();
  if (!checker_device || !control) return 2;
  s.info = control->info();
  s.control = std::move(control);
  s.reference_blocks = config->holography.reference_blocks;
  s.max_exposure_sent = std::min(config->camera.readout_us, s.info.max_exposure_us);
  s.frametime_ns = std::llround(config->camera.frametime_us(s.max_exposure_sent) * 1e3);
  if (s.frametime_ns != std::llround(config->camera.frametime_us(1.0) * 1e3) ||
      s.frametime_ns != std::llround(s.info.frametime_us * 1e3)) {
    spdlog::error(
        "the frame time depends on the exposure below the readout time: cannot map "
        "device times to frames");
    return 2;
  }

  // The server.
  std::unique_ptr<ServeProcess> process;
  int server_pid = o.server_pid;
  if (o.target.empty()) {
    if (o.serve_log.empty()) {
      o.serve_log = (std::filesystem::temp_directory_path() /
                     ("opu-soak-serve-" + std::to_string(getpid()) + ".log"))
                        .string();
    }
    std::vector<std::string> args = {o.serve,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--seed",
                                     std::to_string(o.device_seed),
                                     "--n-in",
                                     std::to_string(o.n_in),
                                     "--n-out",
                                     std::to_string(o.n_out),
                                     "--camera",
                                     o.camera,
                                     "--threads",
                                     std::to_string(o.server_threads),
                                     "--max-batch",
                                     std::to_string(o.max_batch),
                                     "--max-message-mb",
                                     std::to_string(o.max_message_mb),
                                     "--max-inflight",
                                     std::to_string(o.max_inflight),
                                     "--log-level",
                                     "info",
                                     "--summary-interval-s",
                                     "10"};
    for (const std::string& pair : o.params) {
      args.push_back("--param");
      args.push_back(pair);
    }
    process = std::make_unique<ServeProcess>();
    std::string error;
    if (!process->start(args, o.serve_log, &error)) {
      spdlog::error("{}", error);
      return 2;
    }
    s.address = process->read_line(60.0);
    if (s.address.empty()) {
      spdlog::error("opu-serve printed no address (its log: {})", o.serve_log);
      return 2;
    }
    server_pid = process->pid();
    std::string command;
    for (const auto& a : args) command += (command.empty() ? "" : " ") + a;
    spdlog::info("started {} -> {} (pid {}, log {})", command, s.address, server_pid, o.serve_log);
  } else {
    s.address = o.target;
  }
  s.options = o;
  const std::size_t colon = s.address.rfind(':');
  if (colon == std::string::npos) {
    spdlog::error("address '{}' is not HOST:PORT", s.address);
    return 2;
  }
  s.host = s.address.substr(0, colon);
  s.port = s.address.substr(colon + 1);

  Checker checker(std::move(checker_device), s.failures);
  s.checker = &checker;
  checker.start();

  const auto zero = Clock::now();
  std::unique_ptr<RssSampler> rss;
  if (server_pid > 0) {
    rss = std::make_unique<RssSampler>(server_pid, process.get(), s);
    rss->start(zero);
  }

  // 1. One quiet client.
  spdlog::info("quiet phase: 1 client, valid calls only, {} s", o.quiet_s);
  const PhaseResult quiet_start = quiet_phase(s, o.quiet_s, o.seed + 1);
  spdlog::info("quiet: {:.1f} valid calls/s, {:.0f} frames/s", quiet_start.valid_calls_per_s(),
               quiet_start.frames_per_s());

  // 2. The soak.
  spdlog::info("soak: {} clients for {} s", o.clients, o.duration_s);
  const double soak_t0 = seconds_since(zero);
  const auto soak_start = Clock::now();
  const auto soak_end = soak_start + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(o.duration_s));
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::thread> threads;
  for (int i = 0; i < o.clients; ++i) {
    clients.push_back(std::make_unique<Client>(s, i, o.seed));
    threads.emplace_back([&, i] { clients[static_cast<std::size_t>(i)]->run(soak_end, true); });
  }
  {
    auto next = soak_start;
    std::int64_t last_calls = 0;
    double last_t = 0.0;
    while (Clock::now() < soak_end && !s.stop.load()) {
      next +=
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.progress_s));
      while (Clock::now() < std::min(next, soak_end) && !s.stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      const double t = seconds_since(soak_start);
      const std::int64_t calls = s.calls.load();
      spdlog::info(
          "{:5.0f} s: {} calls ({:.0f}/s), failed checks {}, exact checks {} ({} late), "
          "server RSS {:.1f} MiB",
          t, calls, static_cast<double>(calls - last_calls) / std::max(1e-9, t - last_t),
          s.failures.count(), checker.checked(), checker.late(),
          rss ? static_cast<double>(rss->last_kib()) / 1024.0 : 0.0);
      last_calls = calls;
      last_t = t;
    }
  }
  for (auto& t : threads) t.join();
  const double soak_seconds = seconds_since(soak_start);
  const double soak_t1 = seconds_since(zero);
  Stats soak;
  for (const auto& c : clients) soak.merge(c->stats());

  // 3. The quiet client again.
  PhaseResult quiet_end;
  if (!s.stop.load()) {
    spdlog::info("quiet phase again: 1 client, {} s", o.quiet_s);
    quiet_end = quiet_phase(s, o.quiet_s, o.seed + 2);
  }
  checker.finish();
  if (rss) rss->stop();

  // 4. The server must still be alive, then exit 0 on SIGTERM.
  bool alive_at_end = true;
  int exit_code = 0;
  if (process) {
    alive_at_end = !process->exited();
    if (!alive_at_end) {
      s.failures.add("opu-serve was not running at the end (exit code " +
                     std::to_string(process->exit_code()) + ")");
    }
    const auto t = Clock::now();
    exit_code = process->terminate(o.shutdown_timeout_s);
    spdlog::info("opu-serve exited with {} {:.2f} s after SIGTERM", exit_code, seconds_since(t));
    if (exit_code != 0) {
      s.failures.add(exit_code < 0 ? "opu-serve did not exit within " +
                                         std::to_string(o.shutdown_timeout_s) + " s of SIGTERM"
                                   : "opu-serve exited with " + std::to_string(exit_code) +
                                         " after SIGTERM, want 0");
    }
  }

  // 5. Memory.
  const std::vector<RssSample> samples = rss ? rss->samples() : std::vector<RssSample>{};
  json rss_json = json::object();
  if (!samples.empty()) {
    const double warm_t = soak_t0 + o.warmup_s;
    std::int64_t baseline = samples.front().kib, peak = 0, peak_after = 0;
    int peak_threads = 0;
    json series = json::array();  // [t s, MiB, threads], at most about 120 samples
    const std::size_t stride = (samples.size() + 119) / 120;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      const RssSample& sample = samples[i];
      peak = std::max(peak, sample.kib);
      peak_threads = std::max(peak_threads, sample.threads);
      if (i % stride == 0 || i + 1 == samples.size()) {
        series.push_back({std::round(sample.t_s * 10) / 10,
                          std::round(static_cast<double>(sample.kib) / 102.4) / 10,
                          sample.threads});
      }
      if (sample.t_s <= warm_t) baseline = sample.kib;
      if (sample.t_s > warm_t) peak_after = std::max(peak_after, sample.kib);
    }
    // Slope of the soak's RSS after the warm-up, least squares, MiB per minute.
    double n = 0, st = 0, sr = 0, stt = 0, str = 0;
    for (const auto& sample : samples) {
      if (sample.t_s <= warm_t || sample.t_s > soak_t1) continue;
      const double r = static_cast<double>(sample.kib) / 1024.0;
      n += 1;
      st += sample.t_s;
      sr += r;
      stt += sample.t_s * sample.t_s;
      str += sample.t_s * r;
    }
    const double slope =
        n > 2 && (n * stt - st * st) > 0 ? 60.0 * (n * str - st * sr) / (n * stt - st * st) : 0.0;
    const double growth =
        peak_after > 0 ? static_cast<double>(peak_after) / static_cast<double>(baseline) : 1.0;
    rss_json = {{"start_mib", static_cast<double>(samples.front().kib) / 1024.0},
                {"after_warmup_mib", static_cast<double>(baseline) / 1024.0},
                {"peak_mib", static_cast<double>(peak) / 1024.0},
                {"peak_after_warmup_mib", static_cast<double>(peak_after) / 1024.0},
                {"end_mib", static_cast<double>(samples.back().kib) / 1024.0},
                {"growth_after_warmup", growth},
                {"growth_limit", o.rss_growth_max},
                {"soak_slope_mib_per_min", slope},
                {"threads_start", samples.front().threads},
                {"threads_peak", peak_threads},
                {"threads_end", samples.back().threads},
                {"warmup_end_s", warm_t},
                {"soak_end_s", soak_t1},
                {"series", series}};
    if (growth > o.rss_growth_max) {
      s.failures.add("server RSS grew " + std::to_string(growth) + "x after the warm-up (" +
                     std::to_string(baseline / 1024) + " -> " + std::to_string(peak_after / 1024) +
                     " MiB), limit " + std::to_string(o.rss_growth_max) + "x");
    }
  }

  // 6. Checks that the run checked something.
  if (checker.checked() == 0 && o.check_fraction > 0) {
    s.failures.add(
        "no Transform answer was reproduced by the checker: the exact check did not run");
  }
  if (soak.linear_checked == 0) s.failures.add("no LinearTransform answer was compared");
  const double quiet_ratio = ratio(quiet_end.frames_per_s(), quiet_start.frames_per_s());
  if (!s.stop.load() && quiet_ratio < o.min_quiet_ratio) {
    s.failures.add("the quiet client after the soak ran at " + std::to_string(quiet_ratio) +
                   " of its frames/s before it (limit " + std::to_string(o.min_quiet_ratio) + ")");
  }

  // 7. Report.
  const std::string summary = process ? final_summary(o.serve_log) : std::string();
  const bool pass = s.failures.count() == 0;
  std::printf("\nopu-soak: %d clients, %.0f s soak, %s camera, %lld x %lld, server threads %d\n",
              o.clients, soak_seconds, o.camera.c_str(), static_cast<long long>(o.n_in),
              static_cast<long long>(o.n_out), o.server_threads);
  std::printf("%-18s %8s %9s %9s %9s %9s  %s\n", "kind", "calls", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "status codes");
  json calls_json = json::object(), codes_json = json::object(), latency = json::object();
  std::map<int, std::int64_t> all_codes;
  for (int k = 0; k < kKinds; ++k) {
    const KindStats& ks = soak.kinds[static_cast<std::size_t>(k)];
    const Percentiles p = percentiles(ks.latency_ms);
    std::string codes;
    json kind_codes = json::object();
    for (const auto& [code, n] : ks.codes) {
      codes += (codes.empty() ? "" : ", ") + code_name(code) + " " + std::to_string(n);
      kind_codes[code_name(code)] = n;
      all_codes[code] += n;
    }
    std::printf("%-18s %8zu %9.2f %9.2f %9.2f %9.1f  %s\n", kKindNames[k], p.n, p.p50, p.p90, p.p99,
                p.max, codes.c_str());
    calls_json[kKindNames[k]] = p.n;
    codes_json[kKindNames[k]] = kind_codes;
    latency[kKindNames[k]] = latency_json(ks);
  }
  json errors_json = json::object();
  for (const auto& [code, n] : all_codes) {
    if (code != 0) errors_json[code_name(code)] = n;
  }
  const auto& quiet_t = quiet_start.stats.kinds[kTransform];
  const double soak_valid_per_s = static_cast<double>(soak.valid_calls) / soak_seconds;
  const double soak_frames_per_s = static_cast<double>(soak.transform_frames) / soak_seconds;
  json ratios = {
      {"soak_vs_quiet_frames_per_s", ratio(soak_frames_per_s, quiet_start.frames_per_s())},
      {"soak_vs_quiet_valid_calls_per_s", ratio(soak_valid_per_s, quiet_start.valid_calls_per_s())},
      {"transform_p50_soak_vs_quiet", ratio(percentiles(soak.kinds[kTransform].latency_ms).p50,
                                            percentiles(quiet_t.latency_ms).p50)},
      {"quiet_after_vs_before_frames_per_s", quiet_ratio}};
  std::printf("\nquiet client before: %.1f valid calls/s, %.0f frames/s, Transform p50 %.2f ms\n",
              quiet_start.valid_calls_per_s(), quiet_start.frames_per_s(),
              percentiles(quiet_t.latency_ms).p50);
  std::printf("soak (%d clients):   %.1f valid calls/s, %.0f frames/s  (x%.2f, x%.2f of quiet)\n",
              o.clients, soak_valid_per_s, soak_frames_per_s,
              ratios["soak_vs_quiet_valid_calls_per_s"].get<double>(),
              ratios["soak_vs_quiet_frames_per_s"].get<double>());
  std::printf("quiet client after:  %.1f valid calls/s, %.0f frames/s  (x%.2f of before)\n",
              quiet_end.valid_calls_per_s(), quiet_end.frames_per_s(), quiet_ratio);
  if (!samples.empty()) {
    std::printf(
        "server RSS MiB: start %.1f, after warm-up %.1f, peak %.1f, end %.1f (growth x%.2f, "
        "limit x%.2f; slope %.2f MiB/min); threads start %d, peak %d, end %d\n",
        rss_json["start_mib"].get<double>(), rss_json["after_warmup_mib"].get<double>(),
        rss_json["peak_mib"].get<double>(), rss_json["end_mib"].get<double>(),
        rss_json["growth_after_warmup"].get<double>(), o.rss_growth_max,
        rss_json["soak_slope_mib_per_min"].get<double>(), rss_json["threads_start"].get<int>(),
        rss_json["threads_peak"].get<int>(), rss_json["threads_end"].get<int>());
  }
  std::printf(
      "exact Transform checks: %lld reproduced bit for bit, %lld mismatched, %lld late, %lld "
      "dropped; LinearTransform: %lld compared, least correlation %.4f (bound %.2f)\n",
      static_cast<long long>(checker.checked()), static_cast<long long>(checker.mismatched()),
      static_cast<long long>(checker.late()), static_cast<long long>(checker.dropped()),
      static_cast<long long>(soak.linear_checked), soak.linear_min_corr, o.linear_min_corr);
  for (const auto& [name, n] : soak.known_deviations) {
    std::printf("known deviation (documented, not a failure): %s: %lld\n", name.c_str(),
                static_cast<long long>(n));
  }
  if (!summary.empty()) std::printf("server's final summary: %s\n", summary.c_str());
  std::printf("%s: %lld failed checks\n\n", pass ? "PASS" : "FAIL",
              static_cast<long long>(s.failures.count()));

  json by_n_in = json::object();
  for (const auto& [n_in, corr] : soak.linear_corr_by_n_in) {
    std::vector<float> sorted = corr;
    std::sort(sorted.begin(), sorted.end());
    const auto at = [&](double q) {
      return sorted[std::min(sorted.size() - 1,
                             static_cast<std::size_t>(q * static_cast<double>(sorted.size())))];
    };
    by_n_in[std::to_string(n_in)] = {
        {"n", sorted.size()}, {"min", sorted.front()}, {"p1", at(0.01)}, {"p50", at(0.5)}};
  }
  json malformed = json::object();
  for (const auto& [name, n] : soak.malformed_cases) malformed[name] = n;
  json known = json::object();
  for (const auto& [name, n] : soak.known_deviations) known[name] = n;
  json out = {
      {"bench", "opu-soak"},
      {"pass", pass},
      {"failed_checks", s.failures.count()},
      {"failures", s.failures.kept()},
      {"cpu", cpu_model()},
      {"config",
       {{"clients", o.clients},
        {"duration_s", o.duration_s},
        {"soak_seconds", soak_seconds},
        {"quiet_s", o.quiet_s},
        {"seed", o.seed},
        {"device_seed", o.device_seed},
        {"n_in", o.n_in},
        {"n_out", o.n_out},
        {"camera", o.camera},
        {"server_threads", o.server_threads},
        {"max_batch", o.max_batch},
        {"max_message_mb", o.max_message_mb},
        {"target", s.address},
        {"started_server", process != nullptr}}},
      {"calls", calls_json},
      {"codes", codes_json},
      {"errors", errors_json},
      {"malformed_cases", malformed},
      {"known_deviations", known},
      {"latency_ms", latency},
      {"rss", rss_json},
      {"checks",
       {{"exact_transform",
         {{"checked", checker.checked()},
          {"mismatched", checker.mismatched()},
          {"late", checker.late()},
          {"dropped", checker.dropped()}}},
        {"linear",
         {{"compared", soak.linear_checked},
          {"min_corr", soak.linear_min_corr},
          {"corr_by_n_in", by_n_in}}},
        {"get_info", soak.get_info_checked},
        {"server_alive_at_end", alive_at_end},
        {"exit_code_after_sigterm", process ? json(exit_code) : json(nullptr)}}},
      {"quiet_before", quiet_json(quiet_start)},
      {"quiet_after", quiet_json(quiet_end)},
      {"soak",
       {{"valid_calls_per_s", soak_valid_per_s}, {"transform_frames_per_s", soak_frames_per_s}}},
      {"ratios", ratios},
      {"server_final_summary", summary}};
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  return pass ? 0 : 1;
}
