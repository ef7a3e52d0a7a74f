// The interface between the emulated CUDA libraries (emulator/README.md):
// libcuda.so (driver.cpp) owns device memory, streams and the counters;
// libcublas.so (cublas.cpp) links against it and uses these entry points to
// check its operands and count its calls. lpaf reads the counters through
// lpaf_emu_counters (src/device/emulator.rs).
#pragma once
#include <cstdint>

extern "C" {

// Cumulative since the library was loaded. Every field is a plain count.
struct LpafEmuCounters {
    uint64_t kernel_launches;    // cuLaunchKernel calls that ran a grid
    uint64_t library_calls;      // cuBLAS / cuBLASLt entry points that did work (GEMMs)
    uint64_t host_syncs;         // stream / context / event synchronisations and blocking copies
    uint64_t h2d_bytes;          // host -> device bytes copied
    uint64_t d2h_bytes;          // device -> host bytes copied
    uint64_t d2d_bytes;          // device -> device bytes copied
    uint64_t memsets;            // memset calls
    uint64_t allocs;             // device allocations (sync and async)
    uint64_t frees;              // device frees
    uint64_t device_bytes;       // bytes allocated now
    uint64_t peak_device_bytes;  // the most bytes allocated at once
};

// A snapshot of the counters (thread-safe).
void lpaf_emu_counters(LpafEmuCounters* out);

// 1 when [p, p + bytes) lies inside one live device allocation, else 0.
// bytes == 0 is always in range.
int lpaf_emu_device_range(const void* p, uint64_t bytes);

// Counts one library call (a GEMM and the like) under `name`.
void lpaf_emu_count_library_call(const char* name);

// 1 when `stream` is the null stream or a live stream of the emulator.
int lpaf_emu_stream_valid(const void* stream);

// Prints "lpaf emulated GPU: <message>" to stderr (printf format).
void lpaf_emu_report(const char* fmt, ...);
}
