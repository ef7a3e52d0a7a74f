// The emulated device's execution of one grid (see cuda_emu.h for the model).
//
// Each thread of a block is a fiber on its own stack; the scheduler runs the
// runnable fibers in thread order until each one blocks (block barrier, warp
// collective) or returns, then releases whatever can be released and checks
// what a real device would not tolerate:
// - a warp collective whose mask names a lane that does not exist, has
//   returned, or waits at a different collective or at __syncthreads;
// - a shuffle that reads a lane outside its mask;
// - __syncthreads reached by some threads of a block after others returned.
// Any of these stops the grid and is reported with the kernel, block and
// thread (emu_grid_error).
//
// The context switch is a few instructions of x86-64 assembly (swapcontext
// costs a system call per switch); other targets fall back to ucontext.
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

uint3_ threadIdx;
uint3_ blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace {

#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
// Saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores the stack pointer in *save_sp, and resumes the
// context whose stack pointer is load_sp.
asm(R"(
    .text
    .p2align 4
    .type emu_ctx_switch,@function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
#else
#include <ucontext.h>
#endif

enum FiberState { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

struct Fiber {
    void* sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    uint3_ tid{};
    FiberState state = RUNNABLE;
    // The collective this fiber waits at.
    EmuWarpOp op = EMU_SYNCWARP;
    unsigned mask = 0;
    unsigned long long value = 0;
    int param = 0;
    int width = 32;
    unsigned long long result = 0;
};

constexpr size_t kStackBytes = 256 * 1024;  // generous: ASan frames are large

struct StackPool {
    char* base = nullptr;
    size_t count = 0;
    size_t page = 4096;
    char* stack(size_t i) {
        if (i >= count) grow(i + 1);
        return base + i * kStackBytes;
    }
    void grow(size_t want) {
        // Stacks are only ever added (fibers of a suspended grid may still
        // reference old ones until the grid ends, so nothing moves mid-grid:
        // growth happens before a grid starts).
        size_t n = 1024;
        while (n < want) n *= 2;
        char* p = static_cast<char*>(
            mmap(nullptr, n * kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "lpaf emulated GPU: cannot map %zu fiber stacks\n", n);
            std::abort();
        }
        page = (size_t)sysconf(_SC_PAGESIZE);
        for (size_t i = 0; i < n; ++i) mprotect(p + i * kStackBytes, page, PROT_NONE);  // overflow guard
        if (base) munmap(base, count * kStackBytes);
        base = p;
        count = n;
    }
};

struct Grid {
    const EmuKernel* kernel = nullptr;
    void** params = nullptr;
    std::vector<Fiber> fibers;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    Fiber* current = nullptr;
    void* dynamic_shared = nullptr;
    std::string error;
#if defined(EMU_ASAN)
    void* sched_fake_stack = nullptr;
    const void* sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
#endif
};

StackPool g_stacks;
Grid* g_grid = nullptr;

void switch_to_scheduler(Fiber* f, bool finished) {
    Grid* g = g_grid;
#if defined(EMU_ASAN)
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(finished ? nullptr : &fake, g->sched_stack_bottom, g->sched_stack_size);
#endif
#if defined(__x86_64__)
    emu_ctx_switch(&f->sp, g->sched_sp);
#else
    swapcontext(&f->uc, &g->sched_uc);
#endif
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    (void)finished;
}

extern "C" void emu_fiber_entry() {
    Grid* g = g_grid;
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &g->sched_stack_bottom, &g->sched_stack_size);
#endif
    Fiber* f = g->current;
    g->kernel->call(g->kernel->fn, g->params);
    f->state = DONE;
    switch_to_scheduler(f, true);
    std::abort();  // a finished fiber is never resumed
}

void init_fiber(Fiber& f, char* stack) {
#if defined(__x86_64__)
    // Stack top: [fake return address][emu_fiber_entry][rbp rbx r12 r13 r14 r15][mxcsr|fcw]
    // so that emu_ctx_switch "returns" into emu_fiber_entry with the stack
    // aligned as after a call.
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + kStackBytes) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;  // return address of emu_fiber_entry (it never returns)
    *--sp = reinterpret_cast<uint64_t>(&emu_fiber_entry);
    for (int i = 0; i < 6; ++i) *--sp = 0;
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    uint16_t fcw;
    asm volatile("fnstcw %0" : "=m"(fcw));
    csr[1] = fcw;
    --sp;
    std::memcpy(sp, csr, 8);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = stack + g_stacks.page;
    f.uc.uc_stack.ss_size = kStackBytes - g_stacks.page;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, emu_fiber_entry, 0);
#endif
}

void resume(Grid& g, Fiber& f, char* stack) {
    g.current = &f;
    threadIdx = f.tid;
#if defined(EMU_ASAN)
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, stack + g_stacks.page, kStackBytes - g_stacks.page);
#endif
#if defined(__x86_64__)
    emu_ctx_switch(&g.sched_sp, f.sp);
#else
    swapcontext(&g.sched_uc, &f.uc);
#endif
#if defined(EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, &g.sched_stack_bottom, &g.sched_stack_size);
#endif
    (void)stack;
}

std::string where(const Fiber& f) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z, f.tid.x,
                  f.tid.y, f.tid.z);
    return buf;
}

const char* op_name(EmuWarpOp op) {
    switch (op) {
        case EMU_SHFL_IDX: return "__shfl_sync";
        case EMU_SHFL_UP: return "__shfl_up_sync";
        case EMU_SHFL_DOWN: return "__shfl_down_sync";
        case EMU_SHFL_XOR: return "__shfl_xor_sync";
        case EMU_BALLOT: return "__ballot_sync";
        case EMU_MATCH_ANY: return "__match_any_sync";
        case EMU_SYNCWARP: return "__syncwarp";
    }
    return "?";
}

// The lane a shuffle reads, or -1 for "its own value" (out of the width).
int shuffle_source(const Fiber& f, unsigned lane) {
    const int w = f.width <= 0 ? 32 : f.width;
    const int seg = (int)lane / w * w, in = (int)lane % w;
    switch (f.op) {
        case EMU_SHFL_IDX: return seg + ((f.param % w) + w) % w;
        case EMU_SHFL_UP: return in >= f.param ? (int)lane - f.param : (int)lane;
        case EMU_SHFL_DOWN: return in + f.param < w ? (int)lane + f.param : (int)lane;
        case EMU_SHFL_XOR: {
            const int s = (int)lane ^ f.param;
            return s / w == (int)lane / w ? s : (int)lane;
        }
        default: return (int)lane;
    }
}

// Releases every complete warp collective; returns how many fibers it
// released, or -1 with g.error set.
int release_warps(Grid& g) {
    const unsigned n = (unsigned)g.fibers.size();
    int released = 0;
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state != AT_WARP) continue;
        const unsigned warp = i / 32, lane0 = warp * 32, lane = i % 32;
        if (!(f.mask >> lane & 1u)) {
            g.error = std::string(op_name(f.op)) + " at " + where(f) + ": the mask does not include the calling lane";
            return -1;
        }
        bool complete = true;
        for (unsigned l = 0; l < 32; ++l) {
            if (!(f.mask >> l & 1u)) continue;
            const unsigned t = lane0 + l;
            char buf[256];
            if (t >= n) {
                std::snprintf(buf, sizeof buf, "%s at %s: mask 0x%08x names lane %u, which does not exist (%u threads per block)",
                              op_name(f.op), where(f).c_str(), f.mask, l, n);
                g.error = buf;
                return -1;
            }
            const Fiber& o = g.fibers[t];
            if (o.state == DONE || o.state == AT_BARRIER) {
                std::snprintf(buf, sizeof buf, "%s at %s: mask 0x%08x names lane %u, which has %s", op_name(f.op),
                              where(f).c_str(), f.mask, l,
                              o.state == DONE ? "already returned" : "gone on to __syncthreads");
                g.error = buf;
                return -1;
            }
            if (o.state == RUNNABLE) {
                complete = false;
                continue;
            }
            if (o.op != f.op || o.mask != f.mask) {
                std::snprintf(buf, sizeof buf, "%s at %s (mask 0x%08x): lane %u waits at %s with mask 0x%08x instead",
                              op_name(f.op), where(f).c_str(), f.mask, l, op_name(o.op), o.mask);
                g.error = buf;
                return -1;
            }
        }
        if (!complete) continue;
        // Every lane of the mask is here: compute the results, then release.
        for (unsigned l = 0; l < 32; ++l) {
            if (!(f.mask >> l & 1u)) continue;
            Fiber& d = g.fibers[lane0 + l];
            switch (d.op) {
                case EMU_BALLOT:
                case EMU_MATCH_ANY: {
                    unsigned r = 0;
                    for (unsigned m = 0; m < 32; ++m) {
                        if (!(f.mask >> m & 1u)) continue;
                        const Fiber& o = g.fibers[lane0 + m];
                        if (d.op == EMU_BALLOT ? o.value != 0 : o.value == d.value) r |= 1u << m;
                    }
                    d.result = r;
                    break;
                }
                case EMU_SYNCWARP: d.result = 0; break;
                default: {
                    const int src = shuffle_source(d, l);
                    if (!(f.mask >> src & 1u)) {
                        char buf[200];
                        std::snprintf(buf, sizeof buf, "%s at %s: reads lane %d, which is not in mask 0x%08x",
                                      op_name(d.op), where(d).c_str(), src, f.mask);
                        g.error = buf;
                        return -1;
                    }
                    d.result = g.fibers[lane0 + src].value;
                }
            }
        }
        for (unsigned l = 0; l < 32; ++l)
            if (f.mask >> l & 1u) {
                g.fibers[lane0 + l].state = RUNNABLE;
                ++released;
            }
    }
    return released;
}

}  // namespace

void emu_syncthreads() {
    Grid* g = g_grid;
    Fiber* f = g->current;
    f->state = AT_BARRIER;
    switch_to_scheduler(f, false);
}

unsigned long long emu_warp_collective(EmuWarpOp op, unsigned mask, unsigned long long value, int param, int width) {
    Grid* g = g_grid;
    Fiber* f = g->current;
    f->state = AT_WARP;
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->param = param;
    f->width = width;
    switch_to_scheduler(f, false);
    return f->result;
}

void* emu_dynamic_shared() { return g_grid->dynamic_shared; }

std::string emu_run_grid(const EmuKernel* kernel, void** params, dim3 grid, dim3 block, void* dynamic_shared) {
    const unsigned n = block.x * block.y * block.z;
    g_stacks.stack(n - 1);  // grow before anything is suspended
    Grid g;
    g.kernel = kernel;
    g.params = params;
    g.dynamic_shared = dynamic_shared;
    g.fibers.resize(n);
    Grid* saved = g_grid;
    g_grid = &g;
    blockDim = block;
    gridDim = grid;
    for (unsigned bz = 0; bz < grid.z && g.error.empty(); ++bz)
        for (unsigned by = 0; by < grid.y && g.error.empty(); ++by)
            for (unsigned bx = 0; bx < grid.x && g.error.empty(); ++bx) {
                blockIdx = {bx, by, bz};
                unsigned i = 0;
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx, ++i) {
                            Fiber& f = g.fibers[i];
                            f = Fiber{};
                            f.tid = {tx, ty, tz};
                            init_fiber(f, g_stacks.stack(i));
                        }
                unsigned done = 0;
                for (;;) {
                    for (unsigned t = 0; t < n; ++t) {
                        Fiber& f = g.fibers[t];
                        if (f.state != RUNNABLE) continue;
                        resume(g, f, g_stacks.stack(t));
                        if (f.state == DONE) {
                            ++done;
#if defined(EMU_ASAN) && defined(__x86_64__)
                            // The frames a finished fiber left on its stack
                            // never returned: clear their redzones before
                            // the stack is reused.
                            char* top = g_stacks.stack(t) + kStackBytes;
                            __asan_unpoison_memory_region(f.sp, (size_t)(top - static_cast<char*>(f.sp)));
#endif
                        }
                    }
                    if (done == n) break;
                    const int r = release_warps(g);
                    if (r < 0) break;
                    if (r > 0) continue;
                    unsigned at_barrier = 0;
                    for (const Fiber& f : g.fibers) at_barrier += f.state == AT_BARRIER;
                    if (at_barrier == n - done && done == 0) {
                        for (Fiber& f : g.fibers) f.state = RUNNABLE;
                        continue;
                    }
                    // Stuck: report the first waiting thread and why.
                    for (const Fiber& f : g.fibers) {
                        if (f.state == AT_BARRIER && done > 0) {
                            const Fiber* gone = nullptr;
                            for (const Fiber& o : g.fibers)
                                if (o.state == DONE) {
                                    gone = &o;
                                    break;
                                }
                            char buf[300];
                            std::snprintf(buf, sizeof buf,
                                          "__syncthreads at %s waits for %u thread(s) that already returned "
                                          "(first: thread (%u,%u,%u)): a barrier inside divergent code",
                                          where(f).c_str(), done, gone->tid.x, gone->tid.y, gone->tid.z);
                            g.error = buf;
                            break;
                        }
                        if (f.state == AT_WARP) {
                            char buf[300];
                            std::snprintf(buf, sizeof buf,
                                          "%s at %s (mask 0x%08x) can never complete: the other threads of the "
                                          "block wait at __syncthreads",
                                          op_name(f.op), where(f).c_str(), f.mask);
                            g.error = buf;
                            break;
                        }
                    }
                    if (g.error.empty()) g.error = "deadlock in block " + where(g.fibers[0]);
                    break;
                }
            }
#if defined(EMU_ASAN)
    // A stopped grid leaves suspended frames behind: clear every stack used.
    if (!g.error.empty())
        for (unsigned t = 0; t < n; ++t)
            __asan_unpoison_memory_region(g_stacks.stack(t) + g_stacks.page, kStackBytes - g_stacks.page);
#endif
    g_grid = saved;
    return g.error;
}
