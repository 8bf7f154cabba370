// The MPI plug-in (component asyncopt::mpi): round algorithms across the processes of an MPI
// job. Include this header and link asyncopt::mpi.
#pragma once

#include <asyncopt/asyncopt.hpp>
#include <asyncopt/mpi/communicator.hpp>
#include <asyncopt/mpi/transport.hpp>
