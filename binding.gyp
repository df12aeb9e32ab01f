{
  "targets": [
    {
      "target_name": "commy_native",
      "sources": [
        "native/addon.cc",
        "native/mapping.cc",
        "native/futex.cc",
        "native/watcher.cc",
        "native/wake.cc",
        "native/diff.cc",
        "native/sigbus.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-fno-exceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-rtti"],
      "libraries": ["-lpthread"]
    }
  ]
}
