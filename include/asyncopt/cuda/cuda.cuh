// The CUDA plug-in (component asyncopt::cuda): include from sources compiled by nvcc.
#pragma once

#include <asyncopt/cuda/error.cuh>
#include <asyncopt/cuda/kernels.cuh>
#include <asyncopt/cuda/memory.cuh>
#include <asyncopt/cuda/transport.cuh>
