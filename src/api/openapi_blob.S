/* The OpenAPI document as bytes in .rodata (see service.c). The Makefile
 * passes the folder of openapi.json to the assembler's include path. */
    .section .rodata
    .global messenger_openapi_json
    .global messenger_openapi_json_end
messenger_openapi_json:
    .incbin "openapi.json"
messenger_openapi_json_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits
