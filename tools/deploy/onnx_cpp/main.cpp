// Run a libdet detector exported to ONNX (tools/deploy/export_model.py --format onnx) with onnxruntime's
// C++ API: read a binary PPM (P6) image, run the model, print the detections and draw their boxes.
//
//   libdet_onnx_demo model.onnx image.ppm out.ppm [score_threshold=0.5] [BGR|RGB=BGR]
//
// The model input is "images": (1, 3, H, W) float32, 0-255, channels in the model's input format (see
// export_info.json; detectron2 models use BGR); resize the image beforehand as at test time (e.g. short
// side 800). Outputs: "boxes" (D, 4) x0 y0 x1 y1, "scores" (D), "classes" (D) int64, "batch_index" (D)
// int64 and, for mask models, "masks" (D, H, W) bool.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3
};

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string magic;
  int max_value = 0;
  Image img;
  in >> magic >> img.width >> img.height >> max_value;
  if (magic != "P6" || max_value != 255) throw std::runtime_error(path + ": expected a binary 8-bit PPM (P6)");
  in.get();  // the single whitespace after the header
  img.rgb.resize(static_cast<size_t>(img.width) * img.height * 3);
  in.read(reinterpret_cast<char*>(img.rgb.data()), static_cast<std::streamsize>(img.rgb.size()));
  if (!in) throw std::runtime_error(path + ": truncated PPM");
  return img;
}

void write_ppm(const std::string& path, const Image& img) {
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << img.width << " " << img.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(img.rgb.data()), static_cast<std::streamsize>(img.rgb.size()));
}

void draw_box(Image& img, float x0, float y0, float x1, float y1) {
  auto clamp_x = [&](float v) { return std::clamp(static_cast<int>(v), 0, img.width - 1); };
  auto clamp_y = [&](float v) { return std::clamp(static_cast<int>(v), 0, img.height - 1); };
  int l = clamp_x(x0), r = clamp_x(x1), t = clamp_y(y0), b = clamp_y(y1);
  auto paint = [&](int x, int y) {
    uint8_t* p = &img.rgb[(static_cast<size_t>(y) * img.width + x) * 3];
    p[0] = 0; p[1] = 255; p[2] = 0;
  };
  for (int x = l; x <= r; ++x) { paint(x, t); paint(x, b); }
  for (int y = t; y <= b; ++y) { paint(l, y); paint(r, y); }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " model.onnx image.ppm out.ppm [score_threshold=0.5] [BGR|RGB=BGR]\n";
    return 2;
  }
  const float threshold = argc > 4 ? std::stof(argv[4]) : 0.5f;
  const bool bgr = argc > 5 ? std::string(argv[5]) == "BGR" : true;
  try {
    Image img = read_ppm(argv[2]);
    // HWC uint8 RGB -> NCHW float32 in the model's channel order.
    const size_t plane = static_cast<size_t>(img.width) * img.height;
    std::vector<float> input(3 * plane);
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) input[c * plane + i] = img.rgb[i * 3 + (bgr ? 2 - c : c)];
    const std::vector<int64_t> shape{1, 3, img.height, img.width};

    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "libdet");
    Ort::SessionOptions options;
    Ort::Session session(env, argv[1], options);
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value tensor = Ort::Value::CreateTensor<float>(memory, input.data(), input.size(), shape.data(), shape.size());

    const char* input_names[] = {"images"};
    const char* output_names[] = {"boxes", "scores", "classes"};
    auto outputs = session.Run(Ort::RunOptions{nullptr}, input_names, &tensor, 1, output_names, 3);
    const float* boxes = outputs[0].GetTensorData<float>();
    const float* scores = outputs[1].GetTensorData<float>();
    const int64_t* classes = outputs[2].GetTensorData<int64_t>();
    const size_t count = outputs[1].GetTensorTypeAndShapeInfo().GetElementCount();

    size_t drawn = 0;
    for (size_t i = 0; i < count; ++i) {
      if (scores[i] < threshold) continue;
      const float* b = boxes + 4 * i;
      std::cout << "class " << classes[i] << " score " << scores[i] << " box " << b[0] << " " << b[1] << " "
                << b[2] << " " << b[3] << "\n";
      draw_box(img, b[0], b[1], b[2], b[3]);
      ++drawn;
    }
    write_ppm(argv[3], img);
    std::cout << count << " detections, " << drawn << " with score >= " << threshold << " drawn to " << argv[3] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
