// Process-shared futex operations on int32 words of a file mapping.
#pragma once

#include <napi.h>

#include <cstdint>

namespace commy {

enum FutexResult : int { kFutexWoken = 0, kFutexTimedOut = 1, kFutexNotEqual = 2 };

// All bits: a waiter or waker with this bitset matches every other one.
constexpr uint32_t kAllBits = 0xffffffffu;

// Blocks while *addr == expected. timeout_ms < 0 waits forever. `bitset`
// selects which wakes reach this waiter (FUTEX_WAIT_BITSET). Returns a
// FutexResult, or -errno on an unexpected failure (EFAULT, EINVAL...).
int FutexWait(int32_t* addr, int32_t expected, double timeout_ms,
              uint32_t bitset = kAllBits);

// Wakes up to `count` waiters on addr in any process whose bitset shares a
// bit with `bitset`; returns how many.
long FutexWake(int32_t* addr, int count, uint32_t bitset = kAllBits);

void InitFutex(Napi::Env env, Napi::Object exports);

}  // namespace commy
