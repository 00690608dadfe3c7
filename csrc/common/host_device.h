// LIBDET_HOST_DEVICE marks small inline helpers that compile for the host and, under nvcc/hipcc, for the
// device as well.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LIBDET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LIBDET_HOST_DEVICE inline
#endif
