// Process-shared futex operations on int32 words of a file mapping.
#pragma once

#include <napi.h>

#include <cstdint>

namespace commy {

enum FutexResult : int { kFutexWoken = 0, kFutexTimedOut = 1, kFutexNotEqual = 2 };

// Blocks while *addr == expected. timeout_ms < 0 waits forever. Returns a
// FutexResult, or -errno on an unexpected failure (EFAULT, EINVAL...).
int FutexWait(int32_t* addr, int32_t expected, double timeout_ms);

// Wakes up to `count` waiters on addr in any process; returns how many.
long FutexWake(int32_t* addr, int count);

void InitFutex(Napi::Env env, Napi::Object exports);

}  // namespace commy
