// Force-included (-include) into every first-party translation unit when compiling with GCC < 13.
//
// Why: GCC 12's AVX-512 headers implement _mm512_undefined_ps() and friends as a self-initialised
// local (`__m512 __Y = __Y;`). When Eigen's AVX-512 packet math (pmax, predux, ...) is inlined into
// our code, -Wmaybe-uninitialized reports that deliberately undefined value as "may be used
// uninitialized" (GCC bug 105593, fixed in GCC 13). It is a false positive located inside the
// compiler's own header, and with -Werror it stops every build for an AVX-512 target.
//
// Narrowest fix: the diagnostic state is tracked per source location, so ignoring the warning
// around the first inclusion of <immintrin.h> silences it only for locations inside the intrinsic
// headers. Our own code keeps -Wmaybe-uninitialized and -Wuninitialized in full.
#pragma once
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
