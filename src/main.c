/* main.c - command-line entry: messenger serve|seed|schema|config|--help|--version. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "seed.h"
#include "server.h"
#include "util/log.h"
#include "version.h"

int main(int argc, char **argv) {
    config_t cfg;
    if (config_load(&cfg, argc, argv) != 0) return 2;
    log_set_level(cfg.log_level);
    log_set_format(strcmp(cfg.log_format, "json") == 0 ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
    switch (cfg.command) {
    case CMD_HELP: config_print_help(argv[0]); return 0;
    case CMD_VERSION: printf("messenger %s\n", MESSENGER_VERSION); return 0;
    case CMD_SEED: return seed_run(&cfg);
    case CMD_SCHEMA: return server_schema(&cfg);
    case CMD_CONFIG: config_dump(stdout, &cfg); return 0;
    case CMD_SERVE: return server_run(&cfg);
    }
    return 2;
}
