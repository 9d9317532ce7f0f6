# The README's example must be examples/readme.c, word for word, and must print
# the expected results on tests/data/seed.csv (quoted commas, "" and newlines).
file(READ ${SRC} src)
file(READ ${README} readme)
string(FIND "${readme}" "${src}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not show examples/readme.c as it is: update the README")
endif()
execute_process(COMMAND ${PROG} ${DATA} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
set(want "1,fruit\n2,animal\n3,tool\n4,unknown\n5,fruit\n")
if(NOT rc EQUAL 0 OR NOT out STREQUAL want)
  message(FATAL_ERROR "readme example: exit ${rc}, printed:\n${out}\nwanted:\n${want}")
endif()
message(STATUS "readme example ok")
