// Run a libdet detector exported to ONNX (tools/deploy/export_model.py --format onnx) with onnxruntime's
// C++ API: read a binary PPM (P6) image, run the model, print the detections and draw their boxes.
//
//   libdet_onnx_demo model.onnx image.ppm out.ppm [score_threshold=0.5] [BGR|RGB=BGR]
//
// The model input is "images": (1, 3, H, W) float32, 0-255, channels in the model's input format
// ("input_format" in export_info.json; detectron2 models use BGR); resize the image beforehand as at test
// time (e.g. short side 800): the boxes are in the frame of the given image. Outputs used: "boxes" (D, 4)
// x0 y0 x1 y1, "scores" (D), "classes" (D) int64; the model may have more ("batch_index", "masks", ...).
//
// Each detection with score >= score_threshold is printed on one line, in decreasing score order, with
// enough digits to read the float32 values back exactly:
//   class <int> score <float> box <x0> <y0> <x1> <y1>
// and a last line "<D> detections, <n> with score >= <threshold> drawn to <out.ppm>".
//
// A model exported with onnx_custom_ops=True (libdet's RoiAlign) runs with LIBDET_ONNXRUNTIME_OPS set to libdet's
// onnxruntime op library.
//
// Build: see CMakeLists.txt and docs/deployment.md ("C++ example").

// The C++ API's default static initialisation dereferences OrtGetApiBase()->GetApi(ORT_API_VERSION), which
// is null when the library found at run time is older than these headers, and then crashes without a word.
// Initialising by hand lets main() say which versions disagree.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3
};

// The next header token of a PPM file, skipping whitespace and "# ..." comment lines (GIMP writes one).
std::string ppm_token(std::istream& in) {
  std::string token;
  while (in >> token && token[0] == '#') in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  return token;
}

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open image " + path);
  const std::string expected = ": expected a binary 8-bit PPM (P6, maxval 255), e.g. from PIL's "
                               "Image.save(\"x.ppm\") or ImageMagick's convert x.jpg x.ppm";
  if (ppm_token(in) != "P6") throw std::runtime_error(path + expected);
  Image img;
  int max_value = 0;
  try {
    img.width = std::stoi(ppm_token(in));
    img.height = std::stoi(ppm_token(in));
    max_value = std::stoi(ppm_token(in));
  } catch (const std::logic_error&) {
    throw std::runtime_error(path + ": unreadable PPM header");
  }
  if (max_value != 255 || img.width <= 0 || img.height <= 0) throw std::runtime_error(path + expected);
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
  if (!out) throw std::runtime_error("cannot write " + path);
}

void draw_box(Image& img, float x0, float y0, float x1, float y1) {
  auto clamp_x = [&](float v) { return std::clamp(static_cast<int>(v), 0, img.width - 1); };
  auto clamp_y = [&](float v) { return std::clamp(static_cast<int>(v), 0, img.height - 1); };
  int l = clamp_x(x0), r = clamp_x(x1), t = clamp_y(y0), b = clamp_y(y1);
  auto paint = [&](int x, int y) {
    uint8_t* p = &img.rgb[(static_cast<size_t>(y) * img.width + x) * 3];
    p[0] = 0;
    p[1] = 255;
    p[2] = 0;
  };
  for (int x = l; x <= r; ++x) {
    paint(x, t);
    paint(x, b);
  }
  for (int y = t; y <= b; ++y) {
    paint(l, y);
    paint(r, y);
  }
}

// Fails unless the model has every output this program reads, naming those it has.
void check_outputs(Ort::Session& session, const std::vector<const char*>& wanted, const std::string& path) {
  Ort::AllocatorWithDefaultOptions allocator;
  std::vector<std::string> names;
  for (size_t i = 0; i < session.GetOutputCount(); ++i)
    names.emplace_back(session.GetOutputNameAllocated(i, allocator).get());
  for (const char* name : wanted) {
    if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    std::string have;
    for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
    throw std::runtime_error(path + " has no output \"" + name + "\" (it has: " + have +
                             "); this example runs detectors exported by tools/deploy/export_model.py");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) {
    std::cerr << "usage: " << argv[0] << " model.onnx image.ppm out.ppm [score_threshold=0.5] [BGR|RGB=BGR]\n";
    return 2;
  }
  const OrtApiBase* api_base = OrtGetApiBase();
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    std::cerr << "error: the onnxruntime library loaded at run time (" << api_base->GetVersionString()
              << ") is older than the headers this program was built with (C API version " << ORT_API_VERSION
              << "); rebuild against the headers of that library or run with a newer one\n";
    return 1;
  }
  Ort::InitApi(api);
  try {
    float threshold = 0.5f;
    if (argc > 4) {
      size_t end = 0;
      try {
        threshold = std::stof(argv[4], &end);
      } catch (const std::logic_error&) {
      }
      if (end == 0 || argv[4][end] != '\0')
        throw std::invalid_argument(std::string("score_threshold must be a number, got ") + argv[4]);
    }
    const std::string format = argc > 5 ? argv[5] : "BGR";
    if (format != "BGR" && format != "RGB")
      throw std::invalid_argument("channel order must be BGR or RGB (input_format in export_info.json), got " +
                                  format);
    const bool bgr = format == "BGR";
    Image img = read_ppm(argv[2]);
    // HWC uint8 RGB -> NCHW float32 in the model's channel order.
    const size_t plane = static_cast<size_t>(img.width) * img.height;
    std::vector<float> input(3 * plane);
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) input[c * plane + i] = img.rgb[i * 3 + (bgr ? 2 - c : c)];
    const std::vector<int64_t> shape{1, 3, img.height, img.width};

    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "libdet");
    Ort::SessionOptions options;
    // A model exported with onnx_custom_ops=True needs libdet's onnxruntime op library
    // (libdet.export.onnxruntime_ops_library(), or csrc/onnxruntime built by hand).
    if (const char* custom_ops = std::getenv("LIBDET_ONNXRUNTIME_OPS")) options.RegisterCustomOpsLibrary(custom_ops);
    Ort::Session session(env, argv[1], options);
    const std::vector<const char*> input_names{"images"};
    const std::vector<const char*> output_names{"boxes", "scores", "classes"};
    check_outputs(session, output_names, argv[1]);
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    Ort::Value tensor =
        Ort::Value::CreateTensor<float>(memory, input.data(), input.size(), shape.data(), shape.size());
    auto outputs = session.Run(Ort::RunOptions{nullptr}, input_names.data(), &tensor, input_names.size(),
                               output_names.data(), output_names.size());
    const size_t count = outputs[1].GetTensorTypeAndShapeInfo().GetElementCount();
    if (outputs[0].GetTensorTypeAndShapeInfo().GetElementCount() != 4 * count ||
        outputs[2].GetTensorTypeAndShapeInfo().GetElementCount() != count)
      throw std::runtime_error("boxes, scores and classes of " + std::string(argv[1]) + " disagree in length");
    const float* boxes = outputs[0].GetTensorData<float>();
    const float* scores = outputs[1].GetTensorData<float>();
    const int64_t* classes = outputs[2].GetTensorData<int64_t>();

    std::cout << std::setprecision(std::numeric_limits<float>::max_digits10);
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
    std::cout << std::setprecision(6) << count << " detections, " << drawn << " with score >= " << threshold
              << " drawn to " << argv[3] << "\n";
  } catch (const std::exception& e) {  // Ort::Exception derives from std::exception
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
