// futexWait / futexWake on int32 words of a shared mapping.
#include "futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "common.h"
#include "mapping.h"

namespace commy {
namespace {

// Anything beyond ~31 years is treated as "forever" so the timespec math
// below cannot overflow.
constexpr double kForeverMs = 1e12;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// The shared preamble of futexWait/futexWake: (buffer, byteOffset, number, ...).
// Returns the word's address and the third argument, or nullptr after
// throwing.
int32_t* WordAndNumber(const Napi::CallbackInfo& info, const char* name,
                       double* number) {
  Mapping* m = GetMapping(info, 0);
  if (m == nullptr) return nullptr;
  size_t off;
  if (!GetWordOffset(info, 1, "byteOffset", m, &off)) return nullptr;
  if (!info[2].IsNumber()) {
    ThrowType(info.Env(), "ERR_INVALID_ARG_TYPE",
              std::string("The \"") + name + "\" argument must be a number");
    return nullptr;
  }
  *number = info[2].As<Napi::Number>().DoubleValue();
  return reinterpret_cast<int32_t*>(static_cast<char*>(m->addr) + off);
}

Napi::Value JsFutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double e;
  int32_t* word = WordAndNumber(info, "expected", &e);
  if (word == nullptr) return Napi::Value();
  // Accept both Int32Array and Uint32Array views of the word.
  if (!(e >= -2147483648.0 && e <= 4294967295.0) || e != static_cast<int64_t>(e)) {
    ThrowRange(env, "ERR_OUT_OF_RANGE",
               "The \"expected\" argument must be an int32 or uint32 integer");
    return Napi::Value();
  }
  const int32_t expected =
      static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(e)));
  double timeout;
  if (!GetTimeout(info, 3, "timeoutMs", &timeout)) return Napi::Value();
  uint32_t bitset;
  if (!GetBitset(info, 4, &bitset)) return Napi::Value();
  int r = FutexWait(word, expected, timeout, bitset);
  if (r < 0) {
    ThrowErrno(env, "ERR_COMMY_FUTEX", "futex", -r);
    return Napi::Value();
  }
  return Napi::Number::New(env, r);
}

Napi::Value JsFutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double c;
  int32_t* word = WordAndNumber(info, "count", &c);
  if (word == nullptr) return Napi::Value();
  // Infinity (like Atomics.notify) or anything huge means "everyone".
  if (!(c >= 0)) {
    ThrowRange(env, "ERR_OUT_OF_RANGE", "The \"count\" argument must be >= 0");
    return Napi::Value();
  }
  const int count = c >= INT_MAX ? INT_MAX : static_cast<int>(c);
  uint32_t bitset;
  if (!GetBitset(info, 3, &bitset)) return Napi::Value();
  long r = FutexWake(word, count, bitset);
  if (r < 0) {
    ThrowErrno(env, "ERR_COMMY_FUTEX", "futex", static_cast<int>(-r));
    return Napi::Value();
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

}  // namespace

int FutexWait(int32_t* addr, int32_t expected, double timeout_ms,
              uint32_t bitset) {
  const bool forever = timeout_ms < 0 || timeout_ms >= kForeverMs;
  const int64_t deadline =
      forever ? 0 : NowNs() + static_cast<int64_t>(timeout_ms * 1e6);
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a retry
  // after EINTR needs no recomputation. A zero timeout still reaches the
  // kernel once, so it reports "not equal" (like Atomics.wait).
  timespec abs;
  abs.tv_sec = static_cast<time_t>(deadline / 1000000000LL);
  abs.tv_nsec = static_cast<long>(deadline % 1000000000LL);
  for (;;) {
    // Deliberately not the PRIVATE variant: the word lives in a shared file
    // mapping and is woken from other processes.
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, expected,
                     forever ? nullptr : &abs, nullptr, bitset);
    if (r == 0) return kFutexWoken;
    switch (errno) {
      case EAGAIN: return kFutexNotEqual;
      case ETIMEDOUT: return kFutexTimedOut;
      case EINTR: continue;
      default: return -errno;
    }
  }
}

long FutexWake(int32_t* addr, int count, uint32_t bitset) {
  long r = syscall(SYS_futex, addr, FUTEX_WAKE_BITSET, count, nullptr, nullptr,
                   bitset);
  return r < 0 ? -errno : r;
}

void InitFutex(Napi::Env env, Napi::Object exports) {
  exports.Set("futexWait", Napi::Function::New(env, JsFutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, JsFutexWake, "futexWake"));
}

}  // namespace commy
