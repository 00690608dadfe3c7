// CUDA kernel of libdet::nms_rotated.
//
// Boxes are sorted by score; a kernel fills, for every box i, a bit mask of the later boxes j > i whose
// IoU with i is above the threshold (64 boxes per 64-bit word); the greedy pass over the masks then
// runs on the host, which needs the number of kept boxes anyway.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

#include "nms_rotated.h"
#include "rotated_box_geometry.h"

namespace libdet {

namespace {

constexpr int kBoxesPerWord = 64;  // bits in an unsigned long long

template <typename scalar_t>
__global__ void nms_rotated_mask_kernel(
    const scalar_t* __restrict__ sorted_boxes,
    int64_t n,
    int64_t words,
    double iou_threshold,
    unsigned long long* __restrict__ mask) {
  // Block (x = column word, y = row word); only the upper triangle (col >= row) is ever read.
  const int64_t row_word = blockIdx.y;
  const int64_t col_word = blockIdx.x;
  if (col_word < row_word) {
    return;
  }
  __shared__ rotated_geometry::BoxGeometry col_boxes[kBoxesPerWord];
  const int64_t col0 = col_word * kBoxesPerWord;
  const int col_count = (n - col0 < kBoxesPerWord) ? static_cast<int>(n - col0) : kBoxesPerWord;
  if (threadIdx.x < col_count) {
    col_boxes[threadIdx.x] = rotated_geometry::box_geometry(sorted_boxes + (col0 + threadIdx.x) * 5);
  }
  __syncthreads();

  const int64_t i = row_word * kBoxesPerWord + threadIdx.x;
  if (i >= n) {
    return;
  }
  const rotated_geometry::BoxGeometry row_box = rotated_geometry::box_geometry(sorted_boxes + i * 5);
  const int start = (row_word == col_word) ? static_cast<int>(threadIdx.x) + 1 : 0;
  unsigned long long bits = 0;
  for (int k = start; k < col_count; ++k) {
    if (rotated_geometry::rotated_box_iou(row_box, col_boxes[k]) > iou_threshold) {
      bits |= 1ULL << k;
    }
  }
  mask[i * words + col_word] = bits;
}

}  // namespace

at::Tensor nms_rotated_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_rotated_args(boxes, scores);
  TORCH_CHECK(boxes.is_cuda(), "nms_rotated_cuda: boxes must be CUDA tensors");
  c10::cuda::CUDAGuard device_guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).contiguous();
  const int64_t words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  TORCH_CHECK(words <= 65535, "nms_rotated_cuda: at most ", 65535 * kBoxesPerWord, " boxes, got ", n);
  at::Tensor mask = at::empty({n * words}, boxes.options().dtype(at::kLong));

  const dim3 blocks(static_cast<unsigned int>(words), static_cast<unsigned int>(words));
  const dim3 threads(kBoxesPerWord);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sorted_boxes.scalar_type(), "nms_rotated_cuda", [&] {
    nms_rotated_mask_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        sorted_boxes.const_data_ptr<scalar_t>(),
        n,
        words,
        iou_threshold,
        reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Greedy pass on the host: a box is kept unless a kept box before it has set its bit.
  const at::Tensor mask_cpu = mask.to(at::kCPU);
  const auto* mask_ptr = reinterpret_cast<const unsigned long long*>(mask_cpu.const_data_ptr<int64_t>());
  std::vector<unsigned long long> removed(words, 0);
  std::vector<int64_t> keep;
  keep.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t word = i / kBoxesPerWord;
    const int bit = static_cast<int>(i % kBoxesPerWord);
    if (removed[word] & (1ULL << bit)) {
      continue;
    }
    keep.push_back(i);
    const unsigned long long* row = mask_ptr + i * words;
    for (int64_t w = word; w < words; ++w) {
      removed[w] |= row[w];
    }
  }
  at::Tensor keep_cpu = at::empty({static_cast<int64_t>(keep.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), keep_cpu.mutable_data_ptr<int64_t>());
  return order.index_select(0, keep_cpu.to(order.device(), /*non_blocking=*/false));
}

}  // namespace libdet
