// Thin pybind11 glue over rl-tools' own Dense -> GRU -> Dense chain.
// Every numeric operation below is an rl-tools function (forward, backward_full, evaluate_step,
// mse, Adam); this file only moves numpy buffers in and out and checks shapes.
#pragma once

#include <rl_tools/operations/cpu.h>
// Adam's per-parameter operations must come before the layers (see rl_tools/nn/optimizers/adam/adam.h).
#include <rl_tools/nn/optimizers/adam/instance/operations_generic.h>
#include <rl_tools/nn/operations_cpu.h>
#include <rl_tools/nn/layers/dense/operations_generic.h>
#include <rl_tools/nn/layers/gru/operations_generic.h>
#include <rl_tools/nn_models/sequential/operations_generic.h>
#include <rl_tools/nn/optimizers/adam/operations_generic.h>
#include <rl_tools/nn/loss_functions/mse/operations_generic.h>

#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace eyas_bridge {
namespace rlt = rl_tools;
namespace py = pybind11;

using DEVICE = rlt::devices::DefaultCPU;
using TI = typename DEVICE::index_t;
using RNG = typename DEVICE::SPEC::RANDOM::template ENGINE<>;
inline DEVICE& glue_device() {  // rl-tools' CPU device is stateless; one instance serves the copy helpers
    static DEVICE d;
    return d;
}

constexpr TI HIDDEN_DIM = 16;
constexpr TI ACTION_DIM = 4;

// The RAPTOR student exactly as rl-tools' post-training config builds it.
template <typename T, TI OBS_DIM, TI SEQUENCE_LENGTH, TI BATCH_SIZE>
struct Student {
    using TYPE_POLICY = rlt::numeric_types::Policy<T>;
    using INPUT_SHAPE = rlt::tensor::Shape<TI, SEQUENCE_LENGTH, BATCH_SIZE, OBS_DIM>;
    using INPUT_LAYER_CONFIG = rlt::nn::layers::dense::Configuration<TYPE_POLICY, TI, HIDDEN_DIM, rlt::nn::activation_functions::ActivationFunction::RELU>;
    using INPUT_LAYER = rlt::nn::layers::dense::BindConfiguration<INPUT_LAYER_CONFIG>;
    using GRU_CONFIG = rlt::nn::layers::gru::Configuration<TYPE_POLICY, TI, HIDDEN_DIM>;
    using GRU = rlt::nn::layers::gru::BindConfiguration<GRU_CONFIG>;
    using OUTPUT_LAYER_CONFIG = rlt::nn::layers::dense::Configuration<TYPE_POLICY, TI, ACTION_DIM, rlt::nn::activation_functions::ActivationFunction::IDENTITY>;
    using OUTPUT_LAYER = rlt::nn::layers::dense::BindConfiguration<OUTPUT_LAYER_CONFIG>;
    template <typename CONTENT, typename NEXT = rlt::nn_models::sequential::OutputModule>
    using Module = typename rlt::nn_models::sequential::Module<CONTENT, NEXT>;
    using MODULE_CHAIN = Module<INPUT_LAYER, Module<GRU, Module<OUTPUT_LAYER>>>;
    using CAPABILITY = rlt::nn::capability::Gradient<rlt::nn::parameters::Adam>;
    using MODEL = rlt::nn_models::sequential::Build<CAPABILITY, MODULE_CHAIN, INPUT_SHAPE>;
    using OPTIMIZER_SPEC = rlt::nn::optimizers::adam::Specification<TYPE_POLICY, TI, rlt::nn::optimizers::adam::DEFAULT_PARAMETERS_TENSORFLOW<TYPE_POLICY>>;
    using OPTIMIZER = rlt::nn::optimizers::Adam<OPTIMIZER_SPEC>;
};

inline std::string shape_str(const std::vector<py::ssize_t>& shape) {
    std::ostringstream s;
    s << "(";
    for (size_t i = 0; i < shape.size(); i++) s << (i ? ", " : "") << shape[i];
    s << (shape.size() == 1 ? ",)" : ")");
    return s.str();
}

// Checks dtype and exact shape; returns a C-contiguous array of T.
template <typename T>
py::array_t<T, py::array::c_style> checked(const py::array& a, const std::vector<py::ssize_t>& shape, const char* what) {
    if (!py::isinstance<py::array_t<T>>(a) && !(a.dtype().is(py::dtype::of<T>()))) {
        throw py::type_error(std::string(what) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                             ", got " + std::string(py::str(a.dtype())));
    }
    std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
    if (got != shape) {
        throw py::value_error(std::string(what) + ": expected shape " + shape_str(shape) + ", got " + shape_str(got));
    }
    return py::array_t<T, py::array::c_style>::ensure(a);
}

// Copies between numpy and any rl-tools Tensor/Matrix through flat row-major indexing.
template <typename T, typename CONTAINER>
void from_numpy(const py::array_t<T, py::array::c_style>& src, CONTAINER& dst) {
    auto v = rlt::matrix_view(glue_device(), dst);
    const T* p = src.data();
    using V = decltype(v);
    for (TI r = 0; r < V::ROWS; r++)
        for (TI c = 0; c < V::COLS; c++) rlt::set(v, r, c, p[r * V::COLS + c]);
}
template <typename T, typename CONTAINER>
void to_numpy(CONTAINER& src, T* p) {
    auto v = rlt::matrix_view(glue_device(), src);
    using V = decltype(v);
    for (TI r = 0; r < V::ROWS; r++)
        for (TI c = 0; c < V::COLS; c++) p[r * V::COLS + c] = rlt::get(v, r, c);
}

// The student's parameters named as in rl-tools checkpoints ("<layer>.<parameter>"), for any capability.
template <typename MODEL, typename F>
void for_each_student_parameter(MODEL& model, F&& f) {
    auto& l0 = rlt::get_layer<0>(model);
    auto& l1 = rlt::get_layer<1>(model);
    auto& l2 = rlt::get_layer<2>(model);
    f("0.weights", l0.weights);
    f("0.biases", l0.biases);
    f("1.weights_input", l1.weights_input);
    f("1.biases_input", l1.biases_input);
    f("1.weights_hidden", l1.weights_hidden);
    f("1.biases_hidden", l1.biases_hidden);
    f("1.initial_hidden_state", l1.initial_hidden_state);
    f("2.weights", l2.weights);
    f("2.biases", l2.biases);
}

// Copies every parameter from a dict of numpy arrays (vectors 1-D); a missing, unknown or misshaped one throws.
template <typename T, typename MODEL>
void set_student_parameters(MODEL& model, const py::dict& params) {
    std::vector<std::string> seen;
    for_each_student_parameter(model, [&](const char* name, auto& p) {
        if (!params.contains(name)) throw py::key_error(std::string("set_parameters: missing parameter '") + name + "'");
        auto v = rlt::matrix_view(glue_device(), p.parameters);
        using V = decltype(v);
        py::array a = py::array::ensure(params[name]);
        std::vector<py::ssize_t> shape = V::ROWS == 1 ? std::vector<py::ssize_t>{(py::ssize_t)V::COLS}
                                                      : std::vector<py::ssize_t>{(py::ssize_t)V::ROWS, (py::ssize_t)V::COLS};
        auto arr = checked<T>(a, shape, name);
        from_numpy<T>(arr, p.parameters);
        seen.push_back(name);
    });
    if ((size_t)py::len(params) != seen.size()) {
        for (auto item : params) {
            std::string k = py::str(item.first);
            if (std::find(seen.begin(), seen.end(), k) == seen.end())
                throw py::key_error("set_parameters: unknown parameter '" + k + "'");
        }
    }
}

template <typename T, TI OBS_DIM, TI SEQUENCE_LENGTH, TI BATCH_SIZE>
class Chain {
public:
    using S = Student<T, OBS_DIM, SEQUENCE_LENGTH, BATCH_SIZE>;
    using MODEL = typename S::MODEL;
    using TYPE_POLICY = typename S::TYPE_POLICY;
    using INPUT_SPEC = rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, SEQUENCE_LENGTH, BATCH_SIZE, OBS_DIM>>;
    using OUTPUT_SPEC = rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, SEQUENCE_LENGTH, BATCH_SIZE, ACTION_DIM>>;
    using RESET_SPEC = rlt::tensor::Specification<bool, TI, rlt::tensor::Shape<TI, SEQUENCE_LENGTH, BATCH_SIZE, 1>>;
    using STEP_INPUT_SPEC = rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, BATCH_SIZE, OBS_DIM>>;
    using STEP_OUTPUT_SPEC = rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, BATCH_SIZE, ACTION_DIM>>;
    using RESET_MODE_SPEC = rlt::nn::layers::gru::ResetModeSpecification<TI, rlt::Tensor<RESET_SPEC>&>;
    using RESET_MODE = rlt::nn::layers::gru::ResetMode<rlt::mode::Default<>, RESET_MODE_SPEC>;

    Chain(unsigned long long seed) {
        rlt::malloc(device, model);
        rlt::malloc(device, buffer);
        rlt::malloc(device, state);
        rlt::malloc(device, optimizer);
        rlt::malloc(device, input);
        rlt::malloc(device, output_grad);
        rlt::malloc(device, d_input);
        rlt::malloc(device, target);
        rlt::malloc(device, reset);
        rlt::malloc(device, step_input);
        rlt::malloc(device, step_output);
        rlt::init(device, rng, seed);
        rlt::init_weights(device, model, rng);  // rl-tools' own initialisation
        rlt::zero_gradient(device, model);
        rlt::reset_optimizer_state(device, optimizer, model);
        rlt::reset(device, model, state, rng);
    }
    ~Chain() {
        rlt::free(device, model);
        rlt::free(device, buffer);
        rlt::free(device, state);
        rlt::free(device, optimizer);
        rlt::free(device, input);
        rlt::free(device, output_grad);
        rlt::free(device, d_input);
        rlt::free(device, target);
        rlt::free(device, reset);
        rlt::free(device, step_input);
        rlt::free(device, step_output);
    }

    // ---- parameters, named as in rl-tools checkpoints: "<layer>.<parameter>"
    template <typename F>
    void for_each_parameter(F&& f) { for_each_student_parameter(model, f); }
    template <typename C>
    static py::array_t<T> container_to_numpy(C& c, bool squeeze_rows) {
        auto v = rlt::matrix_view(glue_device(), c);
        using V = decltype(v);
        std::vector<py::ssize_t> shape = squeeze_rows && V::ROWS == 1 ? std::vector<py::ssize_t>{(py::ssize_t)V::COLS}
                                                                        : std::vector<py::ssize_t>{(py::ssize_t)V::ROWS, (py::ssize_t)V::COLS};
        py::array_t<T> out(shape);
        to_numpy<T>(c, out.mutable_data());
        return out;
    }
    // Vectors (biases, GRU vectors) are 1-D in numpy; rl-tools stores dense biases as 1 x N matrices.
    std::map<std::string, py::array_t<T>> get_parameters() {
        std::map<std::string, py::array_t<T>> out;
        for_each_parameter([&](const char* name, auto& p) { out[name] = container_to_numpy(p.parameters, true); });
        return out;
    }
    std::map<std::string, py::array_t<T>> get_gradients() {
        std::map<std::string, py::array_t<T>> out;
        for_each_parameter([&](const char* name, auto& p) { out[name] = container_to_numpy(p.gradient, true); });
        return out;
    }
    std::map<std::string, py::array_t<T>> get_optimizer_moments(bool second) {
        std::map<std::string, py::array_t<T>> out;
        for_each_parameter([&](const char* name, auto& p) {
            out[name] = second ? container_to_numpy(p.gradient_second_order_moment, true)
                               : container_to_numpy(p.gradient_first_order_moment, true);
        });
        return out;
    }
    void set_parameters(const py::dict& params) { set_student_parameters<T>(model, params); }

    // ---- sequence forward (rl-tools' `forward`, with its ResetMode when a mask is given)
    py::array_t<T> forward(const py::array& x, const py::object& reset_mask) {
        auto xa = checked<T>(x, {SEQUENCE_LENGTH, BATCH_SIZE, OBS_DIM}, "input");
        from_numpy<T>(xa, input);
        has_reset = !reset_mask.is_none();
        if (has_reset) {
            auto ra = checked<bool>(py::array::ensure(reset_mask), {SEQUENCE_LENGTH, BATCH_SIZE}, "reset");
            const bool* p = ra.data();
            for (TI s = 0; s < SEQUENCE_LENGTH; s++)
                for (TI b = 0; b < BATCH_SIZE; b++) rlt::set(device, reset, p[s * BATCH_SIZE + b], s, b, 0);
        }
        {
            py::gil_scoped_release release;
            run_forward();
        }
        py::array_t<T> out({(py::ssize_t)SEQUENCE_LENGTH, (py::ssize_t)BATCH_SIZE, (py::ssize_t)ACTION_DIM});
        auto o = rlt::output(device, model);
        to_numpy<T>(o, out.mutable_data());
        forward_done = true;
        return out;
    }

    // ---- backward from dL/d(output): fills every parameter's gradient (zeroed first) and returns dL/d(input)
    py::array_t<T> backward(const py::array& d_output) {
        if (!forward_done) throw std::runtime_error("backward: call forward first");
        auto da = checked<T>(d_output, {SEQUENCE_LENGTH, BATCH_SIZE, ACTION_DIM}, "d_output");
        from_numpy<T>(da, output_grad);
        {
            py::gil_scoped_release release;
            rlt::zero_gradient(device, model);
            run_backward();
        }
        py::array_t<T> out({(py::ssize_t)SEQUENCE_LENGTH, (py::ssize_t)BATCH_SIZE, (py::ssize_t)OBS_DIM});
        to_numpy<T>(d_input, out.mutable_data());
        return out;
    }

    // ---- rl-tools' MSE (mean over every element) and its gradient 2 (a - b) / N
    T mse(const py::array& a, const py::array& b) {
        load_output_and_target(a, b);
        auto av = rlt::matrix_view(device, output_grad);
        auto bv = rlt::matrix_view(device, target);
        return rlt::nn::loss_functions::mse::evaluate(device, av, bv);
    }
    py::array_t<T> mse_gradient(const py::array& a, const py::array& b) {
        load_output_and_target(a, b);
        auto av = rlt::matrix_view(device, output_grad);
        auto bv = rlt::matrix_view(device, target);
        rlt::nn::loss_functions::mse::gradient(device, av, bv, av, (T)1);
        py::array_t<T> out({(py::ssize_t)SEQUENCE_LENGTH, (py::ssize_t)BATCH_SIZE, (py::ssize_t)ACTION_DIM});
        to_numpy<T>(output_grad, out.mutable_data());
        return out;
    }

    // ---- one rl-tools Adam step on the gradients held by the model
    void adam_step(T learning_rate) {
        py::gil_scoped_release release;
        optimizer.parameters.alpha = learning_rate;
        rlt::step(device, optimizer, model);
    }
    void reset_optimizer_state() { rlt::reset_optimizer_state(device, optimizer, model); }
    TI optimizer_age() { return rlt::get(device, optimizer.age, 0); }

    // ---- the whole post-training step in C++: forward (reset mask), MSE, backward, Adam. Returns the loss.
    T train_step(const py::array& x, const py::array& y, const py::object& reset_mask, T learning_rate) {
        auto xa = checked<T>(x, {SEQUENCE_LENGTH, BATCH_SIZE, OBS_DIM}, "input");
        auto ya = checked<T>(y, {SEQUENCE_LENGTH, BATCH_SIZE, ACTION_DIM}, "target");
        from_numpy<T>(xa, input);
        from_numpy<T>(ya, target);
        has_reset = !reset_mask.is_none();
        if (has_reset) {
            auto ra = checked<bool>(py::array::ensure(reset_mask), {SEQUENCE_LENGTH, BATCH_SIZE}, "reset");
            const bool* p = ra.data();
            for (TI s = 0; s < SEQUENCE_LENGTH; s++)
                for (TI b = 0; b < BATCH_SIZE; b++) rlt::set(device, reset, p[s * BATCH_SIZE + b], s, b, 0);
        }
        T loss;
        {
            py::gil_scoped_release release;
            loss = train_step_nogil(learning_rate);
        }
        forward_done = true;
        return loss;
    }
    // Repeats train_step on the data already loaded (benchmarks: no numpy copies inside the timed loop).
    T train_steps_loaded(TI n, T learning_rate) {
        T loss = 0;
        py::gil_scoped_release release;
        for (TI i = 0; i < n; i++) loss = train_step_nogil(learning_rate);
        return loss;
    }

    // ---- step-wise evaluation with persistent state (rl-tools' evaluate_step)
    void reset_state() { rlt::reset(device, model, state, rng); }
    py::array_t<T> evaluate_step(const py::array& x, bool auto_reset) {
        auto xa = checked<T>(x, {BATCH_SIZE, OBS_DIM}, "input");
        from_numpy<T>(xa, step_input);
        {
            py::gil_scoped_release release;
            step_nogil(auto_reset);
        }
        py::array_t<T> out({(py::ssize_t)BATCH_SIZE, (py::ssize_t)ACTION_DIM});
        to_numpy<T>(step_output, out.mutable_data());
        return out;
    }
    // n evaluate_steps on the loaded input (latency benchmarks without numpy conversion)
    void evaluate_steps_loaded(TI n) {
        py::gil_scoped_release release;
        for (TI i = 0; i < n; i++) step_nogil(true);
    }
    py::array_t<T> hidden_state() {
        auto& gru_state = state.content_state.next_content_state.state;  // layer 1 (the GRU)
        return container_to_numpy(gru_state.state, false);
    }

private:
    void run_forward() {
        if (has_reset) {
            rlt::Mode<RESET_MODE> mode;
            mode.reset_container = reset;
            rlt::forward(device, model, input, buffer, rng, mode);
        } else {
            rlt::forward(device, model, input, buffer, rng);
        }
    }
    void run_backward() {
        if (has_reset) {
            rlt::Mode<RESET_MODE> mode;
            mode.reset_container = reset;
            rlt::backward_full(device, model, input, output_grad, d_input, buffer, mode);
        } else {
            rlt::backward_full(device, model, input, output_grad, d_input, buffer);
        }
    }
    T train_step_nogil(T learning_rate) {
        rlt::zero_gradient(device, model);
        run_forward();
        auto o = rlt::output(device, model);
        auto ov = rlt::matrix_view(device, o);
        auto tv = rlt::matrix_view(device, target);
        auto gv = rlt::matrix_view(device, output_grad);
        T loss = rlt::nn::loss_functions::mse::evaluate(device, ov, tv);
        rlt::nn::loss_functions::mse::gradient(device, ov, tv, gv, (T)1);
        run_backward();
        optimizer.parameters.alpha = learning_rate;
        rlt::step(device, optimizer, model);
        return loss;
    }
    void step_nogil(bool auto_reset) {
        if (auto_reset) {
            rlt::evaluate_step(device, model, step_input, state, step_output, buffer, rng);
        } else {
            rlt::Mode<rlt::nn::layers::gru::NoAutoResetMode<rlt::mode::Default<>>> mode;
            rlt::evaluate_step(device, model, step_input, state, step_output, buffer, rng, mode);
        }
    }
    void load_output_and_target(const py::array& a, const py::array& b) {
        auto aa = checked<T>(a, {SEQUENCE_LENGTH, BATCH_SIZE, ACTION_DIM}, "output");
        auto ba = checked<T>(b, {SEQUENCE_LENGTH, BATCH_SIZE, ACTION_DIM}, "target");
        from_numpy<T>(aa, output_grad);
        from_numpy<T>(ba, target);
    }

    DEVICE device;
    RNG rng;
    MODEL model;
    typename MODEL::template Buffer<> buffer;
    typename MODEL::template State<> state;
    typename S::OPTIMIZER optimizer;
    rlt::Tensor<INPUT_SPEC> input, d_input;
    rlt::Tensor<OUTPUT_SPEC> output_grad, target;
    rlt::Tensor<RESET_SPEC> reset;
    rlt::Tensor<STEP_INPUT_SPEC> step_input;
    rlt::Tensor<STEP_OUTPUT_SPEC> step_output;
    bool has_reset = false;
    bool forward_done = false;
};

template <typename T, TI OBS_DIM, TI SEQUENCE_LENGTH, TI BATCH_SIZE>
void bind_chain(py::module_& m, const char* name) {
    using C = Chain<T, OBS_DIM, SEQUENCE_LENGTH, BATCH_SIZE>;
    py::class_<C>(m, name, "rl-tools Dense(RELU)-GRU-Dense(IDENTITY) chain with fixed (sequence, batch, obs) shape")
        .def(py::init<unsigned long long>(), py::arg("seed") = 0)
        .def_property_readonly_static("num_obs", [](py::object) { return OBS_DIM; })
        .def_property_readonly_static("num_actions", [](py::object) { return ACTION_DIM; })
        .def_property_readonly_static("hidden_dim", [](py::object) { return HIDDEN_DIM; })
        .def_property_readonly_static("sequence_length", [](py::object) { return SEQUENCE_LENGTH; })
        .def_property_readonly_static("batch_size", [](py::object) { return BATCH_SIZE; })
        .def_property_readonly_static("dtype", [](py::object) { return py::dtype::of<T>(); })
        .def("get_parameters", &C::get_parameters)
        .def("set_parameters", &C::set_parameters, py::arg("parameters"))
        .def("get_gradients", &C::get_gradients)
        .def("get_optimizer_moments", &C::get_optimizer_moments, py::arg("second") = false)
        .def("forward", &C::forward, py::arg("input"), py::arg("reset") = py::none())
        .def("backward", &C::backward, py::arg("d_output"))
        .def("mse", &C::mse, py::arg("output"), py::arg("target"))
        .def("mse_gradient", &C::mse_gradient, py::arg("output"), py::arg("target"))
        .def("adam_step", &C::adam_step, py::arg("learning_rate") = (T)1e-4)
        .def("reset_optimizer_state", &C::reset_optimizer_state)
        .def_property_readonly("optimizer_age", &C::optimizer_age)
        .def("train_step", &C::train_step, py::arg("input"), py::arg("target"), py::arg("reset") = py::none(),
             py::arg("learning_rate") = (T)1e-4)
        .def("train_steps_loaded", &C::train_steps_loaded, py::arg("n"), py::arg("learning_rate") = (T)1e-4)
        .def("reset", &C::reset_state)
        .def("evaluate_step", &C::evaluate_step, py::arg("input"), py::arg("auto_reset") = true)
        .def("evaluate_steps_loaded", &C::evaluate_steps_loaded, py::arg("n"))
        .def("hidden_state", &C::hidden_state);
}

}  // namespace eyas_bridge
