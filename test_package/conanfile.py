"""Builds and runs a small program against the created asyncopt package."""

import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, cmake_layout


class AsyncoptTestPackage(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeToolchain", "CMakeDeps"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def build(self):
        cmake = CMake(self)
        options = self.dependencies["asyncopt"].options
        cmake.configure(variables={
            "WITH_ZMQ": bool(options.with_zmq),
            "WITH_MPI": bool(options.with_mpi),
        })
        cmake.build()

    def test(self):
        # With with_mpi, the program runs as one MPI process, without mpiexec.
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
