// Byte-run diff of two buffers with AVX-512 / AVX2 / portable kernels.
#pragma once

#include <napi.h>

namespace commy {

void InitDiff(Napi::Env env, Napi::Object exports);

}  // namespace commy
