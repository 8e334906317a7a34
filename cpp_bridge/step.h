// Thin glue for step-wise inference from Python (eyas.InferencePolicy): rl-tools' own evaluate_step
// (NoAutoResetMode) on the student built for one sample, run over the rows of any batch with each row's GRU
// state swapped in and out. The state lives in a numpy array owned by the caller, so batch size and per-row
// resets are the caller's; this file only moves numbers between numpy buffers and rl-tools' tensors.
#pragma once

#include "chain.h"

namespace eyas_bridge {

// A float buffer of exactly (rows, cols), C-contiguous, of dtype T (no conversion: it is written to).
template <typename T>
T* exact_buffer(py::array& a, py::ssize_t rows, py::ssize_t cols, const char* what) {
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols) {
        std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
        throw py::value_error(std::string(what) + ": expected shape " + shape_str({rows, cols}) + ", got " + shape_str(got));
    }
    if (!a.dtype().equal(py::dtype::of<T>()) || !(a.flags() & py::array::c_style) || !a.writeable())
        throw py::value_error(std::string(what) + ": expected a writeable C-contiguous " +
                              std::string(py::str(py::dtype::of<T>())) + " array");
    return static_cast<T*>(a.mutable_data());
}

template <typename T, TI OBS_DIM>
class Stepper {
public:
    using S = Student<T, OBS_DIM, 1, 1>;
    using MODEL = rlt::nn_models::sequential::Build<rlt::nn::capability::Forward<>, typename S::MODULE_CHAIN,
                                                   typename S::INPUT_SHAPE>;
    using STEP_INPUT = rlt::Tensor<rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, 1, OBS_DIM>>>;
    using STEP_OUTPUT = rlt::Tensor<rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, 1, ACTION_DIM>>>;
    using NO_AUTO_RESET = rlt::nn::layers::gru::NoAutoResetMode<rlt::mode::Default<>>;

    Stepper() {
        rlt::malloc(device, model);
        rlt::malloc(device, buffer);
        rlt::malloc(device, state);
        rlt::malloc(device, input);
        rlt::malloc(device, output);
        rlt::init(device, rng, 0);
        rlt::init_weights(device, model, rng);
        rlt::reset(device, model, state, rng);
    }
    ~Stepper() {
        rlt::free(device, model);
        rlt::free(device, buffer);
        rlt::free(device, state);
        rlt::free(device, input);
        rlt::free(device, output);
    }
    void set_parameters(const py::dict& params) { set_student_parameters<T>(model, params); }

    // One step for every row: hidden (B, 16) is read and overwritten with the new state, out (B, 4) written.
    void step(const py::array_t<T, py::array::c_style | py::array::forcecast>& obs, py::array hidden,
              py::array out) {
        const py::ssize_t rows = hidden.ndim() == 2 ? hidden.shape(0) : -1;
        if (obs.ndim() != 2 || obs.shape(0) != rows || obs.shape(1) != (py::ssize_t)OBS_DIM) {
            std::vector<py::ssize_t> got(obs.shape(), obs.shape() + obs.ndim());
            throw py::value_error("observations: expected shape " + shape_str({rows, (py::ssize_t)OBS_DIM}) +
                                  " (batch, features), got " + shape_str(got));
        }
        T* h = exact_buffer<T>(hidden, rows, HIDDEN_DIM, "hidden state");
        T* o = exact_buffer<T>(out, rows, ACTION_DIM, "out");
        const T* x = obs.data();
        if (rows > 16) {
            py::gil_scoped_release release;
            step_rows(x, h, o, rows);
        } else {
            step_rows(x, h, o, rows);
        }
    }

private:
    void step_rows(const T* x, T* h, T* o, py::ssize_t rows) {
        auto& gru_state = state.content_state.next_content_state.state.state;  // layer 1 (the GRU), (1, 16)
        rlt::Mode<NO_AUTO_RESET> mode;
        for (py::ssize_t b = 0; b < rows; b++) {
            T* hb = h + b * HIDDEN_DIM;
            for (TI i = 0; i < HIDDEN_DIM; i++) rlt::set(device, gru_state, hb[i], 0, i);
            for (TI i = 0; i < OBS_DIM; i++) rlt::set(device, input, x[b * OBS_DIM + i], 0, i);
            rlt::evaluate_step(device, model, input, state, output, buffer, rng, mode);
            for (TI i = 0; i < ACTION_DIM; i++) o[b * ACTION_DIM + i] = rlt::get(device, output, 0, i);
            for (TI i = 0; i < HIDDEN_DIM; i++) hb[i] = rlt::get(device, gru_state, 0, i);
        }
    }

    DEVICE device;
    RNG rng;
    MODEL model;
    typename MODEL::template Buffer<> buffer;
    typename MODEL::template State<> state;
    STEP_INPUT input;
    STEP_OUTPUT output;
};

template <typename T, TI OBS_DIM>
void bind_stepper(py::module_& m, const char* name) {
    using C = Stepper<T, OBS_DIM>;
    py::class_<C>(m, name, "rl-tools' evaluate_step (no auto reset) of the student, over the rows of any batch")
        .def(py::init<>())
        .def_property_readonly_static("num_obs", [](py::object) { return OBS_DIM; })
        .def_property_readonly_static("num_actions", [](py::object) { return ACTION_DIM; })
        .def_property_readonly_static("hidden_dim", [](py::object) { return HIDDEN_DIM; })
        .def_property_readonly_static("dtype", [](py::object) { return py::dtype::of<T>(); })
        .def("set_parameters", &C::set_parameters, py::arg("parameters"))
        .def("step", &C::step, py::arg("obs"), py::arg("hidden"), py::arg("out"));
}

}  // namespace eyas_bridge
