// moekit.hpp — the umbrella header for host code. It never includes CUDA
// headers; .cu files include <moekit/cuda.hpp> for the CUDA backend.
#pragma once

#include "moekit/core/config.hpp"
#include "moekit/core/dtype.hpp"
#include "moekit/core/error.hpp"
#include "moekit/core/random.hpp"
#include "moekit/core/shape.hpp"
#include "moekit/core/shape_rules.hpp"

#include "moekit/backend/backend.hpp"
#include "moekit/backend/cpu/kernels.hpp"

#include "moekit/tensor/ops/activation.hpp"
#include "moekit/tensor/ops/creation.hpp"
#include "moekit/tensor/ops/elementwise.hpp"
#include "moekit/tensor/ops/expand.hpp"
#include "moekit/tensor/ops/matmul.hpp"
#include "moekit/tensor/ops/reduce.hpp"
#include "moekit/tensor/ops/sums.hpp"
#include "moekit/tensor/print.hpp"
#include "moekit/tensor/tensor.hpp"

#include "moekit/autograd/gradcheck.hpp"
#include "moekit/autograd/grad_mode.hpp"
#include "moekit/autograd/ops/activation.hpp"
#include "moekit/autograd/ops/arithmetic.hpp"
#include "moekit/autograd/ops/math.hpp"
#include "moekit/autograd/ops/matmul.hpp"
#include "moekit/autograd/ops/reduce.hpp"
#include "moekit/autograd/parameter.hpp"
#include "moekit/autograd/tape.hpp"
#include "moekit/autograd/var.hpp"
