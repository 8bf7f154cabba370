# Repairs the `xsimd` target shipped by some distributions (Debian bookworm's
# libxsimd-dev 8.1): its INTERFACE_LINK_LIBRARIES names `xtl`, but xsimd's
# config never looks for xtl, so the bare name reaches the linker as `-lxtl`
# and every link fails with "cannot find -lxtl". xsimd itself only needs xtl for
# optional xtl::xcomplex support, which asyncopt does not use.
#
# Include this file after find_package(xsimd). If a target named `xtl` exists
# (the user found xtl), the link is left alone; otherwise the dangling name is
# removed. xsimd releases that do not link xtl are not touched, and running it
# twice is harmless. Installed next to asyncoptConfig.cmake so that consumers
# get the same repair.

if(TARGET xsimd AND NOT TARGET xtl)
  set(_asyncopt_xsimd_target xsimd)
  get_target_property(_asyncopt_xsimd_aliased xsimd ALIASED_TARGET)
  if(_asyncopt_xsimd_aliased)
    set(_asyncopt_xsimd_target "${_asyncopt_xsimd_aliased}")
  endif()
  get_target_property(_asyncopt_xsimd_links ${_asyncopt_xsimd_target} INTERFACE_LINK_LIBRARIES)
  if(_asyncopt_xsimd_links AND "xtl" IN_LIST _asyncopt_xsimd_links)
    list(REMOVE_ITEM _asyncopt_xsimd_links xtl)
    set_property(TARGET ${_asyncopt_xsimd_target} PROPERTY INTERFACE_LINK_LIBRARIES
                 "${_asyncopt_xsimd_links}")
  endif()
  unset(_asyncopt_xsimd_links)
  unset(_asyncopt_xsimd_aliased)
  unset(_asyncopt_xsimd_target)
endif()
