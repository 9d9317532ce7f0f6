# libexecutor_mpi: the EXEC_MPI backend (backends/mpi/), shared and static, built when
# MPI is found (EXEC_MPI=AUTO) or required (ON). libexecutor itself never links MPI: its
# registry refers to the backend weakly (backends/registry.c).
set(EXEC_HAVE_MPI OFF)
if(NOT EXEC_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(EXEC_HAVE_MPI ON)
    message(STATUS "EXEC_MPI: building libexecutor_mpi with MPI ${MPI_C_VERSION}")
  elseif(EXEC_MPI STREQUAL "ON")
    message(FATAL_ERROR "EXEC_MPI=ON but no MPI was found (Debian: libopenmpi-dev openmpi-bin, "
                        "or scripts/deps.sh --mpi)")
  else()
    message(STATUS "EXEC_MPI: no MPI found, libexecutor_mpi is not built")
  endif()
endif()

if(EXEC_HAVE_MPI)
  file(GLOB EXEC_MPI_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/backends/mpi/*.c)
  add_library(executor_mpi_obj OBJECT ${EXEC_MPI_SOURCES})
  set_target_properties(executor_mpi_obj PROPERTIES POSITION_INDEPENDENT_CODE ON
                        C_VISIBILITY_PRESET hidden)
  target_include_directories(executor_mpi_obj PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/include
                             ${CMAKE_CURRENT_SOURCE_DIR}/core)
  target_compile_definitions(executor_mpi_obj PRIVATE _GNU_SOURCE
                             $<$<BOOL:${EXEC_CHECKS}>:EXEC_CHECKS>)
  target_compile_options(executor_mpi_obj PRIVATE ${EXEC_WARNINGS})
  target_link_libraries(executor_mpi_obj PRIVATE MPI::MPI_C PkgConfig::executor_ck
                        Threads::Threads)

  add_library(executor_mpi SHARED $<TARGET_OBJECTS:executor_mpi_obj>)
  add_library(executor_mpi_static STATIC $<TARGET_OBJECTS:executor_mpi_obj>)
  set_target_properties(executor_mpi_static PROPERTIES OUTPUT_NAME executor_mpi)
  set_target_properties(executor_mpi PROPERTIES VERSION ${EXEC_LIBVERSION}
                        SOVERSION ${EXEC_SOVERSION})
  if(NOT EXEC_SANITIZE)
    target_link_options(executor_mpi PRIVATE LINKER:--no-undefined)
  endif()
  # Exported: the calls of executor_mpi.h (EXECUTOR_MPI_0) and the backend that
  # libexecutor refers to weakly (EXECUTOR_MPI_PRIVATE_0).
  target_link_options(executor_mpi PRIVATE
    LINKER:--version-script=${CMAKE_CURRENT_SOURCE_DIR}/cmake/libexecutor_mpi.map)
  set_target_properties(executor_mpi PROPERTIES
    LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cmake/libexecutor_mpi.map)
  target_link_libraries(executor_mpi PUBLIC executor MPI::MPI_C)
  target_link_libraries(executor_mpi_static PUBLIC executor_static MPI::MPI_C)
  foreach(t executor_mpi executor_mpi_static)
    target_include_directories(${t} PUBLIC
      $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  endforeach()
  add_library(executor::executor_mpi ALIAS executor_mpi)
  add_library(executor::executor_mpi_static ALIAS executor_mpi_static)

  install(FILES include/executor_mpi.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  # Their own export file, which executorConfig.cmake loads where it is installed: a
  # system may have libexecutor without libexecutor_mpi (and MPI), as Debian's
  # libexecutor-dev and libexecutor-mpi-dev split them.
  install(TARGETS executor_mpi executor_mpi_static EXPORT executorMpiTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT executorMpiTargets NAMESPACE executor:: DESTINATION ${EXEC_CMAKE_DIR})
  install(CODE "
    set(EXEC_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(EXEC_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    set(PROJECT_VERSION \"${PROJECT_VERSION}\")
    include(\"${CMAKE_CURRENT_SOURCE_DIR}/cmake/executor-pc.cmake\")
    exec_write_pc(\"${CMAKE_CURRENT_SOURCE_DIR}/cmake/executor_mpi.pc.in\"
                  \"${CMAKE_CURRENT_BINARY_DIR}/executor_mpi.pc\")")
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/executor_mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
