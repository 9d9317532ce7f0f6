# Checks the systemd units (cmake -P; ctest's systemd_units): systemd-analyze verify
# says nothing about them, and systemd-analyze security rates the service's exposure
# at MAX_EXPOSURE or less (on its 0-10 scale, times 10: 15 is 1.5, "OK").
#   cmake -DANALYZE=systemd-analyze -DDIR=BUILD/systemd/check -DMAX_EXPOSURE=15
#         -P systemd/check-units.cmake
cmake_minimum_required(VERSION 3.20)
# (--man=no: the page is not installed yet; the packages' test checks it is there.)
execute_process(COMMAND ${ANALYZE} verify --man=no ${DIR}/executor-serve@check.service
                        ${DIR}/executor-serve@check.socket
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT "${out}${err}" STREQUAL "")
  message(FATAL_ERROR "systemd-analyze verify (exit ${rc}):\n${out}${err}")
endif()
execute_process(COMMAND ${ANALYZE} security --offline=true --threshold=${MAX_EXPOSURE}
                        --no-pager ${DIR}/executor-serve@check.service
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(REGEX MATCH "Overall exposure level[^\n]*" level "${out}${err}")
if(NOT rc EQUAL 0 OR level STREQUAL "")
  message(FATAL_ERROR "systemd-analyze security: over ${MAX_EXPOSURE} (exit ${rc}):\n${out}${err}")
endif()
message(STATUS "systemd-analyze verify: clean; security: ${level}")
