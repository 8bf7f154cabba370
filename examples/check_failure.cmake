# Runs COMMAND (a list: the program and its arguments), which must fail: a non-zero exit
# status, and an error line on its output that matches EXPECT (a regular expression).
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 120)
set(log "${out}${err}")
if(result EQUAL 0)
  message(FATAL_ERROR "the program succeeded, but it must fail with '${EXPECT}':\n${log}")
endif()
if(NOT result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the program did not exit normally (${result}):\n${log}")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "exit status ${result}, but stderr does not match '${EXPECT}':\n${log}")
endif()
message(STATUS "exit status ${result} with the expected message")
