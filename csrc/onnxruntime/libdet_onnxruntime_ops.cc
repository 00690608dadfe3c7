// libdet's onnxruntime custom ops (domain "libdet"), loaded into a session with
// SessionOptions.register_custom_ops_library(<this library>); libdet.export.onnxruntime_ops builds it.
//
// libdet.RoiAlign (version 1): onnxruntime's RoiAlign interpolates one channel plane at a time; this one reads
// a channels-last map, so every bilinear sample adds four contiguous C-vectors (libdet's CPU roi_align kernel,
// csrc/roi_align/roi_align_kernel.h, with torchvision's arithmetic and results).
//   inputs:  X [N, H, W, C] float (channels last), rois [R, 4] float (x0, y0, x1, y1 in image coordinates),
//            batch_indices [R] int64
//   output:  Y [R, C, output_height, output_width] float (as the standard RoiAlign)
//   attributes: output_height, output_width, sampling_ratio (0: adaptive), aligned (1: half-pixel offset,
//            torchvision's aligned=True), spatial_scale
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "roi_align_kernel.h"

// onnxruntime looks RegisterCustomOps up by name; the library is built with hidden symbols otherwise.
#if defined(_WIN32)
#define LIBDET_ORT_EXPORT __declspec(dllexport)
#else
#define LIBDET_ORT_EXPORT __attribute__((visibility("default")))
#endif

namespace {

struct RoiAlignKernel {
  libdet::RoiAlignGeometry geometry{};

  explicit RoiAlignKernel(const OrtKernelInfo* info) {
    const Ort::ConstKernelInfo attributes(info);
    geometry.pooled_height = attributes.GetAttribute<int64_t>("output_height");
    geometry.pooled_width = attributes.GetAttribute<int64_t>("output_width");
    geometry.sampling_ratio = attributes.GetAttribute<int64_t>("sampling_ratio");
    geometry.aligned = attributes.GetAttribute<int64_t>("aligned") != 0;
    geometry.spatial_scale = attributes.GetAttribute<float>("spatial_scale");
    if (geometry.pooled_height <= 0 || geometry.pooled_width <= 0) {
      throw std::invalid_argument("output_height and output_width must be positive, got " +
                                  std::to_string(geometry.pooled_height) + " x " +
                                  std::to_string(geometry.pooled_width));
    }
  }

  // Everything a worker needs to pool RoI `n`.
  struct Work {
    const float* input;
    const float* rois;
    const int64_t* batch_indices;
    float* output;
    libdet::RoiAlignGeometry geometry;
  };

  static void pool_one(void* data, size_t n) {
    const Work& work = *static_cast<const Work*>(data);
    const libdet::RoiAlignGeometry& g = work.geometry;
    // Scratch space per thread: the samples, and the RoI's [bins, C] result before its transpose to [C, bins].
    thread_local std::vector<libdet::RoiAlignSample<float>> samples;
    thread_local std::vector<float> bins_by_channel;
    bins_by_channel.resize(g.bins() * g.channels);
    const float* roi = work.rois + n * 4;
    const float* image = work.input + work.batch_indices[n] * g.height * g.width * g.channels;
    libdet::roi_align_pool_channels_last(image, roi[0], roi[1], roi[2], roi[3], g, samples, bins_by_channel.data());
    float* out = work.output + n * g.channels * g.bins();
    for (int64_t bin = 0; bin < g.bins(); ++bin) {
      for (int64_t c = 0; c < g.channels; ++c) {
        out[c * g.bins() + bin] = bins_by_channel[bin * g.channels + c];
      }
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      const Ort::ConstValue input = context.GetInput(0);
      const Ort::ConstValue rois = context.GetInput(1);
      const Ort::ConstValue batch_indices = context.GetInput(2);
      const std::vector<int64_t> input_shape = input.GetTensorTypeAndShapeInfo().GetShape();
      const std::vector<int64_t> rois_shape = rois.GetTensorTypeAndShapeInfo().GetShape();
      const std::vector<int64_t> indices_shape = batch_indices.GetTensorTypeAndShapeInfo().GetShape();
      if (input_shape.size() != 4) {
        return error("X must be [N, H, W, C], got rank " + std::to_string(input_shape.size()));
      }
      if (rois_shape.size() != 2 || rois_shape[1] != 4) {
        return error("rois must be [R, 4]");
      }
      if (indices_shape.size() != 1 || indices_shape[0] != rois_shape[0]) {
        return error("batch_indices must be [R], one per roi");
      }
      Work work{};
      work.geometry = geometry;
      work.geometry.batch_size = input_shape[0];
      work.geometry.height = input_shape[1];
      work.geometry.width = input_shape[2];
      work.geometry.channels = input_shape[3];
      const int64_t num_rois = rois_shape[0];
      const std::vector<int64_t> output_shape{num_rois, work.geometry.channels, geometry.pooled_height,
                                              geometry.pooled_width};
      Ort::UnownedValue output = context.GetOutput(0, output_shape);
      work.input = input.GetTensorData<float>();
      work.rois = rois.GetTensorData<float>();
      work.batch_indices = batch_indices.GetTensorData<int64_t>();
      work.output = output.GetTensorMutableData<float>();
      for (int64_t n = 0; n < num_rois; ++n) {
        const int64_t b = work.batch_indices[n];
        if (b < 0 || b >= work.geometry.batch_size) {
          return error("batch_indices[" + std::to_string(n) + "] is " + std::to_string(b) + ", but X has " +
                       std::to_string(work.geometry.batch_size) + " images");
        }
      }
      const int64_t output_size = num_rois * work.geometry.channels * work.geometry.bins();
      if (output_size == 0) {
        return nullptr;
      }
      if (work.geometry.height == 0 || work.geometry.width == 0) {
        std::fill(work.output, work.output + output_size, 0.0f);  // nothing to sample: every bin is 0
        return nullptr;
      }
      context.ParallelFor(&RoiAlignKernel::pool_one, static_cast<size_t>(num_rois), 0, &work);
      return nullptr;
    } catch (const std::exception& e) {
      return error(e.what());
    }
  }

  static OrtStatusPtr error(const std::string& message) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, ("libdet.RoiAlign: " + message).c_str());
  }
};

struct RoiAlignOp : Ort::CustomOpBase<RoiAlignOp, RoiAlignKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new RoiAlignKernel(info);
      return nullptr;
    } catch (const std::exception& e) {
      return RoiAlignKernel::error(std::string("bad attributes: ") + e.what());
    }
  }
  const char* GetName() const {
    return "RoiAlign";
  }
  size_t GetInputTypeCount() const {
    return 3;
  }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const {
    return 1;
  }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

}  // namespace

// The entry point onnxruntime calls when a session registers this library. The domain (and its ops) must outlive
// every session that uses them, so they are created once and kept.
extern "C" LIBDET_ORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(
    OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "libdet onnxruntime ops: this onnxruntime is older than the headers the library was built with");
  }
  Ort::InitApi(api);
  static std::once_flag created;
  static RoiAlignOp roi_align;
  static Ort::CustomOpDomain domain{nullptr};
  try {
    std::call_once(created, [] {
      domain = Ort::CustomOpDomain("libdet");
      domain.Add(&roi_align);
    });
    Ort::UnownedSessionOptions(options).Add(domain);
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
