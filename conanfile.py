"""Conan 2 recipe for asyncopt, a header-only library.

The package holds the headers and asyncopt's own CMake package config (installed by
CMake), which consumers load with find_package(asyncopt CONFIG REQUIRED [COMPONENTS
objectives io zmq cuda mpi]); the recipe's components mirror its targets: asyncopt::asyncopt
(xsimd only), asyncopt::objectives (Eigen), asyncopt::io (Eigen and zlib), asyncopt::zmq
(option with_zmq, requires cppzmq; zlib), asyncopt::cuda (option with_cuda, the CUDA
toolkit from the system) and asyncopt::mpi (option with_mpi, requires openmpi; its C
library only).
"""

import os
import re

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load


class AsyncoptConan(ConanFile):
    name = "asyncopt"
    description = ("Asynchronous and parallel SGD: update rules, consistency policies and "
                   "transports composed into one optimizer type")
    license = "BSD-3-Clause"
    topics = ("sgd", "hogwild", "parameter-server", "optimization", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_zmq": [True, False], "with_cuda": [True, False], "with_mpi": [True, False]}
    default_options = {"with_zmq": False, "with_cuda": False, "with_mpi": False}
    exports_sources = ("CMakeLists.txt", "cmake/*", "include/*", "LICENSE")
    no_copy_source = True

    def set_version(self):
        header = load(self, os.path.join(self.recipe_folder, "include", "asyncopt", "core",
                                         "config.hpp"))
        parts = [re.search(rf"#define ASYNCOPT_VERSION_{part} +(\d+)", header).group(1)
                 for part in ("MAJOR", "MINOR", "PATCH")]
        self.version = ".".join(parts)

    def requirements(self):
        self.requires("eigen/[>=3.4 <4]")
        self.requires("xsimd/[>=8.1 <14]")
        self.requires("zlib/[>=1.2.11 <2]")
        if self.options.with_zmq:
            self.requires("cppzmq/[>=4.9 <5]")
        if self.options.with_mpi:
            self.requires("openmpi/[>=4.1 <6]")

    def validate(self):
        check_min_cppstd(self, 20)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        toolchain = CMakeToolchain(self)
        for option in ("TESTS", "BENCH", "EXAMPLES"):
            toolchain.cache_variables[f"ASYNCOPT_BUILD_{option}"] = False
        toolchain.cache_variables["ASYNCOPT_INSTALL"] = True
        toolchain.generate()
        CMakeDeps(self).generate()

    def build(self):
        CMake(self).configure()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        CMake(self).install()
        # The mpi component's targets exist only where the build found MPI's C library.
        if self.options.with_mpi and not os.path.isfile(os.path.join(
                self.package_folder, "share", "cmake", "asyncopt", "asyncopt_mpiTargets.cmake")):
            raise ConanException("asyncopt: with_mpi=True, but the build did not find MPI's C "
                                 "library (CMake's FindMPI, COMPONENTS C)")

    def package_id(self):
        self.info.clear()

    def package_info(self):
        # Consumers use the package's own config, which repairs Debian's xsimd target and
        # checks components; Conan only puts its folder on CMake's search path.
        self.cpp_info.set_property("cmake_find_mode", "none")

        core = self.cpp_info.components["asyncopt"]
        core.set_property("cmake_target_name", "asyncopt::asyncopt")
        core.builddirs = [os.path.join("share", "cmake", "asyncopt")]
        core.requires = ["xsimd::xsimd"]
        core.bindirs = []
        core.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread"]
        objectives = self.cpp_info.components["objectives"]
        objectives.set_property("cmake_target_name", "asyncopt::objectives")
        objectives.requires = ["asyncopt", "eigen::eigen"]
        objectives.bindirs = []
        objectives.libdirs = []
        io = self.cpp_info.components["io"]
        io.set_property("cmake_target_name", "asyncopt::io")
        io.requires = ["asyncopt", "eigen::eigen", "zlib::zlib"]
        io.bindirs = []
        io.libdirs = []
        if self.options.with_zmq:
            zmq = self.cpp_info.components["zmq"]
            zmq.set_property("cmake_target_name", "asyncopt::zmq")
            zmq.requires = ["asyncopt", "cppzmq::cppzmq", "zlib::zlib"]
            zmq.bindirs = []
            zmq.libdirs = []
        if self.options.with_cuda:
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "asyncopt::cuda")
            cuda.requires = ["asyncopt"]
            cuda.bindirs = []
            cuda.libdirs = []
        if self.options.with_mpi:
            # MPI's C API from C++: openmpi's ompi-c (MPI::MPI_C), without the deprecated C++
            # bindings that mpi.h would otherwise declare.
            mpi = self.cpp_info.components["mpi"]
            mpi.set_property("cmake_target_name", "asyncopt::mpi")
            mpi.requires = ["asyncopt", "openmpi::ompi-c"]
            mpi.defines = ["OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"]
            mpi.bindirs = []
            mpi.libdirs = []
