"""Stands in for a ConanCenter package with the Debian package of the same library.

Created as name/version@system (conan create conan/system --name eigen --version 3.4.0
--user system), it carries no files and generates no CMake config: a consumer's
find_package() falls through to the system's own config. With the profile in
conan/profiles/system, which replaces every eigen/*, xsimd/*, zlib/*, cppzmq/* and openmpi/*
by these, asyncopt's recipe builds offline against the Debian packages while declaring its
requirements as a user of ConanCenter would.
"""

from conan import ConanFile

# The components of ConanCenter's recipes that asyncopt's recipe requires by name: the
# wrapper declares them, empty, so that those requirements resolve.
COMPONENTS = {"openmpi": ("ompi-c",)}


class SystemPackage(ConanFile):
    package_type = "header-library"
    description = "A system (Debian) package, found by the consumer's own find_package()"

    def package_id(self):
        self.info.clear()

    def package_info(self):
        self.cpp_info.set_property("cmake_find_mode", "none")
        infos = [self.cpp_info.components[name] for name in COMPONENTS.get(self.name, ())]
        for info in infos or [self.cpp_info]:
            info.includedirs = []
            info.libdirs = []
            info.bindirs = []
