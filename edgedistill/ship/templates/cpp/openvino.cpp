// ------------------------------------------------------------------------- OpenVINO (C++ API)
// The settings run_model.py uses: latency hint, one stream; on the CPU the inference precision export
// checked (without it, CPUs with bf16/AMX quietly run an fp32 model in bf16) and the thread count.
const char* const kDevice = "@device@";
const char* const kPrecisionHint = "@precision_hint@";
const bool kF16IfCapable = @f16_if_capable@;  // an fp16 IR runs f16 where the CPU has FP16, else f32

static std::string family(const std::string& device) { return device.substr(0, device.find('.')); }

class Runner {
public:
    Runner(const std::string& path, int threads) {
        std::string device = kDevice;
        const std::vector<std::string> here = core_.get_available_devices();
        if (std::none_of(here.begin(), here.end(), [&](const std::string& d) { return family(d) == family(device); })) {
            std::cerr << "note: no " << device << " here, running on CPU\n";
            device = "CPU";
        }
        ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
        hint_ = kPrecisionHint;
        if (device == "CPU") {
            if (kF16IfCapable) {
                const std::vector<std::string> caps = core_.get_property("CPU", ov::device::capabilities);
                hint_ = std::find(caps.begin(), caps.end(), "FP16") != caps.end() ? "f16" : "f32";
            }
            config.insert(ov::hint::inference_precision(ov::element::Type(hint_)));
            config.insert(ov::inference_num_threads(threads));
        }
        compiled_ = core_.compile_model(path, device, config);
        request_ = compiled_.create_infer_request();
        device_ = device;
        path_ = path;
        threads_ = threads;
    }

    void set_input(std::vector<float>& x, const std::vector<int64_t>& shape) {
        ov::Shape dims(shape.begin(), shape.end());
        request_.set_tensor(port(compiled_.inputs(), spec::kInputName), ov::Tensor(ov::element::f32, dims, x.data()));
    }

    void infer() { request_.infer(); }

    const float* output(std::vector<int64_t>& shape) {
        ov::Tensor y = request_.get_tensor(port(compiled_.outputs(), spec::kOutputName));
        const ov::Shape s = y.get_shape();
        shape.assign(s.begin(), s.end());
        return y.data<const float>();
    }

    std::string describe() const {
        return std::string("OpenVINO ") + ov::get_openvino_version().buildNumber + ": " + path_ + " on " + device_ +
               (device_ == "CPU" ? " (" + hint_ + ", " + std::to_string(threads_) + " threads)" : "");
    }

private:
    // The manifest's name when the model has it, else the first port (as run_model.py takes index 0).
    static ov::Output<const ov::Node> port(const std::vector<ov::Output<const ov::Node>>& ports, const std::string& name) {
        for (const auto& p : ports)
            if (p.get_names().count(name)) return p;
        return ports.at(0);
    }

    ov::Core core_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    std::string device_, path_, hint_;
    int threads_ = 0;
};
