// CUDA kernel of libdet::box_iou_rotated: one thread per pair; a block computes a tile of the IoU matrix
// from the geometry of its boxes, staged in shared memory.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "box_iou_rotated.h"
#include "rotated_box_geometry.h"

namespace libdet {

namespace {

constexpr int kTile = 16;  // a block computes a kTile x kTile tile of the IoU matrix

template <typename scalar_t>
__global__ void box_iou_rotated_kernel(
    const scalar_t* __restrict__ boxes1,
    const scalar_t* __restrict__ boxes2,
    int64_t n,
    int64_t m,
    int64_t row_tiles,
    int64_t col_tiles,
    scalar_t* __restrict__ ious) {
  // The geometry (trigonometry included) of the tile's boxes is computed once, by 2 * kTile threads.
  __shared__ rotated_geometry::BoxGeometry rows[kTile];
  __shared__ rotated_geometry::BoxGeometry cols[kTile];
  const int tx = threadIdx.x;  // column inside the tile
  const int ty = threadIdx.y;  // row inside the tile
  const int lane = ty * kTile + tx;
  // Grid-stride over tiles so that any N and M fit in the grid limits.
  for (int64_t tile = blockIdx.x; tile < row_tiles * col_tiles; tile += gridDim.x) {
    const int64_t row0 = (tile / col_tiles) * kTile;
    const int64_t col0 = (tile % col_tiles) * kTile;
    __syncthreads();  // the previous iteration is done reading the shared geometry
    if (lane < kTile) {
      if (row0 + lane < n) {
        rows[lane] = rotated_geometry::box_geometry(boxes1 + (row0 + lane) * 5);
      }
    } else if (lane < 2 * kTile) {
      const int k = lane - kTile;
      if (col0 + k < m) {
        cols[k] = rotated_geometry::box_geometry(boxes2 + (col0 + k) * 5);
      }
    }
    __syncthreads();
    const int64_t i = row0 + ty;
    const int64_t j = col0 + tx;
    if (i < n && j < m) {
      ious[i * m + j] = static_cast<scalar_t>(rotated_geometry::rotated_box_iou(rows[ty], cols[tx]));
    }
  }
}

}  // namespace

at::Tensor box_iou_rotated_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  TORCH_CHECK(
      boxes1.dim() == 2 && boxes1.size(1) == 5 && boxes2.dim() == 2 && boxes2.size(1) == 5,
      "box_iou_rotated: boxes must have shape [N, 5], got ", boxes1.sizes(), " and ", boxes2.sizes());
  TORCH_CHECK(
      boxes1.scalar_type() == boxes2.scalar_type() && at::isFloatingType(boxes1.scalar_type()),
      "box_iou_rotated: boxes1 and boxes2 must share a float32 or float64 dtype, got ",
      boxes1.scalar_type(), " and ", boxes2.scalar_type());
  TORCH_CHECK(
      boxes1.is_cuda() && boxes2.is_cuda() && boxes1.device() == boxes2.device(),
      "box_iou_rotated_cuda: boxes must be on the same CUDA device, got ", boxes1.device(), " and ",
      boxes2.device());
  c10::cuda::CUDAGuard device_guard(boxes1.device());

  const int64_t n = boxes1.size(0);
  const int64_t m = boxes2.size(0);
  at::Tensor ious = at::empty({n, m}, boxes1.options());
  if (n == 0 || m == 0) {
    return ious;
  }
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();

  const int64_t row_tiles = (n + kTile - 1) / kTile;
  const int64_t col_tiles = (m + kTile - 1) / kTile;
  const int64_t blocks = std::min<int64_t>(row_tiles * col_tiles, int64_t(1) << 30);
  const dim3 threads(kTile, kTile);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(b1.scalar_type(), "box_iou_rotated_cuda", [&] {
    box_iou_rotated_kernel<scalar_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
        b1.const_data_ptr<scalar_t>(),
        b2.const_data_ptr<scalar_t>(),
        n,
        m,
        row_tiles,
        col_tiles,
        ious.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return ious;
}

}  // namespace libdet
