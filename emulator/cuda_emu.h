// Device-side emulation of the CUDA features kernels/*.cu use, so the same
// kernel source compiles with g++ into the emulated libcuda.so
// (emulator/README.md). Included before a kernel file; LPAF_EMULATED is
// defined so the few spots that must differ (dynamic shared memory) can.
//
// Execution model (emulator/fiber.cpp): one grid at a time in the process;
// the blocks of a grid run one after another on the launching OS thread,
// and the threads of a block are fibers that switch only at block barriers
// and warp collectives. So `__shared__` is a function-local static (one
// block is live at a time), threadIdx / blockIdx are plain globals the
// scheduler sets before resuming a fiber, and the collectives are checked
// the way compute-sanitizer's synccheck would: every lane named in a mask
// must exist, be alive and arrive at the same collective.
//
// Floating point: compile with -ffp-contract=off so that the __f*_rn
// intrinsics (plain operators here) round like the device's.
#pragma once

#define LPAF_EMULATED 1

#include <math.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

struct uint3_ {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// Set by the scheduler before it resumes a fiber (hidden: not exported).
extern uint3_ threadIdx;
extern uint3_ blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(4) uchar4 {
    unsigned char x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return {x, y, z, w}; }

// CUDA's integer min/max convert mixed operands silently; here they must
// match, so a mixed-signedness comparison is a compile error to look at.
template <class A, class B>
inline A min(A a, B b) {
    static_assert(std::is_same<A, B>::value, "min of mixed types (CUDA would convert silently)");
    return a < b ? a : b;
}
template <class A, class B>
inline A max(A a, B b) {
    static_assert(std::is_same<A, B>::value, "max of mixed types (CUDA would convert silently)");
    return a < b ? b : a;
}

// ---- arithmetic intrinsics ------------------------------------------------------------

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline double __longlong_as_double(long long v) {
    double d;
    std::memcpy(&d, &v, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long v;
    std::memcpy(&v, &d, 8);
    return v;
}
inline float __double2float_rn(double d) { return (float)d; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned)v); }

// Cache-hinted loads and stores are plain accesses on the host.
template <class T>
inline T __ldg(const T* p) {
    return *p;
}
template <class T>
inline T __ldcs(const T* p) {
    return *p;
}
template <class T>
inline void __stcs(T* p, T v) {
    *p = v;
}

// ---- atomics (integer only: the kernels use no floating-point atomics) ----------------

template <class T>
inline T emu_atomic_add(T* p, T v) {
    static_assert(std::is_integral<T>::value, "floating-point atomics are not allowed in lpaf kernels");
    return std::atomic_ref<T>(*p).fetch_add(v);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return emu_atomic_add(p, v); }
inline int atomicAdd(int* p, int v) { return emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return emu_atomic_add(p, v); }
inline int atomicMin(int* p, int v) {
    std::atomic_ref<int> a(*p);
    int cur = a.load();
    while (v < cur && !a.compare_exchange_weak(cur, v)) {
    }
    return cur;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> a(*p);
    unsigned cur = a.load();
    while (v > cur && !a.compare_exchange_weak(cur, v)) {
    }
    return cur;
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- barriers and warp collectives (emulator/fiber.cpp) -------------------------------

enum EmuWarpOp : int {
    EMU_SHFL_IDX = 0,
    EMU_SHFL_UP = 1,
    EMU_SHFL_DOWN = 2,
    EMU_SHFL_XOR = 3,
    EMU_BALLOT = 4,
    EMU_MATCH_ANY = 5,
    EMU_SYNCWARP = 6,
};

void emu_syncthreads();
// Posts `value` for warp collective `op` over the lanes of `mask` and
// returns this lane's result once every lane of the mask has arrived.
unsigned long long emu_warp_collective(EmuWarpOp op, unsigned mask, unsigned long long value, int param, int width);
// The launch's dynamic shared memory (sharedMemBytes of cuLaunchKernel).
void* emu_dynamic_shared();

inline void __syncthreads() { emu_syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu_warp_collective(EMU_SYNCWARP, mask, 0, 0, 32); }

template <class T>
inline unsigned long long emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 64 bits");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T emu_from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return emu_from_bits<T>(emu_warp_collective(EMU_SHFL_IDX, mask, emu_bits(v), src, width));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_from_bits<T>(emu_warp_collective(EMU_SHFL_UP, mask, emu_bits(v), (int)delta, width));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_from_bits<T>(emu_warp_collective(EMU_SHFL_DOWN, mask, emu_bits(v), (int)delta, width));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return emu_from_bits<T>(emu_warp_collective(EMU_SHFL_XOR, mask, emu_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)emu_warp_collective(EMU_BALLOT, mask, pred != 0, 0, 32);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T v) {
    return (unsigned)emu_warp_collective(EMU_MATCH_ANY, mask, emu_bits(v), 0, 32);
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == __ballot_sync(mask, 1); }

// ---- kernel registration (emulator/driver.cpp) ----------------------------------------

// One kernel of one module: its name and a caller that unpacks
// cuLaunchKernel's parameter array by the kernel's real C++ signature.
struct EmuKernel {
    const char* module;
    const char* name;
    void* fn;
    void (*call)(void* fn, void** params);
    unsigned nparams;
};

template <class... A, unsigned long... I>
inline void emu_call_unpacked(void (*k)(A...), void** params, std::integer_sequence<unsigned long, I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(params[I])...);
}
template <class... A>
inline void emu_call_erased(void* fn, void** params) {
    emu_call_unpacked(reinterpret_cast<void (*)(A...)>(fn), params,
                      std::make_integer_sequence<unsigned long, sizeof...(A)>{});
}
template <class... A>
inline EmuKernel emu_kernel(const char* module, const char* name, void (*k)(A...)) {
    return EmuKernel{module, name, reinterpret_cast<void*>(k), &emu_call_erased<A...>, (unsigned)sizeof...(A)};
}

// Registers a module's kernels and the FNV-1a hash of its fatbin, by which
// cuModuleLoadData recognises the image.
void emu_register_module(const char* module, unsigned long long image_hash, const EmuKernel* kernels, unsigned n);
