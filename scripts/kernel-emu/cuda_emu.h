// emu_launch for emulate.cpp: runs a kernel of kernels/*.cu over a grid on
// the emulated device's scheduler (emulator/fiber.cpp, emulator/cuda_emu.h),
// the same one lpaf's emulated libcuda.so uses, without the driver around it.
#pragma once

#include <tuple>
#include <utility>

#include "../../emulator/cuda_emu.h"
#include "../../emulator/fiber.h"

template <class... P, class... A, unsigned long... I>
void emu_launch_impl(dim3 grid, dim3 block, void (*kernel)(P...), std::integer_sequence<unsigned long, I...>,
                     A... args) {
    // Each argument converted to the kernel's parameter type, as the
    // launch would pass it.
    std::tuple<std::remove_cv_t<P>...> values(static_cast<std::remove_cv_t<P>>(args)...);
    void* params[] = {&std::get<I>(values)..., nullptr};
    const EmuKernel k = emu_kernel("kernel-emu", "kernel", kernel);
    const std::string err = emu_run_grid(&k, params, grid, block, nullptr);
    if (!err.empty()) {
        std::fprintf(stderr, "FAIL launch: %s\n", err.c_str());
        std::abort();
    }
}

// Runs kernel(args...) over grid × block.
template <class... P, class... A>
void emu_launch(dim3 grid, dim3 block, void (*kernel)(P...), A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "argument count differs from the kernel's");
    emu_launch_impl(grid, block, kernel, std::make_integer_sequence<unsigned long, sizeof...(P)>{}, args...);
}
