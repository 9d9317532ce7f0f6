# Writes executor.pc at install time, so that it names the prefix actually installed to
# (cmake --install --prefix P), not the one known when the build was configured.
# Expects EXEC_PC_LIBDIR, EXEC_PC_INCLUDEDIR (relative or absolute) and PROJECT_VERSION.
function(exec_write_pc in out)
  set(EXEC_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  foreach(v LIBDIR INCLUDEDIR)
    if(NOT IS_ABSOLUTE "${EXEC_PC_${v}}")
      set(EXEC_PC_${v} "\${prefix}/${EXEC_PC_${v}}")
    endif()
  endforeach()
  configure_file("${in}" "${out}" @ONLY)
endfunction()
