#include "opu_sim/medium.h"

#include <immintrin.h>
#include <omp.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "opu_sim/packing.h"
#include "opu_sim/status.h"
#include "opu_sim/transmission_matrix.h"

extern "C" int openblas_get_num_threads(void);
extern "C" void openblas_set_num_threads(int num_threads);

namespace opu::sim {
namespace {

using Complex = std::complex<float>;
using FloatMatrixMap = Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>>;

// Packed bytes are reinterpreted as little-endian 64-bit words below.
static_assert(std::endian::native == std::endian::little, "big-endian hosts are not supported");

// Frames re-laid as 64-bit words, bits past n_in cleared: the column-sum kernel walks set bits a
// word at a time (count-trailing-zeros), whatever the frame's byte alignment.
struct FrameWords {
  std::int64_t words_per_frame = 0;
  std::vector<std::uint64_t> words;

  FrameWords(std::span<const std::uint8_t> packed, std::int64_t n_in, std::int64_t batch)
      : words_per_frame((n_in + 63) / 64),
        words(static_cast<std::size_t>(words_per_frame * batch), 0) {
    const std::int64_t bytes = packed_bytes(n_in);
    for (std::int64_t b = 0; b < batch; ++b) {
      auto* destination = reinterpret_cast<std::uint8_t*>(words.data() + b * words_per_frame);
      std::memcpy(destination, packed.data() + b * bytes, static_cast<std::size_t>(bytes));
      if (n_in % 64 != 0) {
        words[static_cast<std::size_t>((b + 1) * words_per_frame - 1)] &=
            (std::uint64_t{1} << (n_in % 64)) - 1;
      }
    }
  }
  const std::uint64_t* frame(std::int64_t b) const { return words.data() + b * words_per_frame; }
};

// The kernels below come in three versions with the same order of additions, hence the same
// bits (a golden-hash test pins them): 512-bit vectors when the build targets AVX-512 (OPU_ARCH=
// native on such a machine), 256-bit AVX otherwise (x86-64-v3), and scalar loops. Defining
// OPU_SIM_NO_AVX512_KERNELS compiles the 256-bit ones into an AVX-512 build, all else equal: how
// docs/benchmarks.md ("512-bit kernels") compares the two on one machine.
#if defined(__AVX512F__) && !defined(OPU_SIM_NO_AVX512_KERNELS)
#define OPU_SIM_AVX512 1
#else
#define OPU_SIM_AVX512 0
#endif

// Rows of one register-resident accumulator: 48 complex = 96 floats = 12 AVX registers.
constexpr std::int64_t kChunkRows = 48;

// Calls visit(j) for each set bit j in [col0, col0 + cols) of the frame, in increasing j.
template <typename Visit>
inline void for_each_set_bit(const std::uint64_t* frame, std::int64_t col0, std::int64_t cols,
                             const Visit& visit) {
  const std::int64_t first_word = col0 / 64;
  const std::int64_t last_word = (col0 + cols + 63) / 64;
  for (std::int64_t w = first_word; w < last_word; ++w) {
    std::uint64_t bits = frame[w];
    if ((w + 1) * 64 > col0 + cols) bits &= (std::uint64_t{1} << ((col0 + cols) % 64)) - 1;
    while (bits != 0) {
      visit(w * 64 + std::countr_zero(bits));
      bits &= bits - 1;
    }
  }
}

#if defined(__AVX__) && !OPU_SIM_AVX512
// The first 8 x kVectors floats of add_set_columns(), in registers: each set bit costs kVectors
// loads and adds (twelve for a full chunk, of sixteen registers), enough work to hide the
// bit-walking overhead.
template <int kVectors>
void add_set_columns_avx(const float* tile, std::int64_t ld_floats, std::int64_t tile_col0,
                         std::int64_t col0, std::int64_t cols, const std::uint64_t* frame,
                         float* acc) {
  __m256 a[kVectors];
  for (int k = 0; k < kVectors; ++k) a[k] = _mm256_loadu_ps(acc + 8 * k);
  for_each_set_bit(frame, col0, cols, [&](std::int64_t j) {
    const float* column = tile + (j - tile_col0) * ld_floats;
    for (int k = 0; k < kVectors; ++k) a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(column + 8 * k));
  });
  for (int k = 0; k < kVectors; ++k) _mm256_storeu_ps(acc + 8 * k, a[k]);
}

using AddSetColumns = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                               const std::uint64_t*, float*);

// add_set_columns_avx<k + 1> at index k, so that a partial chunk's height picks its kernel.
template <int... kIndex>
constexpr std::array<AddSetColumns, sizeof...(kIndex)> avx_kernels(
    std::integer_sequence<int, kIndex...> /*unused*/) {
  return {&add_set_columns_avx<kIndex + 1>...};
}
constexpr auto kAvxKernels = avx_kernels(std::make_integer_sequence<int, 2 * kChunkRows / 8>{});
#endif

#if OPU_SIM_AVX512
// The same in 512-bit registers: a full chunk is six of them. kVectors vectors of 16 floats; with
// kMasked, the last one limited to the lanes of `last` (masked-off lanes are neither read nor
// written), so a partial chunk needs no scalar remainder. Lane-wise adds: the order of each
// element's additions is unchanged. Against the 256-bit version, one thread, 1024²: 29% less time
// at batch 8, 8% at batch 1 (medians of twelve alternating rounds); chunks of 96 rows (twelve
// registers) gained nothing more.
template <int kVectors, bool kMasked>
void add_set_columns_avx512(const float* tile, std::int64_t ld_floats, std::int64_t tile_col0,
                            std::int64_t col0, std::int64_t cols, const std::uint64_t* frame,
                            float* acc, __mmask16 last) {
  constexpr int kFull = kMasked ? kVectors - 1 : kVectors;
  __m512 a[kVectors];
  for (int k = 0; k < kFull; ++k) a[k] = _mm512_loadu_ps(acc + 16 * k);
  if constexpr (kMasked) a[kFull] = _mm512_maskz_loadu_ps(last, acc + 16 * kFull);
  for_each_set_bit(frame, col0, cols, [&](std::int64_t j) {
    const float* column = tile + (j - tile_col0) * ld_floats;
    for (int k = 0; k < kFull; ++k) a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(column + 16 * k));
    if constexpr (kMasked) {
      a[kFull] = _mm512_add_ps(a[kFull], _mm512_maskz_loadu_ps(last, column + 16 * kFull));
    }
  });
  for (int k = 0; k < kFull; ++k) _mm512_storeu_ps(acc + 16 * k, a[k]);
  if constexpr (kMasked) _mm512_mask_storeu_ps(acc + 16 * kFull, last, a[kFull]);
}

using AddSetColumns512 = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t,
                                  std::int64_t, const std::uint64_t*, float*, __mmask16);

// add_set_columns_avx512<k + 1, true> at index k: a partial chunk of up to 16 (k + 1) floats.
template <int... kIndex>
constexpr std::array<AddSetColumns512, sizeof...(kIndex)> avx512_kernels(
    std::integer_sequence<int, kIndex...> /*unused*/) {
  return {&add_set_columns_avx512<kIndex + 1, true>...};
}
constexpr auto kAvx512Kernels =
    avx512_kernels(std::make_integer_sequence<int, 2 * kChunkRows / 16>{});
#endif

// Adds, for each set bit j in [col0, col0 + cols) of the frame, column j of the tile (its first
// `height` floats from `tile`) to `acc`, in increasing j. `tile` holds columns from tile_col0 on.
// Each element receives its columns in the same order whichever loop adds them, so the split
// below (whole vectors, then the last height % 8 floats, or 512-bit vectors, the last one masked)
// changes no bit.
inline void add_set_columns(const float* tile, std::int64_t ld_floats, std::int64_t tile_col0,
                            std::int64_t col0, std::int64_t cols, const std::uint64_t* frame,
                            std::int64_t height, float* acc) {
#if OPU_SIM_AVX512
  if (height == 2 * kChunkRows) {  // a full chunk: the common case, called directly
    add_set_columns_avx512<2 * kChunkRows / 16, false>(tile, ld_floats, tile_col0, col0, cols,
                                                       frame, acc, 0xFFFF);
  } else if (height > 0) {  // the last chunk of a panel, its last vector masked
    const std::int64_t vectors = (height + 15) / 16;
    const auto last = static_cast<__mmask16>(0xFFFFU >> (16 * vectors - height));
    kAvx512Kernels[static_cast<std::size_t>(vectors - 1)](tile, ld_floats, tile_col0, col0, cols,
                                                          frame, acc, last);
  }
#else
  std::int64_t done = 0;
#if defined(__AVX__)
  if (height == 2 * kChunkRows) {  // a full chunk: the common case, called directly
    add_set_columns_avx<2 * kChunkRows / 8>(tile, ld_floats, tile_col0, col0, cols, frame, acc);
    return;
  }
  // The last chunk of a panel, in vectors as far as they go.
  if (const std::int64_t vectors = height / 8; vectors > 0) {
    kAvxKernels[static_cast<std::size_t>(vectors - 1)](tile, ld_floats, tile_col0, col0, cols,
                                                       frame, acc);
    done = 8 * vectors;
  }
#endif
  if (done == height) return;
  // The remainder (and machines without AVX): the same additions in the same order.
  for_each_set_bit(frame, col0, cols, [&](std::int64_t j) {
    const float* column = tile + (j - tile_col0) * ld_floats;
    for (std::int64_t k = done; k < height; ++k) acc[k] += column[k];
  });
#endif
}

// Column-sum kernel. `tile` (complex, column-major, leading dimension ld) holds matrix rows
// [row0, row0 + rows) and columns [tile_col0, ...); this adds the selected columns among
// [col0, col0 + cols) (col0 a multiple of 64) into out rows [row0, row0 + rows) for every frame.
// Each output element receives its columns in increasing order, whatever the tiling: dense and
// streamed backends produce bit-identical fields.
void column_sums(const Complex* tile, std::int64_t ld, std::int64_t tile_col0, std::int64_t row0,
                 std::int64_t rows, std::int64_t col0, std::int64_t cols, const FrameWords& frames,
                 std::int64_t batch, Eigen::MatrixXcf& out) {
  OPU_CHECK(col0 % 64 == 0, "column blocks start on a word of frame bits");
  const auto* tile_floats = reinterpret_cast<const float*>(tile);
  const std::int64_t ld_floats = 2 * ld;
  for (std::int64_t r = 0; r < rows; r += kChunkRows) {
    const std::int64_t height = std::min(kChunkRows, rows - r);
    for (std::int64_t b = 0; b < batch; ++b) {
      // Accumulated in place: `out` never overlaps the matrix.
      auto* destination = reinterpret_cast<float*>(out.data() + b * out.rows() + row0 + r);
      add_set_columns(tile_floats + 2 * r, ld_floats, tile_col0, col0, cols, frames.frame(b),
                      2 * height, destination);
    }
  }
}

// Allocates on cache-line boundaries: a 32-byte load from a buffer malloc aligned to 16 bytes
// straddles two lines every other time.
template <typename T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <typename U>
  explicit LineAligned(const LineAligned<U>& /*unused*/) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, std::size_t /*n*/) { ::operator delete (p, std::align_val_t{64}); }
  friend bool operator==(const LineAligned& /*a*/, const LineAligned& /*b*/) { return true; }
};

// --- subset-sum tables (batches from Medium::kTableMinBatch frames) ------------------------------
//
// At density 1/2 a frame selects two columns in four: the column kernels load and add two
// columns per four. A table of the sixteen subset sums of each aligned group of four columns
// ("Four Russians"), built once per chunk of rows and shared by every frame of the batch, costs a
// frame one load and add per four columns, and the table eleven additions and fifteen stores per
// group: from sixteen frames on, less work, all of it in L1.
//
// The order of the sums (what the bits depend on): a group's entry is the fold of its selected
// columns, lowest first; a block's group entries are summed pairwise,
// ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)) for blocks of 32 columns, (e0 + e1) + (e2 + e3)
// for blocks of 16; block sums are added to the field in increasing column order. Blocks are 32
// columns wide for matrices in the caches and 16 beyond (table_block_columns()), a function of
// the request's shape only. That rounds differently from the column kernels' one-by-one fold, so,
// as with the GEMM kernel, a frame's bits depend on which kernel its batch size picks; never on
// the thread count, nor on dense vs streamed, which share this kernel.
constexpr int kTableGroup = 4;
constexpr int kTableEntries = 1 << kTableGroup;
// Floats of one chunk: 16 complex rows, four AVX registers or two AVX-512 ones.
constexpr std::int64_t kTableFloats = 32;
// Groups of one block of tables: 8 (32 columns: 8 x 16 entries x 128 bytes = 16 KiB, beside one
// chunk's accumulators, 128 bytes per frame, in L1) or 4. A block divides 64 columns: its bits
// come from one frame word.
constexpr int kWideTableGroups = 8;
constexpr int kNarrowTableGroups = 4;

// The table kernels' vectors: a 32-float chunk is two 512-bit registers in AVX-512 builds, four
// 256-bit ones in AVX builds. Only lane-wise adds (GCC's vector extensions: + is vaddps), so both
// give each element the same sums in the same order. With 512-bit vectors the kernel takes 28%
// less time at 1024², batch 32, and 18% at 4096², one thread (docs/benchmarks.md).
#if OPU_SIM_AVX512
#define OPU_SIM_TABLE_VECTORS 1
using TableVector = __m512;
constexpr int kTableLanes = 16;
inline TableVector load_table_vector(const float* p) { return _mm512_load_ps(p); }
inline TableVector loadu_table_vector(const float* p) { return _mm512_loadu_ps(p); }
inline void store_table_vector(float* p, TableVector v) { _mm512_store_ps(p, v); }
inline void storeu_table_vector(float* p, TableVector v) { _mm512_storeu_ps(p, v); }
#elif defined(__AVX__)
#define OPU_SIM_TABLE_VECTORS 1
using TableVector = __m256;
constexpr int kTableLanes = 8;
inline TableVector load_table_vector(const float* p) { return _mm256_load_ps(p); }
inline TableVector loadu_table_vector(const float* p) { return _mm256_loadu_ps(p); }
inline void store_table_vector(float* p, TableVector v) { _mm256_store_ps(p, v); }
inline void storeu_table_vector(float* p, TableVector v) { _mm256_storeu_ps(p, v); }
#else
#define OPU_SIM_TABLE_VECTORS 0
#endif

// Entry n of a group's table (n = 0..15): the fold of the group's columns whose bits n sets,
// lowest first, i.e. entry[n without its highest bit] + column[highest bit]. Entry 0 (zero) is
// written once by the caller. Only the first `height` floats of each entry are written. columns[i]
// is null past the matrix's last column: frames never select it, so entries that include it are
// never read.
inline void build_group_table(const float* const* columns, std::int64_t height, float* table) {
#if OPU_SIM_TABLE_VECTORS
  if (height == kTableFloats && columns[kTableGroup - 1] != nullptr) {
    // In registers, one vector of every entry at a time: built in memory, each entry would wait
    // for the store of the entry it extends. The column pointers are copied first: the stores
    // (which may alias anything) would otherwise reload them.
    const std::array<const float*, kTableGroup> column{columns[0], columns[1], columns[2],
                                                       columns[3]};
    for (std::int64_t k = 0; k < kTableFloats; k += kTableLanes) {
      const TableVector c0 = loadu_table_vector(column[0] + k);
      const TableVector c1 = loadu_table_vector(column[1] + k);
      const TableVector c2 = loadu_table_vector(column[2] + k);
      const TableVector c3 = loadu_table_vector(column[3] + k);
      const TableVector e3 = c0 + c1;
      const TableVector e5 = c0 + c2;
      const TableVector e6 = c1 + c2;
      const TableVector e7 = e3 + c2;
      const auto store = [&](int n, TableVector entry) {
        storeu_table_vector(table + n * kTableFloats + k, entry);
      };
      store(1, c0);
      store(2, c1);
      store(3, e3);
      store(4, c2);
      store(5, e5);
      store(6, e6);
      store(7, e7);
      store(8, c3);
      store(9, c0 + c3);
      store(10, c1 + c3);
      store(11, e3 + c3);
      store(12, c2 + c3);
      store(13, e5 + c3);
      store(14, e6 + c3);
      store(15, e7 + c3);
    }
    return;
  }
#endif
  for (int n = 1; n < kTableEntries; ++n) {
    const int high = std::bit_width(static_cast<unsigned>(n)) - 1;
    const float* __restrict column = columns[high];
    if (column == nullptr) continue;
    float* __restrict entry = table + n * kTableFloats;
    const float* __restrict rest = table + (n ^ (1 << high)) * kTableFloats;
    for (std::int64_t k = 0; k < height; ++k) entry[k] = rest[k] + column[k];
  }
}

// The entries of a block's tables that a frame's bits select, one per group.
template <int kGroups>
std::array<const float*, kGroups> selected_entries(const float* tables, std::uint32_t bits) {
  std::array<const float*, kGroups> entries{};
#pragma GCC unroll 8
  for (int g = 0; g < kGroups; ++g) {
    entries[g] = tables + (g * kTableEntries + ((bits >> (kTableGroup * g)) & 15U)) * kTableFloats;
  }
  return entries;
}

// e(kFirst) + ... + e(kFirst + kCount - 1), summed pairwise (kCount a power of two).
template <int kFirst, int kCount, typename Entry>
auto pairwise_sum(const Entry& e) {
  if constexpr (kCount == 1) {
    return e(kFirst);
  } else {
    return pairwise_sum<kFirst, kCount / 2>(e) + pairwise_sum<kFirst + kCount / 2, kCount / 2>(e);
  }
}

// acc += the block sum of the table entries a frame's bits select (pairwise, as above).
template <int kGroups>
void add_table_entries(const float* tables, std::uint32_t bits, std::int64_t height, float* acc) {
  const auto entries = selected_entries<kGroups>(tables, bits);
  for (std::int64_t k = 0; k < height; ++k) {
    acc[k] += pairwise_sum<0, kGroups>([&](int g) { return entries[g][k]; });
  }
}

#if OPU_SIM_TABLE_VECTORS
// add_table_entries() for a full chunk, in registers; the pairwise sum keeps each chain of
// dependent adds short.
template <int kGroups>
void add_table_entries_vectors(const float* tables, std::uint32_t bits, float* acc) {
  const auto entries = selected_entries<kGroups>(tables, bits);
#pragma GCC unroll 4
  for (int k = 0; k < kTableFloats; k += kTableLanes) {
    const TableVector sum =
        pairwise_sum<0, kGroups>([&](int g) { return load_table_vector(entries[g] + k); });
    store_table_vector(acc + k, load_table_vector(acc + k) + sum);
  }
}
#endif

// Adds one block's tables to every frame's accumulator of one chunk (kTableFloats floats per
// frame, side by side); bits[b]: frame b's bits of the block.
template <int kGroups>
void add_block_tables(const float* tables, const std::uint32_t* bits, std::int64_t batch,
                      std::int64_t height, float* accumulators) {
  std::int64_t b = 0;
#if OPU_SIM_TABLE_VECTORS
  if (height == kTableFloats) {
    for (; b < batch; ++b) {
      add_table_entries_vectors<kGroups>(tables, bits[b], accumulators + b * kTableFloats);
    }
  }
#endif
  for (; b < batch; ++b) {
    add_table_entries<kGroups>(tables, bits[b], height, accumulators + b * kTableFloats);
  }
}

// Builds the group tables of a block for rows [r, r + height) of its columns (floats from the
// start of each column; columns[i] null past the matrix's last column).
template <int kGroups>
inline void build_block_tables(const std::array<const float*, kGroups * kTableGroup>& columns,
                               std::int64_t r, std::int64_t height, float* tables) {
  for (int g = 0; g < kGroups; ++g) {
    std::array<const float*, kTableGroup> group{};
    for (int i = 0; i < kTableGroup; ++i) {
      if (const float* column = columns[g * kTableGroup + i]) group[i] = column + r;
    }
    build_group_table(group.data(), height, tables + g * kTableEntries * kTableFloats);
  }
}

// Chunks ahead whose lines the table kernel prefetches into L1 when the matrix comes from
// memory: measured at 4096², batch 32, one thread, 28.3 ms per call without, 25.5 / 23.6 / 25.1 /
// 26.1 ms one / two / four / eight chunks ahead. From L3 (1024²) it costs 3%, so it is off there.
constexpr std::int64_t kTablePrefetchChunks = 2;

// The table kernel, with column_sums()'s arguments (col0 a multiple of 64, any number of
// columns): rows [row0, row0 + rows) of every frame's field in `out` receive the selected columns
// among [col0, col0 + cols), block after block. Blocks of columns outside, chunks of rows inside:
// a block's columns are read in runs of 2 x rows floats, while the frames' accumulators for the
// whole row range wait in a scratch buffer (in L2, chunk-major). Each frame's bits of a block are
// gathered once per block: read from the frame words for every chunk instead, the lookups took
// twice as long.
template <int kGroups>
void table_sums(const Complex* tile, std::int64_t ld, std::int64_t tile_col0, std::int64_t row0,
                std::int64_t rows, std::int64_t col0, std::int64_t cols, const FrameWords& frames,
                std::int64_t batch, bool prefetch, Eigen::MatrixXcf& out) {
  constexpr std::int64_t kBlockCols = kGroups * kTableGroup;
  OPU_CHECK(col0 % 64 == 0, "column blocks start on a word of frame bits");
  thread_local std::vector<float, LineAligned<float>> tables;
  thread_local std::vector<float, LineAligned<float>> accumulators;
  thread_local std::vector<std::uint32_t> bits;
  tables.assign(static_cast<std::size_t>(kGroups * kTableEntries * kTableFloats), 0.0F);
  const std::int64_t chunks = (2 * rows + kTableFloats - 1) / kTableFloats;
  const std::int64_t chunk_floats = batch * kTableFloats;
  accumulators.resize(static_cast<std::size_t>(chunks * chunk_floats));
  bits.resize(static_cast<std::size_t>(batch));
  const auto* tile_floats = reinterpret_cast<const float*>(tile);
  auto* fields = reinterpret_cast<float*>(out.data()) + 2 * row0;
  const std::int64_t field_stride = 2 * out.rows();
  const auto height_of = [&](std::int64_t c) {
    return std::min(kTableFloats, 2 * rows - c * kTableFloats);
  };
  for (std::int64_t c = 0; c < chunks; ++c) {
    for (std::int64_t b = 0; b < batch; ++b) {
      std::copy_n(fields + b * field_stride + c * kTableFloats, height_of(c),
                  accumulators.data() + c * chunk_floats + b * kTableFloats);
    }
  }
  for (std::int64_t block = col0; block < col0 + cols; block += kBlockCols) {
    const std::int64_t block_cols = std::min(kBlockCols, col0 + cols - block);
    const std::uint32_t in_block = block_cols == 32 ? ~0U : (std::uint32_t{1} << block_cols) - 1U;
    for (std::int64_t b = 0; b < batch; ++b) {
      bits[b] = static_cast<std::uint32_t>(frames.frame(b)[block / 64] >> (block % 64)) & in_block;
    }
    std::array<const float*, kBlockCols> columns{};
    for (std::int64_t i = 0; i < block_cols; ++i) {
      columns[i] = tile_floats + (block + i - tile_col0) * 2 * ld;
    }
    for (std::int64_t c = 0; c < chunks; ++c) {
      if (prefetch && c + kTablePrefetchChunks < chunks) {
        for (std::int64_t i = 0; i < block_cols; ++i) {
          const auto* line =
              reinterpret_cast<const char*>(columns[i] + (c + kTablePrefetchChunks) * kTableFloats);
          __builtin_prefetch(line);
          __builtin_prefetch(line + 64);
        }
      }
      build_block_tables<kGroups>(columns, c * kTableFloats, height_of(c), tables.data());
      add_block_tables<kGroups>(tables.data(), bits.data(), batch, height_of(c),
                                accumulators.data() + c * chunk_floats);
    }
  }
  for (std::int64_t c = 0; c < chunks; ++c) {
    for (std::int64_t b = 0; b < batch; ++b) {
      std::copy_n(accumulators.data() + c * chunk_floats + b * kTableFloats, height_of(c),
                  fields + b * field_stride + c * kTableFloats);
    }
  }
}

// Columns walked together by the column walk: six columns' 64-byte lines (twelve registers) and
// one field's (two) fill the sixteen AVX registers, and each frame's field is loaded and stored
// once per group instead of once per column it selects. Measured at 4096², batch 8, one thread:
// 14 ms per call one column at a time, 12-14 ms four at a time, 11.2 ms six at a time.
constexpr int kWalkGroup = 6;

#if OPU_SIM_AVX512
// add_column_group() below in 512-bit registers, from float k on, kLines 64-byte lines of each
// column at a time, while they last; returns where it stopped. Against the AVX2 version (two
// 256-bit registers per line), one thread (docs/benchmarks.md, "512-bit kernels"): one line at a
// time was level at 4096² and slower at 1,500² (1.02-1.44x in 16 of 18 rounds); two lines at a
// time (what 32 registers allow) take 16% less time at 4096², batch 8 (median of twelve rounds),
// and are level at batch 1; three or four lines were no better than two.
template <int kLines>
std::int64_t add_column_group_lines(const float* const* columns, int group, std::int64_t k,
                                    std::int64_t n, float* const* fields, const unsigned* masks,
                                    std::size_t count) {
  for (; k + 16 * kLines <= n; k += 16 * kLines) {
    __m512 c[kWalkGroup][kLines];
    for (int g = 0; g < group; ++g) {
      for (int l = 0; l < kLines; ++l) c[g][l] = _mm512_loadu_ps(columns[g] + k + 16 * l);
    }
    for (std::size_t i = 0; i < count; ++i) {
      float* field = fields[i] + k;
      __m512 f[kLines];
      for (int l = 0; l < kLines; ++l) f[l] = _mm512_loadu_ps(field + 16 * l);
      for (int g = 0; g < group; ++g) {
        if (((masks[i] >> g) & 1U) == 0) continue;
        for (int l = 0; l < kLines; ++l) f[l] = _mm512_add_ps(f[l], c[g][l]);
      }
      for (int l = 0; l < kLines; ++l) _mm512_storeu_ps(field + 16 * l, f[l]);
    }
  }
  return k;
}
#endif

// For a group of up to kWalkGroup columns (in increasing order) and the frames that select any of
// them (masks[i]: bit g set when frame i selects columns[g]), adds to fields[i] the columns it
// selects, in increasing order: field += c0, then += c1, ... as the one-column walk does. The
// vector loops only add whole lines lane by lane: the order, hence the bits, are the same in every
// build.
void add_column_group(const float* const* columns, int group, std::int64_t n, float* const* fields,
                      const unsigned* masks, std::size_t count) {
  std::int64_t k = 0;
#if OPU_SIM_AVX512
  // Two 64-byte lines of each column at a time (twelve of the 32 registers), then one.
  k = add_column_group_lines<2>(columns, group, k, n, fields, masks, count);
  k = add_column_group_lines<1>(columns, group, k, n, fields, masks, count);
#elif defined(__AVX__)
  for (; k + 16 <= n; k += 16) {  // one 64-byte line of each column at a time
    __m256 c[kWalkGroup][2];
    for (int g = 0; g < group; ++g) {
      c[g][0] = _mm256_loadu_ps(columns[g] + k);
      c[g][1] = _mm256_loadu_ps(columns[g] + k + 8);
    }
    for (std::size_t i = 0; i < count; ++i) {
      float* field = fields[i] + k;
      __m256 f0 = _mm256_loadu_ps(field);
      __m256 f1 = _mm256_loadu_ps(field + 8);
      for (int g = 0; g < group; ++g) {
        if (((masks[i] >> g) & 1U) == 0) continue;
        f0 = _mm256_add_ps(f0, c[g][0]);
        f1 = _mm256_add_ps(f1, c[g][1]);
      }
      _mm256_storeu_ps(field, f0);
      _mm256_storeu_ps(field + 8, f1);
    }
  }
#endif
  for (std::size_t i = 0; i < count; ++i) {
    for (int g = 0; g < group; ++g) {
      if (((masks[i] >> g) & 1U) == 0) continue;
      for (std::int64_t r = k; r < n; ++r) fields[i][r] += columns[g][r];
    }
  }
}

// One thread's stripe of the column walk: columns come in increasing order and are added in
// groups of kWalkGroup to the frames that select them. The frames' fields are accumulated apart
// from `out`: with out's stride (a power of two for the usual sizes) every field's segment k maps
// to the same L1 set, and more than eight fields thrash it; one cache line of padding spreads
// them.
class ColumnWalk {
 public:
  ColumnWalk(const FrameWords& frames, std::int64_t batch, std::int64_t floats)
      : frames_(frames),
        batch_(batch),
        floats_(floats),
        stride_(floats + 16),
        scratch_(static_cast<std::size_t>(batch * stride_), 0.0F),
        fields_(static_cast<std::size_t>(batch)),
        masks_(static_cast<std::size_t>(batch)) {}

  // Column j (its stripe, `floats_` floats from `column`); j above every column added before.
  void add(std::int64_t j, const float* column) {
    indices_[group_] = j;
    columns_[group_++] = column;
    if (group_ == kWalkGroup) flush();
  }

  // Adds the last group and writes the stripe's fields into rows [row0, ...) of `out`, which is
  // zero there until then.
  void finish(Eigen::MatrixXcf& out, std::int64_t row0) {
    if (group_ > 0) flush();
    for (std::int64_t b = 0; b < batch_; ++b) {
      std::copy_n(scratch_.data() + b * stride_, floats_,
                  reinterpret_cast<float*>(out.data() + b * out.rows() + row0));
    }
  }

 private:
  void flush() {
    std::size_t count = 0;
    for (std::int64_t b = 0; b < batch_; ++b) {
      unsigned mask = 0;
      for (int g = 0; g < group_; ++g) {
        const std::int64_t j = indices_[g];
        mask |= static_cast<unsigned>((frames_.frame(b)[j >> 6] >> (j & 63)) & 1U) << g;
      }
      if (mask == 0) continue;
      fields_[count] = scratch_.data() + b * stride_;
      masks_[count++] = mask;
    }
    add_column_group(columns_.data(), group_, floats_, fields_.data(), masks_.data(), count);
    group_ = 0;
  }

  const FrameWords& frames_;
  std::int64_t batch_;
  std::int64_t floats_;
  std::int64_t stride_;
  std::vector<float> scratch_;
  std::vector<float*> fields_;
  std::vector<unsigned> masks_;
  std::array<const float*, kWalkGroup> columns_{};
  std::array<std::int64_t, kWalkGroup> indices_{};
  int group_ = 0;
};

// Columns per block of the column-sum kernel: 48 rows x 64 columns x 8 bytes = 24 KiB, three
// quarters of the L1 cache, reused across every frame of the batch. A multiple of 64 (one word of
// frame bits).
constexpr std::int64_t kSumBlockCols = 64;

// Dense matrices larger than this (about half the L3 cache) are walked column by column (see
// stream_fields) while the frames' fields fit beside them in L2: the blocked kernel's chunks
// would come from memory with a stride the prefetchers do not follow, while the walk reads each
// needed column once, in memory order. Measured at 4096², one thread: the walk is 1.5-2x faster
// up to 12 frames (384 KiB of fields), level at 16 (512 KiB, this machine's L2), slower beyond.
constexpr std::size_t kCacheResidentBytes = std::size_t{16} << 20;
constexpr std::size_t kWalkFieldBytes = std::size_t{384} << 10;

// Whether the dense matrix of a request this shape exceeds kCacheResidentBytes: read from
// memory, not from L3, which decides the column walk, the table kernel's block width and its
// prefetching.
bool beyond_caches(std::int64_t n_in, std::int64_t n_out) {
  return dense_matrix_bytes(n_in, n_out) > kCacheResidentBytes;
}

// Groups per block of the table kernel for a request of this shape: matrices beyond the caches
// are read from memory a chunk of every block column at a time, and sixteen columns at a time
// (sixteen streams of 128-byte steps) read faster than 32. Measured at 4096², one thread, batch
// 16 / 24 / 32 / 48: 13.1 / 15.0 / 17.3 / 22.1 ms per call with blocks of 16 against 18.1 / 20.7 /
// 22.9 / 27.1 with blocks of 32; at 1024² (in L3) blocks of 32 stay 0-10% faster.
int table_groups(std::int64_t n_in, std::int64_t n_out) {
  return beyond_caches(n_in, n_out) ? kNarrowTableGroups : kWideTableGroups;
}

// table_sums() with the block width of table_groups().
void table_sums_for_shape(std::int64_t n_in, std::int64_t n_out, const Complex* tile,
                          std::int64_t ld, std::int64_t tile_col0, std::int64_t row0,
                          std::int64_t rows, std::int64_t col0, std::int64_t cols,
                          const FrameWords& frames, std::int64_t batch, bool prefetch,
                          Eigen::MatrixXcf& out) {
  if (table_groups(n_in, n_out) == kNarrowTableGroups) {
    table_sums<kNarrowTableGroups>(tile, ld, tile_col0, row0, rows, col0, cols, frames, batch,
                                   prefetch, out);
  } else {
    table_sums<kWideTableGroups>(tile, ld, tile_col0, row0, rows, col0, cols, frames, batch,
                                 prefetch, out);
  }
}

// Rows of one thread's stripe in the column walk: a multiple of 8 keeps stripes on whole cache
// lines.
constexpr std::int64_t walk_stripe_rows(std::int64_t n_out, int threads) {
  return (n_out / threads + 7) / 8 * 8;
}

// Leading dimension (complex elements) for `rows` rows: a power-of-two column stride would map
// every column of a chunk to the same L1 sets and thrash them, so such strides get one cache line
// of padding.
constexpr std::int64_t padded_rows(std::int64_t rows) {
  return (rows * 8) % 4096 == 0 ? rows + 8 : rows;
}
// Row panel of the table kernel: each column is read in runs of 4 KiB, and 32 frames'
// accumulators take 128 KiB of L2. Measured at 4096², batch 32: 128 to 2,048 rows all within 5%.
constexpr std::int64_t kTablePanelRows = 512;

// Row panel handed to one thread at a time: six chunks.
constexpr std::int64_t kPanelRows = 6 * kChunkRows;

// Runs OpenBLAS single-threaded while our own threads are busy (and restores the setting): our
// kernels never nest inside BLAS threads or the other way round.
class ScopedSingleThreadedBlas {
 public:
  ScopedSingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~ScopedSingleThreadedBlas() { openblas_set_num_threads(saved_); }
  ScopedSingleThreadedBlas(const ScopedSingleThreadedBlas&) = delete;
  ScopedSingleThreadedBlas& operator=(const ScopedSingleThreadedBlas&) = delete;

 private:
  int saved_;
};

// Asks the kernel to back a large buffer with transparent huge pages (where THP is in "madvise"
// mode, as on Debian): the column-sum kernels read short column segments far apart, and with 4 KiB
// pages every segment of a matrix beyond the caches is a TLB miss. Must precede the first touch.
// A hint: where it is refused, nothing changes but the speed.
void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kPage = 4096;
  const auto begin = (reinterpret_cast<std::uintptr_t>(data) + kPage - 1) & ~(kPage - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(kPage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

void check_request(const FieldsRequest& request, const Medium& medium) {
  OPU_CHECK(request.n_in >= 1 && request.n_in <= medium.n_in(), "n_in outside the medium");
  OPU_CHECK(request.n_out >= 1 && request.n_out <= medium.n_out(), "n_out outside the medium");
  OPU_CHECK(request.batch >= 1, "empty batch");
  OPU_CHECK(static_cast<std::int64_t>(request.packed.size()) ==
                request.batch * packed_bytes(request.n_in),
            "packed frames have the wrong size");
}

// --- dense ---------------------------------------------------------------------------------------

class DenseMedium final : public Medium {
 public:
  DenseMedium(std::uint64_t seed, std::int64_t n_in, std::int64_t n_out)
      : Medium(seed, n_in, n_out) {}

  std::string_view name() const override { return "dense"; }
  std::size_t memory_bytes() const override {
    std::lock_guard lock(mutex_);
    return cache_.size() * dense_matrix_bytes(n_in(), padded_rows(n_out()));
  }

  void fields(const FieldsRequest& request, Eigen::MatrixXcf& out) const override {
    check_request(request, *this);
    const std::shared_ptr<const Eigen::MatrixXcf> matrix =
        realisation(request.realisation, request.threads);
    out.setZero(request.n_out, request.batch);
    if (request.batch >= kGemmMinBatch) {
      gemm_fields(*matrix, request, out);
    } else if (request.batch >= kTableMinBatch) {
      table_fields(*matrix, request, out);
    } else if (walks_columns(request)) {
      stream_fields(*matrix, request, out);
    } else {
      sum_fields(*matrix, request, out);
    }
  }

 private:
  std::shared_ptr<const Eigen::MatrixXcf> realisation(std::uint64_t k, int threads) const {
    std::lock_guard lock(mutex_);
    if (auto found = cache_.find(k); found != cache_.end()) return found->second;
    // Drift walks forward through realisations; keep the two newest (the pair a drifting medium
    // interpolates between) and drop older ones.
    while (cache_.size() >= 2) cache_.erase(cache_.begin());
    auto matrix = std::make_shared<Eigen::MatrixXcf>(padded_rows(n_out()), n_in());
    advise_huge_pages(matrix->data(), static_cast<std::size_t>(matrix->size()) * sizeof(Complex));
    matrix->setZero();  // padding rows stay zero; only rows [0, n_out) are ever read
    const TransmissionMatrixGenerator generator(seed(), n_in(), k);
    const std::int64_t blocks = (n_in() + kSumBlockCols - 1) / kSumBlockCols;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t block = 0; block < blocks; ++block) {
      const std::int64_t col0 = block * kSumBlockCols;
      const std::int64_t cols = std::min(kSumBlockCols, n_in() - col0);
      generator.fill_tile(0, n_out(), col0, cols, matrix->data() + col0 * matrix->rows(),
                          matrix->rows());
    }
    cache_.emplace(k, matrix);
    return matrix;
  }

  // Whether stream_fields() takes this request (see kWalkFieldBytes).
  static bool walks_columns(const FieldsRequest& request) {
    const auto field_bytes = static_cast<std::size_t>(
        request.batch * walk_stripe_rows(request.n_out, std::max(1, request.threads)) * 8);
    return beyond_caches(request.n_in, request.n_out) && field_bytes <= kWalkFieldBytes;
  }

  // Matrices beyond the caches, few frames: walk R column after column, each column read once
  // and contiguously (what the prefetchers like), kWalkGroup columns at a time, added to every
  // frame that selects them. Columns no frame selects are never read. Each element still
  // receives its columns in increasing order: the same sums, bit for bit, as the blocked kernel
  // and the streamed backend.
  static void stream_fields(const Eigen::MatrixXcf& matrix, const FieldsRequest& request,
                            Eigen::MatrixXcf& out) {
    const FrameWords frames(request.packed, request.n_in, request.batch);
    std::vector<std::uint64_t> any(static_cast<std::size_t>(frames.words_per_frame), 0);
    for (std::int64_t b = 0; b < request.batch; ++b) {
      for (std::int64_t w = 0; w < frames.words_per_frame; ++w) any[w] |= frames.frame(b)[w];
    }
    const int threads = std::max(1, request.threads);
    const std::int64_t stripe = walk_stripe_rows(request.n_out, threads);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < threads; ++t) {
      const std::int64_t row0 = std::min<std::int64_t>(t * stripe, request.n_out);
      const std::int64_t rows = std::min<std::int64_t>(stripe, request.n_out - row0);
      if (rows <= 0) continue;
      ColumnWalk walk(frames, request.batch, 2 * rows);
      for_each_set_bit(any.data(), 0, request.n_in, [&](std::int64_t j) {
        walk.add(j, reinterpret_cast<const float*>(matrix.data() + j * matrix.rows() + row0));
      });
      walk.finish(out, row0);
    }
  }

  static void sum_fields(const Eigen::MatrixXcf& matrix, const FieldsRequest& request,
                         Eigen::MatrixXcf& out) {
    const FrameWords frames(request.packed, request.n_in, request.batch);
    const std::int64_t panels = (request.n_out + kPanelRows - 1) / kPanelRows;
#pragma omp parallel for schedule(static) num_threads(request.threads)
    for (std::int64_t panel = 0; panel < panels; ++panel) {
      const std::int64_t row0 = panel * kPanelRows;
      const std::int64_t rows = std::min(kPanelRows, request.n_out - row0);
      // Blocks keep a chunk of columns in L1 for the batch's next frames; a single frame has
      // none, and walking all its columns per chunk saves the accumulators' loads and stores per
      // block (1024², one thread: 75-81 -> 71-74 us per call). The same order: the same bits.
      const std::int64_t block_cols = request.batch == 1 ? request.n_in : kSumBlockCols;
      for (std::int64_t col0 = 0; col0 < request.n_in; col0 += block_cols) {
        const std::int64_t cols = std::min(block_cols, request.n_in - col0);
        column_sums(matrix.data() + row0, matrix.rows(), 0, row0, rows, col0, cols, frames,
                    request.batch, out);
      }
    }
  }

  // Panels of kTablePanelRows rows over our threads, each through table_sums(); beyond the
  // caches the kernel prefetches the columns it reads next.
  static void table_fields(const Eigen::MatrixXcf& matrix, const FieldsRequest& request,
                           Eigen::MatrixXcf& out) {
    const FrameWords frames(request.packed, request.n_in, request.batch);
    const bool from_memory = beyond_caches(request.n_in, request.n_out);
    const std::int64_t panels = (request.n_out + kTablePanelRows - 1) / kTablePanelRows;
#pragma omp parallel for schedule(static) num_threads(request.threads)
    for (std::int64_t panel = 0; panel < panels; ++panel) {
      const std::int64_t row0 = panel * kTablePanelRows;
      const std::int64_t rows = std::min(kTablePanelRows, request.n_out - row0);
      table_sums_for_shape(request.n_in, request.n_out, matrix.data() + row0, matrix.rows(), 0,
                           row0, rows, 0, request.n_in, frames, request.batch, from_memory, out);
    }
  }

  // OpenBLAS sgemm on R viewed as floats, rows split over our own threads (each a single-threaded
  // sgemm on its rows): `threads` alone decides the parallelism, and each output row is computed
  // whole by one call, so the result does not depend on the thread count.
  static void gemm_fields(const Eigen::MatrixXcf& matrix, const FieldsRequest& request,
                          Eigen::MatrixXcf& out) {
    Eigen::MatrixXf inputs(request.n_in, request.batch);
    unpack_frames_to_float(request.packed, request.n_in, request.batch, inputs);
    const FloatMatrixMap real_view(reinterpret_cast<const float*>(matrix.data()), 2 * request.n_out,
                                   request.n_in, Eigen::OuterStride<>(2 * matrix.rows()));
    Eigen::Map<Eigen::MatrixXf> out_view(reinterpret_cast<float*>(out.data()), 2 * request.n_out,
                                         request.batch);
    const ScopedSingleThreadedBlas single_threaded_blas;
    // Panels depend on n_out only (never on the thread count): about eight of them, each large
    // enough that sgemm's packing of the inputs (once per call) stays a few percent of its work.
    const std::int64_t panel_rows =
        std::clamp<std::int64_t>((request.n_out / 8 + 63) / 64 * 64, 256, 1024);
    const std::int64_t panels = (request.n_out + panel_rows - 1) / panel_rows;
#pragma omp parallel for schedule(static) num_threads(request.threads)
    for (std::int64_t panel = 0; panel < panels; ++panel) {
      const std::int64_t row0 = 2 * panel * panel_rows;
      const std::int64_t rows = std::min(2 * panel_rows, 2 * request.n_out - row0);
      out_view.middleRows(row0, rows).noalias() = real_view.middleRows(row0, rows) * inputs;
    }
  }

  mutable std::mutex mutex_;
  mutable std::map<std::uint64_t, std::shared_ptr<const Eigen::MatrixXcf>> cache_;
};

// --- streamed ------------------------------------------------------------------------------------

// Tile of R regenerated per (panel, column block): 256 rows x 512 columns x 8 bytes = 1 MiB per
// thread, in L2, whatever the matrix size.
constexpr std::int64_t kStreamTileCols = 512;

class StreamedMedium final : public Medium {
 public:
  StreamedMedium(std::uint64_t seed, std::int64_t n_in, std::int64_t n_out)
      : Medium(seed, n_in, n_out) {}

  std::string_view name() const override { return "streamed"; }
  std::size_t memory_bytes() const override { return 0; }

  void fields(const FieldsRequest& request, Eigen::MatrixXcf& out) const override {
    check_request(request, *this);
    out.setZero(request.n_out, request.batch);
    const TransmissionMatrixGenerator generator(seed(), n_in(), request.realisation);
    const bool use_gemm = request.batch >= kGemmMinBatch;
    std::optional<FrameWords> frames;
    Eigen::MatrixXf inputs;
    if (use_gemm) {
      inputs.resize(request.n_in, request.batch);
      unpack_frames_to_float(request.packed, request.n_in, request.batch, inputs);
    } else {
      frames.emplace(request.packed, request.n_in, request.batch);
    }
    const ScopedSingleThreadedBlas single_threaded_blas;
    const std::int64_t panels = (request.n_out + kPanelRows - 1) / kPanelRows;
#pragma omp parallel num_threads(request.threads)
    {
      Eigen::MatrixXcf tile(padded_rows(kPanelRows), kStreamTileCols);
#pragma omp for schedule(static)
      for (std::int64_t panel = 0; panel < panels; ++panel) {
        const std::int64_t row0 = panel * kPanelRows;
        const std::int64_t rows = std::min(kPanelRows, request.n_out - row0);
        for (std::int64_t col0 = 0; col0 < request.n_in; col0 += kStreamTileCols) {
          const std::int64_t cols = std::min(kStreamTileCols, request.n_in - col0);
          generator.fill_tile(row0, rows, col0, cols, tile.data(), tile.rows());
          if (use_gemm) {
            const FloatMatrixMap real_view(reinterpret_cast<const float*>(tile.data()), 2 * rows,
                                           cols, Eigen::OuterStride<>(2 * tile.rows()));
            Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> out_view(
                reinterpret_cast<float*>(out.data() + row0), 2 * rows, request.batch,
                Eigen::OuterStride<>(2 * out.rows()));
            out_view.noalias() += real_view * inputs.middleRows(col0, cols);
          } else if (request.batch >= kTableMinBatch) {
            table_sums_for_shape(request.n_in, request.n_out, tile.data(), tile.rows(), col0, row0,
                                 rows, col0, cols, *frames, request.batch,
                                 /*prefetch=*/false, out);
          } else {
            for (std::int64_t block = col0; block < col0 + cols; block += kSumBlockCols) {
              column_sums(tile.data(), tile.rows(), col0, row0, rows, block,
                          std::min(kSumBlockCols, col0 + cols - block), *frames, request.batch,
                          out);
            }
          }
        }
      }
    }
  }
};

}  // namespace

std::complex<float> Medium::entry(std::int64_t row, std::int64_t col,
                                  std::uint64_t realisation) const {
  return TransmissionMatrixGenerator(seed_, n_in_, realisation).entry(row, col);
}

std::unique_ptr<Medium> make_dense_medium(std::uint64_t seed, std::int64_t n_in,
                                          std::int64_t n_out) {
  return std::make_unique<DenseMedium>(seed, n_in, n_out);
}

std::unique_ptr<Medium> make_streamed_medium(std::uint64_t seed, std::int64_t n_in,
                                             std::int64_t n_out) {
  return std::make_unique<StreamedMedium>(seed, n_in, n_out);
}

}  // namespace opu::sim
