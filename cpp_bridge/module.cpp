// eyas._rltools: rl-tools' student chain compiled for the shapes eyas tests and benchmarks.
// One translation unit: rl-tools is header-only with some non-inline definitions, so it must be
// included exactly once per binary.
#include "chain.h"
#include "export.h"
#include "step.h"

namespace py = pybind11;
using eyas_bridge::bind_chain;
using eyas_bridge::bind_export;
using eyas_bridge::bind_stepper;

PYBIND11_MODULE(_rltools, m) {
    m.doc() = "rl-tools' own Dense(RELU) -> GRU(16) -> Dense(IDENTITY) student, for parity checks against eyas.StudentPolicy";
    m.attr("HIDDEN_DIM") = eyas_bridge::HIDDEN_DIM;
    m.attr("ACTION_DIM") = eyas_bridge::ACTION_DIM;
    // Class names: Chain_<dtype>_obs<OBS>_seq<SEQUENCE_LENGTH>_batch<BATCH_SIZE>.
    // rl-tools' post-training shape: 500 x 64, observation widths 22 (RAPTOR) and 26 (with motor speeds).
    bind_chain<float, 22, 500, 64>(m, "Chain_float32_obs22_seq500_batch64");
    bind_chain<double, 22, 500, 64>(m, "Chain_float64_obs22_seq500_batch64");
    bind_chain<float, 26, 500, 64>(m, "Chain_float32_obs26_seq500_batch64");
    bind_chain<double, 26, 500, 64>(m, "Chain_float64_obs26_seq500_batch64");
    // foundation_policy's example shape (500 x 2), and small shapes for fast / property-based tests.
    bind_chain<float, 22, 500, 2>(m, "Chain_float32_obs22_seq500_batch2");
    bind_chain<double, 22, 500, 2>(m, "Chain_float64_obs22_seq500_batch2");
    bind_chain<float, 22, 32, 8>(m, "Chain_float32_obs22_seq32_batch8");
    bind_chain<double, 22, 32, 8>(m, "Chain_float64_obs22_seq32_batch8");
    bind_chain<float, 26, 32, 8>(m, "Chain_float32_obs26_seq32_batch8");
    bind_chain<double, 26, 32, 8>(m, "Chain_float64_obs26_seq32_batch8");
    bind_chain<double, 22, 7, 3>(m, "Chain_float64_obs22_seq7_batch3");
    bind_chain<double, 26, 7, 3>(m, "Chain_float64_obs26_seq7_batch3");
    // Step-wise latency (batch 1, 4096); the sequence length sets evaluate_step's auto-reset period.
    bind_chain<float, 22, 500, 1>(m, "Chain_float32_obs22_seq500_batch1");
    bind_chain<float, 22, 1, 4096>(m, "Chain_float32_obs22_seq1_batch4096");
    // Step-wise inference over any batch (eyas.InferencePolicy): Step_<dtype>_obs<OBS>.
    bind_stepper<float, 22>(m, "Step_float32_obs22");
    bind_stepper<double, 22>(m, "Step_float64_obs22");
    bind_stepper<float, 26>(m, "Step_float32_obs26");
    bind_stepper<double, 26>(m, "Step_float64_obs26");
    // Deployment exports (eyas export): rl-tools' save_code and tar backend, float32, example 500 x 2.
    m.attr("EXAMPLE_SHAPE") = py::make_tuple(eyas_bridge::EXAMPLE_SEQUENCE_LENGTH, eyas_bridge::EXAMPLE_BATCH_SIZE);
    bind_export<22>(m);
    bind_export<26>(m);
}
