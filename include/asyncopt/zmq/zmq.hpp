// The ZeroMQ plug-in: parameter servers (asyncopt::zeromq::Server) and the transport that
// reaches them (asyncopt::transport::Zmq). Needs the CMake component asyncopt::zmq.
#pragma once

#include <asyncopt/zmq/channel.hpp>
#include <asyncopt/zmq/server.hpp>
#include <asyncopt/zmq/transport.hpp>
#include <asyncopt/zmq/wire.hpp>
