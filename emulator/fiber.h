// Grid execution on fibers (fiber.cpp), used by the emulated cuLaunchKernel.
#pragma once
#include <string>

#include "cuda_emu.h"

// Runs `kernel` over grid × block with cuLaunchKernel's parameter array.
// Returns "" or the reason the grid was stopped (a broken barrier or warp
// collective), naming the block and thread. Not reentrant: the caller
// serialises grids.
std::string emu_run_grid(const EmuKernel* kernel, void** params, dim3 grid, dim3 block, void* dynamic_shared);
