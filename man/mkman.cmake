# Makes a command's manual page from its --help (cmake -P; man/CMakeLists.txt runs it):
#   cmake -DPROG=path/to/executor-map -DNAME=executor-map -DSECTION=1 -DTITLE="..."
#         -DSOURCE="executor 0.1.0" -DDATE=2026-01-01 -DSEEALSO="a(1), b(3)" -DAWK=awk
#         -DSCRIPT=man/help2roff.awk -DOUT=executor-map.1 -P man/mkman.cmake
cmake_minimum_required(VERSION 3.20)
get_filename_component(dir ${OUT} DIRECTORY)
set(help ${dir}/${NAME}.help)
# (A sanitized build's leak check has nothing to say about --help.)
execute_process(COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=0 ${PROG} --help
                OUTPUT_FILE ${help} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mkman: ${PROG} --help exited ${rc}")
endif()
execute_process(COMMAND ${AWK} -f ${SCRIPT} -v prog=${NAME} -v section=${SECTION}
                        -v title=${TITLE} -v source=${SOURCE} -v date=${DATE} -v seealso=${SEEALSO}
                INPUT_FILE ${help} OUTPUT_FILE ${OUT}.tmp RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mkman: ${SCRIPT} failed on the help of ${PROG}")
endif()
file(RENAME ${OUT}.tmp ${OUT})
file(REMOVE ${help})
