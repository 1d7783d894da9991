// The doctest main shared by every test executable. Test seeds can be overridden with
// OPU_TEST_SEED (see test_support.h); tests print the seed they used when they fail.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
