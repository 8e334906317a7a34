// Thin glue over rl-tools' persistence: the student as rl-tools' exporter builds it (Forward capability,
// example shape 500 x 2 x OBS), written by rl-tools' own save_code (policy.h) and tar backend (policy.tar),
// and read back by rl-tools' tar loader. This file only moves numpy buffers and strings in and out.
#pragma once

#include "chain.h"

#include <rl_tools/numeric_types/persist_code.h>
#include <rl_tools/containers/matrix/persist_code.h>
#include <rl_tools/containers/tensor/persist_code.h>
#include <rl_tools/nn/optimizers/adam/instance/persist_code.h>
#include <rl_tools/nn/layers/gru/persist_code.h>
#include <rl_tools/nn/layers/dense/persist_code.h>
#include <rl_tools/nn_models/sequential/persist_code.h>
#include <rl_tools/persist/backends/tar/operations_cpu.h>
#include <rl_tools/persist/backends/tar/operations_generic.h>
#include <rl_tools/nn/optimizers/adam/instance/persist.h>
#include <rl_tools/nn/layers/gru/persist.h>
#include <rl_tools/nn/layers/dense/persist.h>
#include <rl_tools/nn_models/sequential/persist.h>

namespace eyas_bridge {

constexpr TI EXAMPLE_SEQUENCE_LENGTH = 500;  // the example shape of rl-tools' RAPTOR exporter
constexpr TI EXAMPLE_BATCH_SIZE = 2;

// The policy exactly as rl-tools' port_checkpoint/raptor exporter declares it (parameter groups included).
template <TI OBS_DIM>
struct Deployed {
    using T = float;
    using TYPE_POLICY = rlt::numeric_types::Policy<T>;
    using INPUT_LAYER_CONFIG = rlt::nn::layers::dense::Configuration<TYPE_POLICY, TI, HIDDEN_DIM, rlt::nn::activation_functions::ActivationFunction::RELU, rlt::nn::layers::dense::DefaultInitializer<TYPE_POLICY, TI>, rlt::nn::parameters::groups::Input>;
    using INPUT_LAYER = rlt::nn::layers::dense::BindConfiguration<INPUT_LAYER_CONFIG>;
    using GRU_CONFIG = rlt::nn::layers::gru::Configuration<TYPE_POLICY, TI, HIDDEN_DIM, rlt::nn::parameters::groups::Normal>;
    using GRU = rlt::nn::layers::gru::BindConfiguration<GRU_CONFIG>;
    using OUTPUT_LAYER_CONFIG = rlt::nn::layers::dense::Configuration<TYPE_POLICY, TI, ACTION_DIM, rlt::nn::activation_functions::ActivationFunction::IDENTITY, rlt::nn::layers::dense::DefaultInitializer<TYPE_POLICY, TI>, rlt::nn::parameters::groups::Output>;
    using OUTPUT_LAYER = rlt::nn::layers::dense::BindConfiguration<OUTPUT_LAYER_CONFIG>;
    template <typename CONTENT, typename NEXT = rlt::nn_models::sequential::OutputModule>
    using Module = typename rlt::nn_models::sequential::Module<CONTENT, NEXT>;
    using MODULE_CHAIN = Module<INPUT_LAYER, Module<GRU, Module<OUTPUT_LAYER>>>;
    using CAPABILITY = rlt::nn::capability::Forward<true>;
    using INPUT_SHAPE = rlt::tensor::Shape<TI, EXAMPLE_SEQUENCE_LENGTH, EXAMPLE_BATCH_SIZE, OBS_DIM>;
    using MODEL = rlt::nn_models::sequential::Build<CAPABILITY, MODULE_CHAIN, INPUT_SHAPE>;
    using INPUT = rlt::Tensor<rlt::tensor::Specification<T, TI, INPUT_SHAPE>>;
    using OUTPUT = rlt::Tensor<rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, EXAMPLE_SEQUENCE_LENGTH, EXAMPLE_BATCH_SIZE, ACTION_DIM>>>;
};

// A C string literal for generated code: quotes and backslashes escaped, control characters rejected.
inline std::string c_string_literal(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if ((unsigned char)c < 0x20) throw py::value_error("meta strings must not contain control characters");
        out += c;
    }
    return out + "\"";
}

template <TI OBS_DIM>
class Exporter {
public:
    using D = Deployed<OBS_DIM>;
    using T = typename D::T;

    Exporter(const py::dict& params, const py::array& example_input) {
        rlt::malloc(device, model);
        rlt::malloc(device, buffer);
        rlt::malloc(device, input);
        rlt::malloc(device, output);
        rlt::init(device, rng, 0);
        set_parameters(params);
        auto xa = checked<T>(example_input, {EXAMPLE_SEQUENCE_LENGTH, EXAMPLE_BATCH_SIZE, OBS_DIM}, "example_input");
        from_numpy<T>(xa, input);
        rlt::Mode<rlt::mode::Evaluation<>> mode;
        rlt::evaluate(device, model, input, output, buffer, rng, mode);  // the example output, by rl-tools
    }
    ~Exporter() {
        rlt::free(device, model);
        rlt::free(device, buffer);
        rlt::free(device, input);
        rlt::free(device, output);
    }
    py::array_t<T> example_output() {
        py::array_t<T> out({(py::ssize_t)EXAMPLE_SEQUENCE_LENGTH, (py::ssize_t)EXAMPLE_BATCH_SIZE, (py::ssize_t)ACTION_DIM});
        to_numpy<T>(output, out.mutable_data());
        return out;
    }

    // policy.h: rl-tools' save_code for the actor and the example, then the meta namespace as rl-tools'
    // exporter writes it (name, commit_hash), with the I/O contract entries given as (key, value) strings.
    std::string header(const std::string& name, const std::vector<std::pair<std::string, std::string>>& meta) {
        std::stringstream ss;
        ss << rlt::save_code(device, model, std::string("rl_tools::checkpoint::actor"));
        ss << "\n" << rlt::save_code(device, input, std::string("rl_tools::checkpoint::example::input"), true);
        ss << "\n" << rlt::save_code(device, output, std::string("rl_tools::checkpoint::example::output"), true);
        ss << "\n" << "namespace rl_tools::checkpoint::meta{";
        ss << "\n" << "   " << "char name[] = " << c_string_literal(name) << ";";
        ss << "\n" << "   " << "char commit_hash[] = " << c_string_literal(RL_TOOLS_STRINGIFY(RL_TOOLS_COMMIT_HASH)) << ";";
        for (auto& kv : meta) ss << "\n" << "   " << "char " << kv.first << "[] = " << c_string_literal(kv.second) << ";";
        ss << "\n" << "}\n";
        return ss.str();
    }

    // policy.tar: rl-tools' tar backend, the layout of its exporter (actor group, example group).
    py::bytes tar(const std::string& checkpoint_name, const std::string& meta_json) {
        rlt::persist::backends::tar::Writer writer;
        rlt::persist::backends::tar::WriterGroup<rlt::persist::backends::tar::WriterGroupSpecification<TI, decltype(writer)>> root;
        root.writer = &writer;
        if (meta_json.size() + checkpoint_name.size() + 64 >= decltype(root)::SPEC::META_SIZE)
            throw py::value_error("meta too long for rl-tools' tar metadata block");
        auto actor = rlt::create_group(device, root, "actor");
        // set before save: save() writes the group's attributes (with type=sequential) and moves on
        rlt::set_attribute(device, actor, "checkpoint_name", checkpoint_name.c_str());
        rlt::set_attribute(device, actor, "meta", meta_json.c_str());
        rlt::save(device, model, actor);
        auto example = rlt::create_group(device, root, "example");
        rlt::save(device, input, example, "input");
        rlt::save(device, output, example, "output");
        rlt::persist::backends::tar::finalize(device, writer);
        return py::bytes(writer.buffer.data(), writer.buffer.size());
    }

private:
    void set_parameters(const py::dict& params) {
        auto& l0 = rlt::get_layer<0>(model);
        auto& l1 = rlt::get_layer<1>(model);
        auto& l2 = rlt::get_layer<2>(model);
        load_param(params, "0.weights", l0.weights.parameters);
        load_param(params, "0.biases", l0.biases.parameters);
        load_param(params, "1.weights_input", l1.weights_input.parameters);
        load_param(params, "1.biases_input", l1.biases_input.parameters);
        load_param(params, "1.weights_hidden", l1.weights_hidden.parameters);
        load_param(params, "1.biases_hidden", l1.biases_hidden.parameters);
        load_param(params, "1.initial_hidden_state", l1.initial_hidden_state.parameters);
        load_param(params, "2.weights", l2.weights.parameters);
        load_param(params, "2.biases", l2.biases.parameters);
    }
    template <typename C>
    void load_param(const py::dict& params, const char* name, C& c) {
        if (!params.contains(name)) throw py::key_error(std::string("missing parameter '") + name + "'");
        auto v = rlt::matrix_view(device, c);
        using V = decltype(v);
        std::vector<py::ssize_t> shape = V::ROWS == 1 ? std::vector<py::ssize_t>{(py::ssize_t)V::COLS}
                                                      : std::vector<py::ssize_t>{(py::ssize_t)V::ROWS, (py::ssize_t)V::COLS};
        auto arr = checked<T>(py::array::ensure(params[name]), shape, name);
        from_numpy<T>(arr, c);
    }

    DEVICE device;
    RNG rng;
    typename D::MODEL model;
    typename D::MODEL::template Buffer<> buffer;
    typename D::INPUT input;
    typename D::OUTPUT output;
};

// policy.tar read back with rl-tools' tar loader (as PX4's mc_raptor loads it): parameters, the example
// pair, and the example output recomputed by rl-tools from the loaded weights. rl-tools aborts on a
// malformed archive, so the Python side checks the entries first.
template <TI OBS_DIM>
py::dict load_tar(const py::bytes& data) {
    using D = Deployed<OBS_DIM>;
    using T = typename D::T;
    std::string buf = data;
    DEVICE device;
    RNG rng;
    rlt::init(device, rng, 0);
    typename D::MODEL model;
    typename D::MODEL::template Buffer<> buffer;
    typename D::INPUT input;
    typename D::OUTPUT output, recomputed;
    rlt::malloc(device, model); rlt::malloc(device, buffer); rlt::malloc(device, input);
    rlt::malloc(device, output); rlt::malloc(device, recomputed);
    rlt::persist::backends::tar::ReaderGroup<rlt::persist::backends::tar::ReaderGroupSpecification<TI>> root;
    root.data = buf.data();
    root.size = buf.size();
    auto actor = rlt::get_group(device, root, "actor");
    constexpr TI META_CAP = 2000;
    std::vector<char> name(META_CAP, 0), meta(META_CAP, 0);
    rlt::get_attribute<char*>(device, actor, "checkpoint_name", name.data(), META_CAP);
    rlt::get_attribute<char*>(device, actor, "meta", meta.data(), META_CAP);
    rlt::load(device, model, actor);
    auto example = rlt::get_group(device, root, "example");
    rlt::load(device, input, example, "input");
    rlt::load(device, output, example, "output");
    rlt::Mode<rlt::mode::Evaluation<>> mode;
    rlt::evaluate(device, model, input, recomputed, buffer, rng, mode);

    py::dict out, params;
    auto put = [&](const char* key, auto& c) {
        auto v = rlt::matrix_view(device, c);
        using V = decltype(v);
        py::array_t<T> a = V::ROWS == 1 ? py::array_t<T>(std::vector<py::ssize_t>{(py::ssize_t)V::COLS})
                                         : py::array_t<T>(std::vector<py::ssize_t>{(py::ssize_t)V::ROWS, (py::ssize_t)V::COLS});
        to_numpy<T>(c, a.mutable_data());
        params[key] = a;
    };
    auto& l0 = rlt::get_layer<0>(model);
    auto& l1 = rlt::get_layer<1>(model);
    auto& l2 = rlt::get_layer<2>(model);
    put("0.weights", l0.weights.parameters); put("0.biases", l0.biases.parameters);
    put("1.weights_input", l1.weights_input.parameters); put("1.biases_input", l1.biases_input.parameters);
    put("1.weights_hidden", l1.weights_hidden.parameters); put("1.biases_hidden", l1.biases_hidden.parameters);
    put("1.initial_hidden_state", l1.initial_hidden_state.parameters);
    put("2.weights", l2.weights.parameters); put("2.biases", l2.biases.parameters);
    auto arr3 = [&](auto& c, TI last) {
        py::array_t<T> a({(py::ssize_t)EXAMPLE_SEQUENCE_LENGTH, (py::ssize_t)EXAMPLE_BATCH_SIZE, (py::ssize_t)last});
        to_numpy<T>(c, a.mutable_data());
        return a;
    };
    out["parameters"] = params;
    out["example_input"] = arr3(input, OBS_DIM);
    out["example_output"] = arr3(output, ACTION_DIM);
    out["recomputed_output"] = arr3(recomputed, ACTION_DIM);
    out["checkpoint_name"] = std::string(name.data());
    out["meta"] = std::string(meta.data());
    rlt::free(device, model); rlt::free(device, buffer); rlt::free(device, input);
    rlt::free(device, output); rlt::free(device, recomputed);
    return out;
}

template <TI OBS_DIM>
void bind_export(py::module_& m) {
    using E = Exporter<OBS_DIM>;
    std::string suffix = "_obs" + std::to_string(OBS_DIM);
    py::class_<E>(m, ("Exporter" + suffix).c_str(), "rl-tools' deployed student (float32, example 500 x 2) for save_code / tar")
        .def(py::init<const py::dict&, const py::array&>(), py::arg("parameters"), py::arg("example_input"))
        .def("example_output", &E::example_output)
        .def("header", &E::header, py::arg("name"), py::arg("meta"))
        .def("tar", &E::tar, py::arg("checkpoint_name"), py::arg("meta_json"));
    m.def(("load_tar" + suffix).c_str(), &load_tar<OBS_DIM>, py::arg("data"),
          "read policy.tar with rl-tools' tar loader: parameters, example pair, example output recomputed by rl-tools");
}

}  // namespace eyas_bridge
