// asyncopt's compression stage: codecs (identity, fp16, bf16, top-k, random-k, QSGD, sign,
// PowerSGD), their byte payloads, and the memory around them (error feedback, DIANA), part of
// the core target asyncopt::asyncopt.
#pragma once

#include <asyncopt/compress/codecs.hpp>
#include <asyncopt/compress/memory.hpp>
#include <asyncopt/compress/payload.hpp>
#include <asyncopt/compress/stage.hpp>
