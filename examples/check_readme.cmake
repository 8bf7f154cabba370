# The README's quick-start block (between the quickstart markers) must equal SOURCE.
file(READ "${README}" readme)
file(READ "${SOURCE}" source)
string(REGEX MATCH "<!-- quickstart:begin -->\n```cpp\n(.*)```\n<!-- quickstart:end -->" found
       "${readme}")
if(NOT found)
  message(FATAL_ERROR "README.md has no quickstart block between the markers")
endif()
if(NOT CMAKE_MATCH_1 STREQUAL source)
  message(FATAL_ERROR "README.md's quickstart block differs from ${SOURCE}; copy it over")
endif()
message(STATUS "README.md shows ${SOURCE} verbatim")
