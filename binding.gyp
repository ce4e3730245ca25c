{
  "targets": [
    {
      "target_name": "skein_native",
      "sources": [
        "src/engine/native/addon.cc",
        "src/engine/native/model.cc",
        "src/engine/native/threadpool.cc",
        "src/engine/native/kernels/traits.cc",
        "src/engine/native/kernels/generic.cc",
        "src/engine/native/kernels/avx2.cc",
        "src/engine/native/kernels/neon.cc",
        "src/engine/native/kernels/packed.cc",
        "src/engine/native/kernels/packed512.cc",
        "src/engine/native/kernels/attention512.cc",
        "src/engine/native/kernels/kquant512.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags": ["-O3", "-fno-math-errno"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-math-errno", "-Wall", "-Wno-unused-function"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CPLUSPLUSFLAGS": ["-O3", "-fno-math-errno"]
      }
    }
  ]
}
