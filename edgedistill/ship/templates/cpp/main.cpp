// @model_file@ (@backend@, @precision@) from C++: one image in, one image out, and its latency.
// Written by `edgedistill bundle` from manifest.json; README.md ("C++ app") says how to build it.
//
//   app --input in.ppm --output out.ppm [--raw-output out.f32] [--runs 50] [--threads 2] [--model @model_file@]
//
// Images are binary PPM (P6, RGB) or PGM (P5, gray), 8 bits; a .f32 input is the model's input tensor
// itself (raw little-endian float32, NCHW, already in the input range). --raw-output writes the output
// tensor as it left the model (float32), before the mapping to pixels.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
@backend_include@

// ------------------------------------------------------------------ the model's contract (manifest.json)
namespace spec {
const char* const kModelFile = "@model_file@";
const char* const kInputName = "@input_name@";
const char* const kOutputName = "@output_name@";
const bool kImage = @is_image@;  // image -> image; otherwise N(0, 1) noise -> image
const std::vector<int64_t> kInputShape{@input_shape@};  // -1: free, taken from the picture
const int64_t kDefaultH = @default_h@, kDefaultW = @default_w@;  // the exported size: raw inputs of free H, W
const int64_t kMultiple = @multiple@;  // free H and W must divide by this
const float kInLo = @in_lo@f, kInHi = @in_hi@f;  // input_range: pixel / 255 * (hi - lo) + lo
const float kOutLo = @out_lo@f, kOutHi = @out_hi@f;  // output_range -> pixel = (y - lo) / (hi - lo) * 255
}  // namespace spec

@backend_code@
// ---------------------------------------------------------------------------------------- images
struct Image {
    int64_t h = 0, w = 0, c = 0;
    std::vector<uint8_t> px;  // h * w * c, interleaved
};

static int64_t read_number(std::istream& in, const std::string& path) {
    in >> std::ws;
    while (in.peek() == '#') {  // comments may sit between header fields
        std::string line;
        std::getline(in, line);
        in >> std::ws;
    }
    int64_t v = -1;
    if (!(in >> v) || v <= 0) throw std::runtime_error(path + ": bad PPM/PGM header");
    return v;
}

static Image read_ppm(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("input image not found: " + path);
    std::string magic;
    in >> magic;
    if (magic != "P6" && magic != "P5")
        throw std::runtime_error(path + ": not a binary PPM (P6) or PGM (P5); convert it, e.g. `convert in.png in.ppm`");
    Image img;
    img.c = magic == "P6" ? 3 : 1;
    img.w = read_number(in, path);
    img.h = read_number(in, path);
    if (read_number(in, path) != 255) throw std::runtime_error(path + ": only 8-bit (maxval 255) images");
    in.get();  // the one whitespace byte before the pixels
    img.px.resize(static_cast<size_t>(img.h * img.w * img.c));
    if (!in.read(reinterpret_cast<char*>(img.px.data()), static_cast<std::streamsize>(img.px.size())))
        throw std::runtime_error(path + ": truncated pixel data");
    return img;
}

static void write_file(const std::string& path, const std::string& header, const char* data, size_t size) {
    const std::string tmp = path + ".tmp";  // never a half-written file under the real name
    {
        std::ofstream out(tmp, std::ios::binary);
        out << header;
        out.write(data, static_cast<std::streamsize>(size));
        if (!out) throw std::runtime_error("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
}

// Same numbers as run_model.py: Pillow's gray (ITU-R 601-2 luma in 16-bit fixed point), one channel
// repeated for RGB, then p / 255 in float32 mapped to the input range.
static std::vector<float> to_input(const Image& img, int64_t channels) {
    const int64_t hw = img.h * img.w;
    std::vector<float> x(static_cast<size_t>(channels * hw));
    const float scale = spec::kInHi - spec::kInLo;
    for (int64_t i = 0; i < hw; ++i) {
        const uint8_t* p = &img.px[static_cast<size_t>(i * img.c)];
        for (int64_t ch = 0; ch < channels; ++ch) {
            uint32_t v = img.c == 1 ? p[0] : p[ch];
            if (channels == 1 && img.c == 3)
                v = (p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16;
            const float unit = static_cast<float>(v) / 255.0f;
            x[static_cast<size_t>(ch * hw + i)] = unit * scale + spec::kInLo;
        }
    }
    return x;
}

static Image crop(const Image& img, int64_t h, int64_t w) {
    Image out{h, w, img.c, std::vector<uint8_t>(static_cast<size_t>(h * w * img.c))};
    const int64_t top = (img.h - h) / 2, left = (img.w - w) / 2;
    for (int64_t y = 0; y < h; ++y)
        std::copy_n(&img.px[static_cast<size_t>(((top + y) * img.w + left) * img.c)], w * img.c,
                    &out.px[static_cast<size_t>(y * w * img.c)]);
    return out;
}

// First sample of an (N, 1|3, H, W) output -> 8-bit PPM/PGM, as run_model.py rounds it.
static void write_image(const std::string& path, const float* y, const std::vector<int64_t>& shape) {
    if (shape.size() != 4 || (shape[1] != 1 && shape[1] != 3))
        throw std::runtime_error("the output is not (N, 1|3, H, W) image data: use --raw-output");
    const int64_t c = shape[1], h = shape[2], w = shape[3];
    std::vector<uint8_t> px(static_cast<size_t>(h * w * c));
    for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < h * w; ++i) {
            float v = (y[ch * h * w + i] - spec::kOutLo) / (spec::kOutHi - spec::kOutLo);
            v = std::min(std::max(v, 0.0f), 1.0f) * 255.0f + 0.5f;
            px[static_cast<size_t>(i * c + ch)] = static_cast<uint8_t>(v);
        }
    const std::string header = (c == 3 ? "P6\n" : "P5\n") + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
    write_file(path, header, reinterpret_cast<const char*>(px.data()), px.size());
}

// ------------------------------------------------------------------------------------------ input
static int64_t count(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

static std::string dims(const std::vector<int64_t>& shape) {
    std::ostringstream s;
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "[") << shape[i];
    s << "]";
    return s.str();
}

static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The input tensor and its shape: from a picture, a raw .f32 tensor, or seeded N(0, 1) noise.
static std::vector<float> make_input(const std::string& path, std::vector<int64_t>& shape) {
    shape = spec::kInputShape;
    if (shape[0] < 0) shape[0] = 1;
    if (!path.empty() && ends_with(path, ".f32")) {
        for (size_t i = 2; i < shape.size(); ++i)
            if (shape[i] < 0) shape[i] = i == 2 ? spec::kDefaultH : spec::kDefaultW;
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        if (!in) throw std::runtime_error("input not found: " + path);
        std::vector<float> x(static_cast<size_t>(count(shape)));
        if (static_cast<size_t>(in.tellg()) != x.size() * sizeof(float))
            throw std::runtime_error(path + ": expected " + std::to_string(x.size()) + " float32 values for " + dims(shape));
        in.seekg(0);
        in.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
        return x;
    }
    if (!spec::kImage) {  // noise generators: z ~ N(0, 1), seed 0 (not numpy's stream: pass a .f32 for that)
        std::mt19937 gen(0);
        std::normal_distribution<float> normal;
        std::vector<float> z(static_cast<size_t>(count(shape)));
        for (float& v : z) v = normal(gen);
        return z;
    }
    if (path.empty()) throw std::runtime_error("give --input IMAGE.ppm (or a raw .f32 input tensor)");
    Image img = read_ppm(path);
    const int64_t h = shape[2], w = shape[3];
    if (h > 0 && w > 0 && (img.h != h || img.w != w))
        throw std::runtime_error(path + " is " + std::to_string(img.w) + "x" + std::to_string(img.h) +
                                 ": this model takes " + std::to_string(w) + "x" + std::to_string(h) +
                                 " pictures (static shape): resize it first");
    const int64_t ch = img.h - img.h % spec::kMultiple, cw = img.w - img.w % spec::kMultiple;
    if (ch == 0 || cw == 0) throw std::runtime_error(path + " is too small for this generator");
    if (ch != img.h || cw != img.w) img = crop(img, ch, cw);  // free H, W: multiples of kMultiple
    shape[2] = img.h;
    shape[3] = img.w;
    return to_input(img, shape[1] > 0 ? shape[1] : 3);
}

// ------------------------------------------------------------------------------------------- main
struct Args {
    std::string model = spec::kModelFile, input, output = "out.ppm", raw_output;
    int runs = 50, threads = 2;
};

static Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            std::cout << "usage: " << argv[0]
                      << " --input in.ppm|in.f32 --output out.ppm [--raw-output out.f32] [--runs N=50]"
                         " [--threads T=2] [--model " << spec::kModelFile << "]\n";
            std::exit(0);
        }
        if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value (--help lists the options)");
        const std::string value = argv[++i];
        if (flag == "--model") a.model = value;
        else if (flag == "--input") a.input = value;
        else if (flag == "--output") a.output = value;
        else if (flag == "--raw-output") a.raw_output = value;
        else if (flag == "--runs") a.runs = std::stoi(value);
        else if (flag == "--threads") a.threads = std::stoi(value);
        else throw std::runtime_error("unknown option " + flag + " (--help lists the options)");
    }
    if (a.runs < 1 || a.threads < 1) throw std::runtime_error("--runs and --threads must be at least 1");
    return a;
}

int main(int argc, char** argv) {
    try {
        const Args args = parse(argc, argv);
        std::vector<int64_t> shape;
        std::vector<float> x = make_input(args.input, shape);
        Runner model(args.model, args.threads);
        model.set_input(x, shape);
        std::cout << model.describe() << "\ninput " << spec::kInputName << " " << dims(shape) << "\n";

        using clock = std::chrono::steady_clock;
        const int warmup = std::min(args.runs, 5);  // first calls allocate and tune: not timed
        for (int i = 0; i < warmup; ++i) model.infer();
        std::vector<double> ms;
        for (int i = 0; i < args.runs; ++i) {
            const auto start = clock::now();
            model.infer();
            ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - start).count());
        }

        std::vector<int64_t> out_shape;
        const float* y = model.output(out_shape);
        if (!args.raw_output.empty())
            write_file(args.raw_output, "", reinterpret_cast<const char*>(y),
                       static_cast<size_t>(count(out_shape)) * sizeof(float));
        if (!args.output.empty()) write_image(args.output, y, out_shape);
        std::cout << "output " << spec::kOutputName << " " << dims(out_shape) << " -> " << args.output
                  << (args.raw_output.empty() ? "" : " and " + args.raw_output) << "\n";

        std::sort(ms.begin(), ms.end());
        const size_t n = ms.size();
        const double p50 = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;  // the median, as numpy's
        std::printf("p50 %.4f ms over %zu runs (%d threads)\n", p50, n, args.threads);
        return 0;
    } catch (const std::exception& e) {
        std::string why = e.what();  // runtimes throw several lines: one line, as the Python tools print
        std::replace(why.begin(), why.end(), '\n', ' ');
        std::cerr << "error: " << why.substr(0, 600) << "\n";
        return 2;
    }
}
