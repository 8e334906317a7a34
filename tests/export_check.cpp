// Compiled by tests/test_export.py against an exported policy.h (-I DIR) and rl-tools' headers, as firmware
// includes it. Prints the max |difference| of rl-tools' evaluation of the embedded example against the
// embedded example output, then, for the steps read from argv[1] ("T" then T lines "reset obs...", batch 2),
// one line of actions per step from rl-tools' evaluate_step (no auto-reset; reset = rl-tools' reset).
#include <rl_tools/operations/cpu.h>
#include <rl_tools/nn/layers/gru/operations_generic.h>
#include <rl_tools/nn/layers/dense/operations_generic.h>
#include <rl_tools/nn_models/sequential/operations_generic.h>

#include "policy.h"

#include <cmath>
#include <cstdio>
#include <fstream>

namespace rlt = rl_tools;
using DEVICE = rlt::devices::DefaultCPU;
using TI = typename DEVICE::index_t;
using T = float;
using POLICY = rl_tools::checkpoint::actor::TYPE;
constexpr TI BATCH = rl_tools::checkpoint::example::input::SHAPE::template GET<1>;
constexpr TI OBS = rl_tools::checkpoint::example::input::SHAPE::LAST;
constexpr TI ACT = POLICY::OUTPUT_SHAPE::LAST;

int main(int argc, char** argv) {
    DEVICE device;
    typename DEVICE::SPEC::RANDOM::ENGINE<> rng;
    rlt::init(device, rng, 0);
    POLICY::Buffer<true> buffer;
    POLICY::State<true> state;
    rlt::Tensor<rlt::tensor::Specification<T, TI, POLICY::OUTPUT_SHAPE>> output;
    rlt::Tensor<rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, BATCH, OBS>>> step_input;
    rlt::Tensor<rlt::tensor::Specification<T, TI, rlt::tensor::Shape<TI, BATCH, ACT>>> step_output;
    rlt::malloc(device, buffer);
    rlt::malloc(device, state);
    rlt::malloc(device, output);
    rlt::malloc(device, step_input);
    rlt::malloc(device, step_output);

    const auto& module = rl_tools::checkpoint::actor::module;
    rlt::evaluate(device, module, rl_tools::checkpoint::example::input::container, output, buffer, rng);
    T max_diff = 0;
    for (TI s = 0; s < POLICY::INPUT_SHAPE::FIRST; s++)
        for (TI b = 0; b < BATCH; b++)
            for (TI a = 0; a < ACT; a++)
                max_diff = std::fmax(max_diff, std::fabs(rlt::get(device, output, s, b, a) -
                                                         rlt::get(device, rl_tools::checkpoint::example::output::container, s, b, a)));
    std::printf("example_max_abs_diff %.9g\n", max_diff);
    std::printf("meta %s %s\n", rl_tools::checkpoint::meta::name, rl_tools::checkpoint::meta::observation);
    if (argc < 2) return 0;

    std::ifstream in(argv[1]);
    TI steps;
    in >> steps;
    rlt::Mode<rlt::nn::layers::gru::NoAutoResetMode<rlt::mode::Default<>>> mode;
    rlt::reset(device, module, state, rng);
    for (TI t = 0; t < steps; t++) {
        int reset;
        in >> reset;
        if (reset) rlt::reset(device, module, state, rng);  // back to the learned initial hidden state
        for (TI b = 0; b < BATCH; b++)
            for (TI i = 0; i < OBS; i++) {
                T v;
                in >> v;
                rlt::set(device, step_input, v, b, i);
            }
        rlt::evaluate_step(device, module, step_input, state, step_output, buffer, rng, mode);
        for (TI b = 0; b < BATCH; b++)
            for (TI a = 0; a < ACT; a++) std::printf("%.9g ", rlt::get(device, step_output, b, a));
        std::printf("\n");
    }
    return in ? 0 : 1;
}
