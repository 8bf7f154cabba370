// Every update rule, decorator and schedule.
#pragma once

#include <asyncopt/update/adam.hpp>
#include <asyncopt/update/delay_compensated.hpp>
#include <asyncopt/update/momentum.hpp>
#include <asyncopt/update/one_bit_adam.hpp>
#include <asyncopt/update/regularize.hpp>
#include <asyncopt/update/schedule.hpp>
#include <asyncopt/update/sgd.hpp>
#include <asyncopt/update/staleness_aware.hpp>
