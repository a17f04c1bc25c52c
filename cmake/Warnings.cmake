# Warnings are errors for C; sanitizers apply to everything built here.
set(TENDRIL_C_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wno-unused-parameter -Wformat=2 -Wvla)
if(TENDRIL_WERROR)
  list(APPEND TENDRIL_C_WARNINGS -Werror)
endif()

function(tendril_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:C>:${TENDRIL_C_WARNINGS}>)
endfunction()

if(TENDRIL_SANITIZE)
  # One generator expression per flag: a list inside one would be split on ';'.
  foreach(f -fsanitize=${TENDRIL_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_compile_options("$<$<COMPILE_LANGUAGE:C>:${f}>")
  endforeach()
  add_link_options(-fsanitize=${TENDRIL_SANITIZE})
endif()
