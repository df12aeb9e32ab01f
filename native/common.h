// Shared helpers: error throwing with Node-style `code` properties and
// argument validation. Every helper returns false after throwing so callers
// can bail out with `return` (C++ exceptions are disabled).
#pragma once

#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace commy {

// napi_throw_*_error attach `code` for us, which node-addon-api's
// Napi::Error::New does not.
inline void ThrowType(Napi::Env env, const char* code, const std::string& msg) {
  napi_throw_type_error(env, code, msg.c_str());
}
inline void ThrowRange(Napi::Env env, const char* code, const std::string& msg) {
  napi_throw_range_error(env, code, msg.c_str());
}
inline void ThrowError(Napi::Env env, const char* code, const std::string& msg) {
  napi_throw_error(env, code, msg.c_str());
}

// System-call failure: message carries strerror, plus errno/syscall
// properties like Node's own fs errors.
inline void ThrowErrno(Napi::Env env, const char* code, const char* syscall,
                       int err) {
  Napi::Error e = Napi::Error::New(
      env, std::string(syscall) + " failed: " + std::strerror(err));
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

// Reads info[i] as a non-negative integer <= max (max <= 2^53). NaN,
// fractions and non-numbers are rejected rather than silently truncated.
inline bool GetIndex(const Napi::CallbackInfo& info, size_t i, const char* name,
                     uint64_t max, uint64_t* out) {
  Napi::Env env = info.Env();
  if (!info[i].IsNumber()) {
    ThrowType(env, "ERR_INVALID_ARG_TYPE",
              std::string("The \"") + name + "\" argument must be a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != std::floor(d) || d > static_cast<double>(max)) {
    ThrowRange(env, "ERR_OUT_OF_RANGE",
               std::string("The \"") + name +
                   "\" argument must be an integer >= 0 and <= " +
                   std::to_string(max));
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

// Timeout in ms: negative or +Infinity means "wait forever" (returns -1).
inline bool GetTimeout(const Napi::CallbackInfo& info, size_t i,
                       const char* name, double* out) {
  if (!info[i].IsNumber()) {
    ThrowType(info.Env(), "ERR_INVALID_ARG_TYPE",
              std::string("The \"") + name + "\" argument must be a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (std::isnan(d)) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE",
               std::string("The \"") + name + "\" argument must not be NaN");
    return false;
  }
  *out = (d < 0 || std::isinf(d)) ? -1.0 : d;
  return true;
}

// Optional futex bitset (absent/undefined = all bits). Any int32 or uint32
// pattern is accepted; 0 matches nothing, which the kernel refuses, so it is
// refused here first.
inline bool GetBitset(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  if (info.Length() <= i || info[i].IsUndefined()) {
    *out = 0xffffffffu;
    return true;
  }
  if (!info[i].IsNumber()) {
    ThrowType(info.Env(), "ERR_INVALID_ARG_TYPE",
              "The \"bitset\" argument must be a number");
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= -2147483648.0 && d <= 4294967295.0) || d != static_cast<int64_t>(d) || d == 0) {
    ThrowRange(info.Env(), "ERR_OUT_OF_RANGE",
               "The \"bitset\" argument must be a non-zero int32 or uint32");
    return false;
  }
  *out = static_cast<uint32_t>(static_cast<int64_t>(d));
  return true;
}

inline bool GetBool(const Napi::CallbackInfo& info, size_t i, const char* name,
                    bool* out) {
  if (!info[i].IsBoolean()) {
    ThrowType(info.Env(), "ERR_INVALID_ARG_TYPE",
              std::string("The \"") + name + "\" argument must be a boolean");
    return false;
  }
  *out = info[i].As<Napi::Boolean>().Value();
  return true;
}

}  // namespace commy
