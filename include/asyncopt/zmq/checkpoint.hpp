// The ZeroMQ servers' checkpoint files are the core's (asyncopt/core/checkpoint.hpp); these
// names stay for code written against the plug-in.
#pragma once

#include <asyncopt/core/checkpoint.hpp>

namespace asyncopt::zeromq {

using asyncopt::CheckpointError;
using asyncopt::CheckpointReader;
using asyncopt::CheckpointWriter;
using asyncopt::read_checkpoint;
using asyncopt::write_checkpoint;

}  // namespace asyncopt::zeromq
