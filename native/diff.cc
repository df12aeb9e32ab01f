// diff(a, b): maximal runs of differing bytes as [start, end) pairs.
//
// Every kernel turns a block of bytes into a bitmask (bit i = byte i
// differs) and feeds it to RunBuilder, which finds run edges with bit
// tricks. All-equal blocks are skipped before any mask work, since the usual
// input is a large buffer with a handful of changes.
#include "diff.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace commy {
namespace {

struct RunBuilder {
  std::vector<uint32_t>* out;
  uint64_t in_run = 0;  // 1 if the byte before the current block differs
  uint32_t start = 0;   // start of the open run when in_run

  // Bit i of `prev` is the state of byte i-1, so m ^ prev marks every byte
  // where the state flips: a run start if the byte differs, else a run end.
  inline void Edges(uint64_t m, uint64_t edges, size_t base) {
    while (edges) {
      const unsigned i = static_cast<unsigned>(__builtin_ctzll(edges));
      const uint32_t pos = static_cast<uint32_t>(base + i);
      if ((m >> i) & 1) {
        start = pos;
      } else {
        out->push_back(start);
        out->push_back(pos);
      }
      edges &= edges - 1;
    }
  }

  // 64-byte block at `base`.
  inline void Feed64(uint64_t m, size_t base) {
    Edges(m, m ^ ((m << 1) | in_run), base);
    in_run = m >> 63;
  }

  // Partial block of 1..63 bytes.
  inline void FeedN(uint64_t m, unsigned bits, size_t base) {
    const uint64_t valid = (1ULL << bits) - 1;
    Edges(m, (m ^ ((m << 1) | in_run)) & valid, base);
    in_run = (m >> (bits - 1)) & 1;
  }

  inline void Finish(size_t end) {
    if (in_run) {
      out->push_back(start);
      out->push_back(static_cast<uint32_t>(end));
      in_run = 0;
    }
  }
};

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // unaligned-safe; compiles to one mov
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);  // keep byte k of memory in bits 8k..8k+7
#endif
  return v;
}

// Bit k set iff byte k of x is non-zero (SWAR high-bit test, then a multiply
// that gathers the eight high bits into the top byte without carries).
inline uint64_t ByteMask8(uint64_t x) {
  const uint64_t lo7 = 0x7f7f7f7f7f7f7f7fULL;
  const uint64_t t = (((x & lo7) + lo7) | x) & ~lo7;
  return ((t >> 7) * 0x0102040810204080ULL) >> 56;
}

// Bytes [i, n) with n - i < 64: words, then single bytes.
inline void Tail(const uint8_t* a, const uint8_t* b, size_t i, size_t n,
                 RunBuilder& rb) {
  const size_t len = n - i;
  if (len == 0) return;
  uint64_t m = 0;
  size_t k = 0;
  for (; k + 8 <= len; k += 8)
    m |= ByteMask8(Load64(a + i + k) ^ Load64(b + i + k)) << k;
  for (; k < len; k++) m |= static_cast<uint64_t>(a[i + k] != b[i + k]) << k;
  rb.FeedN(m, static_cast<unsigned>(len), i);
}

void DiffU64(const uint8_t* a, const uint8_t* b, size_t n, RunBuilder& rb) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t x[8];
    uint64_t any = 0;
    for (int k = 0; k < 8; k++) {
      x[k] = Load64(a + i + 8 * k) ^ Load64(b + i + 8 * k);
      any |= x[k];
    }
    if (any == 0 && !rb.in_run) continue;
    uint64_t m = 0;
    for (int k = 0; k < 8; k++) m |= ByteMask8(x[k]) << (8 * k);
    rb.Feed64(m, i);
  }
  Tail(a, b, i, n, rb);
}

// Helpers carry the target attribute too: lambdas would not inherit it.
__attribute__((target("avx2"))) inline __m256i Eq32(const uint8_t* p,
                                                    const uint8_t* q) {
  return _mm256_cmpeq_epi8(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
}

// Mask of differing bytes of a 64-byte block from its two equality halves.
__attribute__((target("avx2"))) inline uint64_t Neq64(__m256i eq_lo,
                                                      __m256i eq_hi) {
  const uint32_t lo = ~static_cast<uint32_t>(_mm256_movemask_epi8(eq_lo));
  const uint32_t hi = ~static_cast<uint32_t>(_mm256_movemask_epi8(eq_hi));
  return lo | (static_cast<uint64_t>(hi) << 32);
}

__attribute__((target("avx2"))) void DiffAvx2(const uint8_t* a,
                                              const uint8_t* b, size_t n,
                                              RunBuilder& rb) {
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const __m256i e0 = Eq32(a + i, b + i);
    const __m256i e1 = Eq32(a + i + 32, b + i + 32);
    const __m256i e2 = Eq32(a + i + 64, b + i + 64);
    const __m256i e3 = Eq32(a + i + 96, b + i + 96);
    const __m256i all =
        _mm256_and_si256(_mm256_and_si256(e0, e1), _mm256_and_si256(e2, e3));
    if (static_cast<uint32_t>(_mm256_movemask_epi8(all)) == 0xffffffffu &&
        !rb.in_run)
      continue;
    rb.Feed64(Neq64(e0, e1), i);
    rb.Feed64(Neq64(e2, e3), i + 64);
  }
  for (; i + 64 <= n; i += 64) {
    rb.Feed64(Neq64(Eq32(a + i, b + i), Eq32(a + i + 32, b + i + 32)), i);
  }
  Tail(a, b, i, n, rb);
}

__attribute__((target("avx512f,avx512bw"))) inline uint64_t Neq512(
    const uint8_t* p, const uint8_t* q) {
  return _mm512_cmpneq_epu8_mask(_mm512_loadu_si512(p), _mm512_loadu_si512(q));
}

__attribute__((target("avx512f,avx512bw"))) void DiffAvx512(const uint8_t* a,
                                                            const uint8_t* b,
                                                            size_t n,
                                                            RunBuilder& rb) {
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    const uint64_t m0 = Neq512(a + i, b + i);
    const uint64_t m1 = Neq512(a + i + 64, b + i + 64);
    const uint64_t m2 = Neq512(a + i + 128, b + i + 128);
    const uint64_t m3 = Neq512(a + i + 192, b + i + 192);
    if ((m0 | m1 | m2 | m3) == 0 && !rb.in_run) continue;
    rb.Feed64(m0, i);
    rb.Feed64(m1, i + 64);
    rb.Feed64(m2, i + 128);
    rb.Feed64(m3, i + 192);
  }
  for (; i + 64 <= n; i += 64) rb.Feed64(Neq512(a + i, b + i), i);
  Tail(a, b, i, n, rb);
}

using Kernel = void (*)(const uint8_t*, const uint8_t*, size_t, RunBuilder&);

struct Cpu {
  bool avx512;
  bool avx2;
};

const Cpu& GetCpu() {
  static const Cpu cpu = [] {
    __builtin_cpu_init();
    // libgcc also checks XGETBV, i.e. that the OS saves the wide registers.
    return Cpu{__builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw"),
               __builtin_cpu_supports("avx2") != 0};
  }();
  return cpu;
}

Napi::Value JsDiff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (size_t i = 0; i < 2; i++) {
    if (!info[i].IsTypedArray() ||
        info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowType(env, "ERR_INVALID_ARG_TYPE",
                std::string("The \"") + (i ? "b" : "a") +
                    "\" argument must be a Uint8Array");
      return Napi::Value();
    }
  }
  const Cpu& cpu = GetCpu();
  Kernel kernel = cpu.avx512 ? DiffAvx512 : cpu.avx2 ? DiffAvx2 : DiffU64;
  if (!info[2].IsUndefined()) {
    const std::string impl =
        info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    bool ok = true;
    if (impl == "auto") {
    } else if (impl == "avx512") {
      ok = cpu.avx512;
      kernel = DiffAvx512;
    } else if (impl == "avx2") {
      ok = cpu.avx2;
      kernel = DiffAvx2;
    } else if (impl == "u64") {
      kernel = DiffU64;
    } else {
      ThrowType(env, "ERR_INVALID_ARG_VALUE",
                "The \"impl\" argument must be 'auto', 'avx512', 'avx2' or "
                "'u64'");
      return Napi::Value();
    }
    if (!ok) {
      ThrowError(env, "ERR_COMMY_UNSUPPORTED",
                 "diff implementation '" + impl + "' is not supported by this CPU");
      return Napi::Value();
    }
  }

  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  Napi::Uint8Array b = info[1].As<Napi::Uint8Array>();
  const size_t la = a.ElementLength(), lb = b.ElementLength();
  // Run bounds are returned as uint32.
  if (la > UINT32_MAX || lb > UINT32_MAX) {
    ThrowRange(env, "ERR_OUT_OF_RANGE", "diff inputs must be smaller than 4 GiB");
    return Napi::Value();
  }
  const size_t n = la < lb ? la : lb;
  const size_t max = la < lb ? lb : la;

  std::vector<uint32_t> runs;
  RunBuilder rb{&runs};
  if (n > 0) kernel(a.Data(), b.Data(), n, rb);
  // Bytes present in only one input count as differing.
  if (max > n && !rb.in_run) {
    rb.start = static_cast<uint32_t>(n);
    rb.in_run = 1;
  }
  rb.Finish(max);

  Napi::Uint32Array out = Napi::Uint32Array::New(env, runs.size());
  if (env.IsExceptionPending()) return Napi::Value();
  if (!runs.empty())
    std::memcpy(out.Data(), runs.data(), runs.size() * sizeof(uint32_t));
  return out;
}

Napi::Value JsDiffImpls(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Cpu& cpu = GetCpu();
  Napi::Array arr = Napi::Array::New(env);
  uint32_t i = 0;
  if (cpu.avx512) arr.Set(i++, "avx512");
  if (cpu.avx2) arr.Set(i++, "avx2");
  arr.Set(i++, "u64");
  return arr;
}

Napi::Value JsCpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Cpu& cpu = GetCpu();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx512", Napi::Boolean::New(env, cpu.avx512));
  o.Set("avx2", Napi::Boolean::New(env, cpu.avx2));
  return o;
}

}  // namespace

void InitDiff(Napi::Env env, Napi::Object exports) {
  exports.Set("diff", Napi::Function::New(env, JsDiff, "diff"));
  exports.Set("diffImpls", Napi::Function::New(env, JsDiffImpls, "diffImpls"));
  exports.Set("cpu", Napi::Function::New(env, JsCpu, "cpu"));
}

}  // namespace commy
