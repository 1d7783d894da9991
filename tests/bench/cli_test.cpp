// The benchmark drivers' flags: a value out of range stops the driver before it measures
// anything, with a message naming the flag, the value and the accepted range.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Run {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

Run run(const std::string& executable, const std::string& arguments) {
  const std::string command = executable + " " + arguments + " 2>&1";
  Run result;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) result.output += buffer;
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Each case: arguments, and the message the driver must print.
using Cases = std::vector<std::pair<std::string, std::string>>;

void check_refused(const std::string& executable, const Cases& cases) {
  for (const auto& [arguments, message] : cases) {
    CAPTURE(arguments);
    const Run r = run(executable, arguments);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find(message) != std::string::npos);
  }
}

}  // namespace

TEST_SUITE("bench") {
  TEST_CASE("opu-bench: flags out of range are refused, with flag, value and range") {
    check_refused(
        OPU_BENCH_PATH,
        Cases{{"--threads 0", "--threads: 0 is out of range; expected an integer in [1, 256]"},
              {"--threads 2.5", "--threads: 2.5 is out of range; expected an integer in [1, 256]"},
              {"--min-seconds -1",
               "--min-seconds: -1 is out of range; expected a number > 0 (seconds)"},
              {"--fft-planning fast",
               "--fft-planning: 'fast' is not a known value; expected one of estimate, measure"},
              {"--only dense gpu",
               "--only: 'gpu' is not a known value; expected one of generator, dense, streamed, "
               "structured, linear"}});
    const Run help = run(OPU_BENCH_PATH, "--help");
    CHECK(help.exit_code == 0);
    CHECK(help.output.find("an integer in [1, 256]") != std::string::npos);
  }

#ifdef OPU_BENCH_REMOTE_PATH
  TEST_CASE("opu-bench-remote: flags out of range are refused, with flag, value and range") {
    check_refused(
        OPU_BENCH_REMOTE_PATH,
        Cases{{"--threads 0", "--threads: 0 is out of range; expected an integer in [1, 256]"},
              {"--seconds 0", "--seconds: 0 is out of range; expected a number > 0 (seconds)"},
              {"--rounds -1", "--rounds: -1 is out of range; expected an integer in [1, 1000000]"},
              {"--camera fancy",
               "--camera: 'fancy' is not a known value; expected one of ideal, realistic"},
              {"--dfa-mirrors 0",
               "--dfa-mirrors: 0 is out of range; expected an integer in [1, 2147483648]"},
              {"--bulk-batch 100000",
               "--bulk-batch: 100000 is out of range; expected an integer in [1, 65536]"}});
  }
#endif

#ifdef OPU_TRAINER_BENCH_PATH
  TEST_CASE("opu-trainer-bench: flags out of range are refused, with flag, value and range") {
    check_refused(
        OPU_TRAINER_BENCH_PATH,
        Cases{
            {"--steps 0", "--steps: 0 is out of range; expected an integer in [1, 1000000]"},
            {"--batch -128", "--batch: -128 is out of range; expected an integer in [1, 1000000]"},
            {"--reference-repeats -1",
             "--reference-repeats: -1 is out of range; expected an integer in [0, 1024] (0 = the "
             "device's default)"},
            {"--reference-max-age -1",
             "--reference-max-age: -1 is out of range; expected a number >= 0 (device "
             "seconds)"}});
  }
#endif

#ifdef OPU_FEEDBACK_QUALITY_PATH
  TEST_CASE("opu-feedback-quality: flags out of range are refused, with flag, value and range") {
    check_refused(
        OPU_FEEDBACK_QUALITY_PATH,
        Cases{{"--calls 1", "--calls: 1 is out of range; expected an integer in [2, 1000]"},
              {"--n-out 0", "--n-out: 0 is out of range; expected an integer in [1, 1024]"},
              {"--seed -1", "--seed: -1 is out of range; expected an integer >= 0"}});
  }
#endif
}
