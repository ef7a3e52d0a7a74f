// The emulated CUDA driver (libcuda.so): one device, its primary context,
// streams, events, device memory and modules whose functions are host builds
// of kernels/*.cu (emulator/README.md).
//
// Work queued on a stream runs at once, in the calling thread, so stream
// order holds trivially; grids run one at a time in the process (g_exec).
// What a real driver rejects is rejected with the same CUresult: launch
// limits of an sm_90 device, dynamic shared memory above 48 KiB without the
// opt-in attribute, copies and memsets outside a live allocation, frees of
// unknown pointers, unknown images and functions. Device memory is host
// memory from posix_memalign (256-byte aligned like cuMemAlloc), so a build
// with AddressSanitizer catches out-of-bounds kernel accesses on it.
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "emu_runtime.h"
#include "fiber.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_UNKNOWN = 999,
};

namespace {

// ---- the device ----------------------------------------------------------------------

// An H100-class sm_90 device (what the limits and attributes describe).
constexpr int kSmCount = 132;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kSharedPerBlock = 48 * 1024;
constexpr int kSharedPerBlockOptin = 227 * 1024;
constexpr unsigned long long kTotalMem = 80ull << 30;

int driver_version() {
    // LPAF_EMU_DRIVER_VERSION lets tests pose as an older driver.
    if (const char* v = std::getenv("LPAF_EMU_DRIVER_VERSION")) return std::atoi(v);
    return 13000;
}

struct Counters {
    std::atomic<uint64_t> kernel_launches{0}, library_calls{0}, host_syncs{0}, h2d_bytes{0}, d2h_bytes{0}, d2d_bytes{0},
        memsets{0}, allocs{0}, frees{0}, device_bytes{0}, peak_device_bytes{0};
};
Counters g_count;

std::atomic<bool> g_initialised{false};
thread_local void* t_current_ctx = nullptr;

struct Context {
    unsigned magic = 0xC0DE0001;
    int retains = 0;
};
Context g_primary;

struct Stream {
    unsigned magic = 0xC0DE0002;
};
struct Event {
    unsigned magic = 0xC0DE0003;
    bool recorded = false;
    std::chrono::steady_clock::time_point when;
};
struct Pool {
    unsigned magic = 0xC0DE0004;
    uint64_t release_threshold = 0;
};
Pool g_pool;

std::mutex g_mu;  // streams, events, allocations
std::set<Stream*> g_streams;
std::set<Event*> g_events;
std::map<uintptr_t, size_t> g_allocs;  // base -> bytes

bool stream_ok(void* s) {
    // The null stream and the two special handles (legacy, per-thread).
    if (s == nullptr || s == reinterpret_cast<void*>(1) || s == reinterpret_cast<void*>(2)) return true;
    std::lock_guard<std::mutex> l(g_mu);
    return g_streams.count(static_cast<Stream*>(s)) != 0;
}

// The allocation holding [p, p + bytes), or false.
bool in_device_memory(uintptr_t p, size_t bytes) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    return p >= it->first && p - it->first <= it->second && bytes <= it->second - (p - it->first);
}

std::string describe(uintptr_t p) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.upper_bound(p);
    char buf[200];
    if (it == g_allocs.begin()) {
        std::snprintf(buf, sizeof buf, "0x%llx is below every device allocation", (unsigned long long)p);
        return buf;
    }
    --it;
    std::snprintf(buf, sizeof buf, "0x%llx is byte %llu of the %llu-byte allocation at 0x%llx", (unsigned long long)p,
                  (unsigned long long)(p - it->first), (unsigned long long)it->second,
                  (unsigned long long)it->first);
    return buf;
}

CUresult need_init() { return g_initialised ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED; }

CUresult alloc(CUdeviceptr* out, size_t bytes) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    void* p = nullptr;
    uint64_t limit = kTotalMem;
    if (const char* v = std::getenv("LPAF_EMU_MEMORY_BYTES")) limit = std::strtoull(v, nullptr, 10);
    if (g_count.device_bytes + bytes > limit) return CUDA_ERROR_OUT_OF_MEMORY;
    if (posix_memalign(&p, 256, bytes) != 0 || !p) return CUDA_ERROR_OUT_OF_MEMORY;
    {
        std::lock_guard<std::mutex> l(g_mu);
        g_allocs[reinterpret_cast<uintptr_t>(p)] = bytes;
    }
    g_count.allocs++;
    const uint64_t now = g_count.device_bytes += bytes;
    uint64_t peak = g_count.peak_device_bytes;
    while (now > peak && !g_count.peak_device_bytes.compare_exchange_weak(peak, now)) {
    }
    *out = reinterpret_cast<uintptr_t>(p);
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
    size_t bytes;
    {
        std::lock_guard<std::mutex> l(g_mu);
        auto it = g_allocs.find(p);
        if (it == g_allocs.end()) return CUDA_ERROR_INVALID_VALUE;
        bytes = it->second;
        g_allocs.erase(it);
    }
    g_count.frees++;
    g_count.device_bytes -= bytes;
    std::free(reinterpret_cast<void*>(p));
    return CUDA_SUCCESS;
}

// ---- modules -------------------------------------------------------------------------

struct Module {
    unsigned magic = 0xC0DE0005;
    const char* name;
    std::vector<const EmuKernel*> kernels;
};
struct Function {
    unsigned magic = 0xC0DE0006;
    const EmuKernel* kernel;
    int max_dynamic_shared = kSharedPerBlock;
};

struct Registered {
    const char* module;
    unsigned long long hash;
    const EmuKernel* kernels;
    unsigned n;
};
std::vector<Registered>& registry() {
    static std::vector<Registered> r;
    return r;
}

std::mutex g_module_mu;
std::set<Module*> g_modules;
std::map<const EmuKernel*, Function*> g_functions;  // one handle per kernel, like the driver

// FNV-1a over the whole fatbin (its header gives the size).
unsigned long long fatbin_hash(const void* image, bool* ok) {
    const unsigned char* p = static_cast<const unsigned char*>(image);
    uint32_t magic;
    std::memcpy(&magic, p, 4);
    *ok = magic == 0xBA55ED50u;
    if (!*ok) return 0;
    uint16_t header;
    uint64_t body;
    std::memcpy(&header, p + 6, 2);
    std::memcpy(&body, p + 8, 8);
    const uint64_t size = header + body;
    unsigned long long h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < size; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

std::mutex g_exec;  // one grid at a time

void vreport(const char* fmt, va_list ap) {
    char buf[2048];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::fprintf(stderr, "lpaf emulated GPU: %s\n", buf);
}
void report(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void report(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
}

}  // namespace

void emu_register_module(const char* module, unsigned long long image_hash, const EmuKernel* kernels, unsigned n) {
    registry().push_back({module, image_hash, kernels, n});
}

// ---- the runtime interface (emu_runtime.h) -------------------------------------------

EXPORT void lpaf_emu_counters(LpafEmuCounters* out) {
    out->kernel_launches = g_count.kernel_launches;
    out->library_calls = g_count.library_calls;
    out->host_syncs = g_count.host_syncs;
    out->h2d_bytes = g_count.h2d_bytes;
    out->d2h_bytes = g_count.d2h_bytes;
    out->d2d_bytes = g_count.d2d_bytes;
    out->memsets = g_count.memsets;
    out->allocs = g_count.allocs;
    out->frees = g_count.frees;
    out->device_bytes = g_count.device_bytes;
    out->peak_device_bytes = g_count.peak_device_bytes;
}
EXPORT void lpaf_emu_reset_peak() { g_count.peak_device_bytes = g_count.device_bytes.load(); }
EXPORT int lpaf_emu_device_range(const void* p, uint64_t bytes) {
    return bytes == 0 || in_device_memory(reinterpret_cast<uintptr_t>(p), bytes);
}
EXPORT void lpaf_emu_count_library_call(const char*) { g_count.library_calls++; }
EXPORT int lpaf_emu_stream_valid(const void* s) { return stream_ok(const_cast<void*>(s)); }
EXPORT void lpaf_emu_report(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
}
// Says what this library is, for lpaf's device line.
EXPORT const char* lpaf_emu_identity() {
#if defined(__SANITIZE_ADDRESS__)
    return "lpaf emulated CUDA device (host CPU, AddressSanitizer memcheck)";
#else
    return "lpaf emulated CUDA device (host CPU)";
#endif
}

// ---- initialisation, device, context -------------------------------------------------

EXPORT CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    g_initialised = true;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDriverGetVersion(int* v) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = driver_version();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetCount(int* n) {
    if (CUresult r = need_init()) return r;
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (CUresult r = need_init()) return r;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", "lpaf emulated GPU (sm_90, 132 SMs, host CPU)");
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = kTotalMem;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::memcpy(uuid, "lpaf-emulated-gp", 16);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }
EXPORT CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *major = 9;
    *minor = 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
        case 1: *v = kMaxThreadsPerBlock; break;       // MAX_THREADS_PER_BLOCK
        case 2: *v = 1024; break;                      // MAX_BLOCK_DIM_X
        case 3: *v = 1024; break;                      // MAX_BLOCK_DIM_Y
        case 4: *v = 64; break;                        // MAX_BLOCK_DIM_Z
        case 5: *v = 2147483647; break;                // MAX_GRID_DIM_X
        case 6: *v = 65535; break;                     // MAX_GRID_DIM_Y
        case 7: *v = 65535; break;                     // MAX_GRID_DIM_Z
        case 8: *v = kSharedPerBlock; break;           // MAX_SHARED_MEMORY_PER_BLOCK
        case 9: *v = 65536; break;                     // TOTAL_CONSTANT_MEMORY
        case 10: *v = 32; break;                       // WARP_SIZE
        case 12: *v = 65536; break;                    // MAX_REGISTERS_PER_BLOCK
        case 13: *v = 1980000; break;                  // CLOCK_RATE (kHz)
        case 14: *v = 512; break;                      // TEXTURE_ALIGNMENT
        case 16: *v = kSmCount; break;                 // MULTIPROCESSOR_COUNT
        case 31: *v = 1; break;                        // CONCURRENT_KERNELS
        case 38: *v = 50 * 1024 * 1024; break;         // L2_CACHE_SIZE
        case 39: *v = 2048; break;                     // MAX_THREADS_PER_MULTIPROCESSOR
        case 41: *v = 1; break;                        // UNIFIED_ADDRESSING
        case 75: *v = 9; break;                        // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = 0; break;                        // COMPUTE_CAPABILITY_MINOR
        case 81: *v = 228 * 1024; break;               // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        case 82: *v = 65536; break;                    // MAX_REGISTERS_PER_MULTIPROCESSOR
        case 95: *v = 0; break;                        // COOPERATIVE_LAUNCH (not emulated)
        case 97: *v = kSharedPerBlockOptin; break;     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 106: *v = 32; break;                      // MAX_BLOCKS_PER_MULTIPROCESSOR
        case 115: *v = 1; break;                       // MEMORY_POOLS_SUPPORTED
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_mu);
    g_primary.retains++;
    *ctx = &g_primary;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> l(g_mu);
    if (g_primary.retains > 0) g_primary.retains--;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return cuDevicePrimaryCtxRelease_v2(d); }
EXPORT CUresult cuCtxSetCurrent(void* ctx) {
    if (ctx && ctx != &g_primary) return CUDA_ERROR_INVALID_CONTEXT;
    t_current_ctx = ctx;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetCurrent(void** ctx) {
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = t_current_ctx;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxPushCurrent_v2(void* ctx) { return cuCtxSetCurrent(ctx); }
EXPORT CUresult cuCtxPopCurrent_v2(void** ctx) {
    if (ctx) *ctx = t_current_ctx;
    t_current_ctx = nullptr;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetDevice(CUdevice* d) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    *d = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSynchronize() {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    g_count.host_syncs++;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetFlags(unsigned) { return CUDA_SUCCESS; }
EXPORT CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (total) *total = kTotalMem;
    if (free_bytes) *free_bytes = kTotalMem - g_count.device_bytes;
    return CUDA_SUCCESS;
}

// ---- streams and events --------------------------------------------------------------

EXPORT CUresult cuStreamCreate(void** s, unsigned flags) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (!s || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    Stream* st = new Stream;
    std::lock_guard<std::mutex> l(g_mu);
    g_streams.insert(st);
    *s = st;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamCreateWithPriority(void** s, unsigned flags, int) { return cuStreamCreate(s, flags); }
EXPORT CUresult cuStreamDestroy_v2(void* s) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_streams.find(static_cast<Stream*>(s));
    if (it == g_streams.end()) return CUDA_ERROR_INVALID_HANDLE;
    g_streams.erase(it);
    delete static_cast<Stream*>(s);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamSynchronize(void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    g_count.host_syncs++;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamQuery(void* s) { return stream_ok(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }
EXPORT CUresult cuStreamWaitEvent(void* s, void* e, unsigned) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> l(g_mu);
    return g_events.count(static_cast<Event*>(e)) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
EXPORT CUresult cuStreamIsCapturing(void* s, int* status) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    *status = 0;  // CU_STREAM_CAPTURE_STATUS_NONE: capture is not emulated
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventCreate(void** e, unsigned) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (!e) return CUDA_ERROR_INVALID_VALUE;
    Event* ev = new Event;
    std::lock_guard<std::mutex> l(g_mu);
    g_events.insert(ev);
    *e = ev;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventDestroy_v2(void* e) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_events.find(static_cast<Event*>(e));
    if (it == g_events.end()) return CUDA_ERROR_INVALID_HANDLE;
    g_events.erase(it);
    delete static_cast<Event*>(e);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventRecord(void* e, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_events.count(static_cast<Event*>(e))) return CUDA_ERROR_INVALID_HANDLE;
    Event* ev = static_cast<Event*>(e);
    ev->recorded = true;
    ev->when = std::chrono::steady_clock::now();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventRecordWithFlags(void* e, void* s, unsigned) { return cuEventRecord(e, s); }
EXPORT CUresult cuEventSynchronize(void* e) {
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_events.count(static_cast<Event*>(e))) return CUDA_ERROR_INVALID_HANDLE;
    g_count.host_syncs++;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventQuery(void* e) {
    std::lock_guard<std::mutex> l(g_mu);
    return g_events.count(static_cast<Event*>(e)) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
// Host time between the records: what the emulator took, not a GPU's time.
EXPORT CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) {
    std::lock_guard<std::mutex> l(g_mu);
    if (!g_events.count(static_cast<Event*>(a)) || !g_events.count(static_cast<Event*>(b)))
        return CUDA_ERROR_INVALID_HANDLE;
    Event* ea = static_cast<Event*>(a);
    Event* eb = static_cast<Event*>(b);
    if (!ea->recorded || !eb->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(eb->when - ea->when).count();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventElapsedTime(float* ms, void* a, void* b) { return cuEventElapsedTime_v2(ms, a, b); }

// ---- memory --------------------------------------------------------------------------

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    return alloc(p, bytes);
}
EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, void* s) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (bytes == 0) {  // the driver hands out a null pointer for nothing
        if (!p) return CUDA_ERROR_INVALID_VALUE;
        *p = 0;
        return CUDA_SUCCESS;
    }
    return alloc(p, bytes);
}
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr* p, size_t bytes, void*, void* s) {
    return cuMemAllocAsync(p, bytes, s);
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    if (p == 0) return CUDA_SUCCESS;
    CUresult r = release(p);
    if (r) report("cuMemFree of 0x%llx, which is not a live device allocation", p);
    return r;
}
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    return cuMemFree_v2(p);
}
EXPORT CUresult cuDeviceGetDefaultMemPool(void** pool, CUdevice d) {
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *pool = &g_pool;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetMemPool(void** pool, CUdevice d) { return cuDeviceGetDefaultMemPool(pool, d); }
EXPORT CUresult cuMemPoolSetAttribute(void* pool, int attr, void* value) {
    if (pool != &g_pool || !value) return CUDA_ERROR_INVALID_VALUE;
    if (attr == 4) g_pool.release_threshold = *static_cast<uint64_t*>(value);  // RELEASE_THRESHOLD
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolGetAttribute(void* pool, int attr, void* value) {
    if (pool != &g_pool || !value) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
        case 1:
        case 2:
        case 3: *static_cast<int*>(value) = 1; break;
        case 4: *static_cast<uint64_t*>(value) = g_pool.release_threshold; break;
        case 5:
        case 7: *static_cast<uint64_t*>(value) = g_count.device_bytes; break;
        case 6:
        case 8: *static_cast<uint64_t*>(value) = g_count.peak_device_bytes; break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolTrimTo(void* pool, size_t) { return pool == &g_pool ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

static CUresult check_device(const char* op, const char* what, CUdeviceptr p, size_t bytes) {
    if (bytes == 0 || in_device_memory(p, bytes)) return CUDA_SUCCESS;
    report("%s: the %s range of %zu bytes at 0x%llx is outside device memory (%s)", op, what, bytes, p,
           describe(p).c_str());
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = check_device("cuMemcpyHtoD", "destination", dst, n)) return r;
    if (n) std::memcpy(reinterpret_cast<void*>(dst), src, n);
    g_count.h2d_bytes += n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    CUresult r = cuMemcpyHtoDAsync_v2(dst, src, n, nullptr);
    if (r == CUDA_SUCCESS) g_count.host_syncs++;  // a blocking copy
    return r;
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = check_device("cuMemcpyDtoH", "source", src, n)) return r;
    if (n) std::memcpy(dst, reinterpret_cast<const void*>(src), n);
    g_count.d2h_bytes += n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    CUresult r = cuMemcpyDtoHAsync_v2(dst, src, n, nullptr);
    if (r == CUDA_SUCCESS) g_count.host_syncs++;
    return r;
}
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = check_device("cuMemcpyDtoD", "source", src, n)) return r;
    if (CUresult r = check_device("cuMemcpyDtoD", "destination", dst, n)) return r;
    if (n) std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
    g_count.d2d_bytes += n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr);
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = check_device("cuMemsetD8", "destination", dst, n)) return r;
    if (n) std::memset(reinterpret_cast<void*>(dst), v, n);
    g_count.memsets++;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { return cuMemsetD8Async(dst, v, n, nullptr); }
EXPORT CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, void* s) {
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (dst % 4) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_device("cuMemsetD32", "destination", dst, n * 4)) return r;
    unsigned* p = reinterpret_cast<unsigned*>(dst);
    for (size_t i = 0; i < n; ++i) p[i] = v;
    g_count.memsets++;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) { return cuMemsetD32Async(dst, v, n, nullptr); }

// Host memory for pinned transfers: plain host memory here.
EXPORT CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = std::malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
EXPORT CUresult cuMemFreeHost(void* p) {
    std::free(p);
    return CUDA_SUCCESS;
}

// ---- modules and launches ------------------------------------------------------------

EXPORT CUresult cuModuleLoadData(void** module, const void* image) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    bool ok = false;
    const unsigned long long h = fatbin_hash(image, &ok);
    if (!ok) {
        report("cuModuleLoadData: the image is not a fatbin (only lpaf's embedded kernels/*.cu fatbins load)");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    for (const Registered& r : registry()) {
        if (r.hash != h) continue;
        Module* m = new Module;
        m->name = r.module;
        for (unsigned i = 0; i < r.n; ++i) m->kernels.push_back(&r.kernels[i]);
        std::lock_guard<std::mutex> l(g_module_mu);
        g_modules.insert(m);
        *module = m;
        return CUDA_SUCCESS;
    }
    report("cuModuleLoadData: this fatbin was not built with the emulator's kernels (rebuild lpaf: the emulator and "
           "the embedded fatbins come from the same kernels/*.cu)");
    return CUDA_ERROR_INVALID_IMAGE;
}
EXPORT CUresult cuModuleUnload(void* module) {
    std::lock_guard<std::mutex> l(g_module_mu);
    auto it = g_modules.find(static_cast<Module*>(module));
    if (it == g_modules.end()) return CUDA_ERROR_INVALID_HANDLE;
    g_modules.erase(it);
    delete static_cast<Module*>(module);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuModuleGetFunction(void** fn, void* module, const char* name) {
    if (!fn || !name) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_module_mu);
    if (!g_modules.count(static_cast<Module*>(module))) return CUDA_ERROR_INVALID_HANDLE;
    Module* m = static_cast<Module*>(module);
    for (const EmuKernel* k : m->kernels) {
        if (std::strcmp(k->name, name) != 0) continue;
        Function*& f = g_functions[k];
        if (!f) {
            f = new Function;
            f->kernel = k;
        }
        *fn = f;
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_NOT_FOUND;
}

static Function* function(void* fn) {
    Function* f = static_cast<Function*>(fn);
    if (!f) return nullptr;
    std::lock_guard<std::mutex> l(g_module_mu);
    for (auto& kv : g_functions)
        if (kv.second == f) return f;
    return nullptr;
}

EXPORT CUresult cuFuncSetAttribute(void* fn, int attr, int value) {
    Function* f = function(fn);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (attr == 8) {  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > kSharedPerBlockOptin) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic_shared = value;
        return CUDA_SUCCESS;
    }
    if (attr == 9) return CUDA_SUCCESS;  // PREFERRED_SHARED_MEMORY_CARVEOUT
    return CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuFuncGetAttribute(int* v, int attr, void* fn) {
    Function* f = function(fn);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    switch (attr) {
        case 0: *v = kMaxThreadsPerBlock; break;
        case 8: *v = f->max_dynamic_shared; break;
        case 5:
        case 6: *v = 90; break;
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuFuncSetCacheConfig(void* fn, int) { return function(fn) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }

EXPORT CUresult cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, void* s, void** params, void** extra) {
    if (!t_current_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    Function* f = function(fn);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(s)) return CUDA_ERROR_INVALID_HANDLE;
    const EmuKernel* k = f->kernel;
    // The checks a real sm_90 driver makes before it queues a grid.
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || gx > 2147483647u || gy > 65535 ||
        gz > 65535 || bx > 1024 || by > 1024 || bz > 64) {
        report("cuLaunchKernel %s: grid (%u,%u,%u) block (%u,%u,%u) is outside the device's limits", k->name, gx, gy,
               gz, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((unsigned long long)bx * by * bz > (unsigned long long)kMaxThreadsPerBlock) {
        report("cuLaunchKernel %s: block (%u,%u,%u) has more than %d threads", k->name, bx, by, bz,
               kMaxThreadsPerBlock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((int)shared > f->max_dynamic_shared) {
        report("cuLaunchKernel %s: %u bytes of dynamic shared memory, above the function's limit of %d (raise it "
               "with cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) first)",
               k->name, shared, f->max_dynamic_shared);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (extra && extra[0]) {
        report("cuLaunchKernel %s: the `extra` parameter form is not emulated", k->name);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (k->nparams > 0 && !params) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> l(g_exec);
    void* dyn = nullptr;
    if (shared) {
        // Filled with a NaN pattern: a kernel that reads dynamic shared
        // memory before writing it gets garbage, as on a device.
        if (posix_memalign(&dyn, 16, shared) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
        std::memset(dyn, 0xff, shared);
    }
    g_count.kernel_launches++;
    const std::string err = emu_run_grid(k, params, dim3{gx, gy, gz}, dim3{bx, by, bz}, dyn);
    std::free(dyn);
    if (!err.empty()) {
        report("kernel %s::%s: %s", k->module, k->name, err.c_str());
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}

// ---- errors --------------------------------------------------------------------------

static const char* error_name(CUresult r) {
    switch (r) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        default: return nullptr;
    }
}
EXPORT CUresult cuGetErrorName(CUresult r, const char** s) {
    const char* n = error_name(r);
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *s = n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGetErrorString(CUresult r, const char** s) {
    const char* n = error_name(r);
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *s = n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuProfilerStart() { return CUDA_SUCCESS; }
EXPORT CUresult cuProfilerStop() { return CUDA_SUCCESS; }
