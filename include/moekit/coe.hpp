// moekit/coe.hpp — Chain-of-Experts: iterative routing over one expert pool.
#pragma once

#include "moe.hpp"
#include "coe/coe_layer.hpp"
#include "coe/spec.hpp"
