// moekit/optim.hpp — optimizers, parameter groups, schedules and clipping.
#pragma once

#include "optim/adamw.hpp"
#include "optim/clip.hpp"
#include "optim/lion.hpp"
#include "optim/optimizer.hpp"
#include "optim/schedule.hpp"
#include "optim/sgd.hpp"
