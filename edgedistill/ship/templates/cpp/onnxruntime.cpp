// ---------------------------------------------------------------------- ONNX Runtime (C++ API)
// The settings run_model.py uses: the thread count, and idle worker threads that sleep instead of
// spinning between frames. CPU execution provider (append another one here for a GPU/NPU).
class Runner {
public:
    Runner(const std::string& path, int threads) : env_(ORT_LOGGING_LEVEL_WARNING, "edgedistill-app") {
        Ort::SessionOptions opts;
        opts.SetIntraOpNumThreads(threads);
        opts.AddConfigEntry("session.intra_op.allow_spinning", "0");
        session_ = Ort::Session(env_, path.c_str(), opts);
        input_name_ = name(session_.GetInputCount(), spec::kInputName, true);
        output_name_ = name(session_.GetOutputCount(), spec::kOutputName, false);
        path_ = path;
        threads_ = threads;
    }

    void set_input(std::vector<float>& x, const std::vector<int64_t>& shape) {
        shape_ = shape;
        auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        input_ = Ort::Value::CreateTensor<float>(memory, x.data(), x.size(), shape_.data(), shape_.size());
    }

    void infer() {
        const char* in[] = {input_name_.c_str()};
        const char* out[] = {output_name_.c_str()};
        outputs_ = session_.Run(Ort::RunOptions{nullptr}, in, &input_, 1, out, 1);
    }

    const float* output(std::vector<int64_t>& shape) {
        shape = outputs_.at(0).GetTensorTypeAndShapeInfo().GetShape();
        return outputs_[0].GetTensorData<float>();
    }

    std::string describe() const {
        return "ONNX Runtime " + Ort::GetVersionString() + ": " + path_ + " on CPU (" + std::to_string(threads_) +
               " threads)";
    }

private:
    // The manifest's name when the model has it, else the first one (as run_model.py takes index 0).
    std::string name(size_t n, const std::string& wanted, bool input) {
        Ort::AllocatorWithDefaultOptions alloc;
        std::string first;
        for (size_t i = 0; i < n; ++i) {
            std::string got = (input ? session_.GetInputNameAllocated(i, alloc) : session_.GetOutputNameAllocated(i, alloc)).get();
            if (got == wanted) return got;
            if (i == 0) first = got;
        }
        return first;
    }

    Ort::Env env_;
    Ort::Session session_{nullptr};
    Ort::Value input_{nullptr};
    std::vector<Ort::Value> outputs_;
    std::vector<int64_t> shape_;
    std::string input_name_, output_name_, path_;
    int threads_ = 0;
};
