/* config: the table of settings read in order (defaults, environment,
 * flags), every numeric row's bounds, the value forms, the aliases, and the
 * dump. The tests walk the table itself, so a new row is tested too. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "config.h"

/* Clears every variable a row reads, so that the caller's environment
 * (a CI runner's CASSANDRA_HOST, say) cannot change a result. */
static int clean_env(void **state) {
    (void)state;
    for (size_t i = 0; i < config_n_settings; i++)
        if (config_settings[i].env) unsetenv(config_settings[i].env);
    return 0;
}

/* config_load on a NULL-terminated argument list; stderr is silenced. */
static int load(config_t *c, const char *const *args) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"messenger";
    for (; *args && argc < 31; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && null >= 0);
    dup2(null, 2);
    int rc = config_load(c, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(null);
    return rc;
}

static const config_setting_t *row(const char *name) {
    for (size_t i = 0; i < config_n_settings; i++)
        if (strcmp(config_settings[i].name, name) == 0) return &config_settings[i];
    fail_msg("no row %s", name);
    return NULL;
}

static long field_as_long(const config_t *c, const config_setting_t *s) {
    const void *f = (const char *)c + s->offset;
    switch (s->type) {
    case SET_UNSIGNED: return (long)*(const unsigned *)f;
    case SET_SIZE: return (long)*(const size_t *)f;
    case SET_LONG: return *(const long *)f;
    case SET_INT: return *(const int *)f;
    default: fail_msg("%s is not a number", s->name);
    }
    return 0;
}

static bool is_number(const config_setting_t *s) {
    return s->type == SET_UNSIGNED || s->type == SET_SIZE || s->type == SET_LONG || s->type == SET_INT;
}

static void defaults_are_what_the_table_says(void **state) {
    (void)state;
    config_t c;
    assert_int_equal(load(&c, (const char *[]){NULL}), 0);
    assert_int_equal(c.command, CMD_SERVE);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 8000);
    assert_string_equal(c.store, "lmdb");
    assert_int_equal(c.log_level, LOG_INFO);
    assert_true(c.threads >= 1);
    assert_int_equal(c.max_body, 65536);
    assert_int_equal(c.n_cass_hosts, 1);
    assert_string_equal(c.cass_hosts[0], "127.0.0.1:9042");
    assert_int_equal(c.cass_consistency, 6); /* LOCAL_QUORUM */
    assert_true(c.cass_schema && c.auth);
    assert_null(c.broker);
    assert_int_equal(c.shutdown_grace_ms, 10000);
    for (size_t i = 0; i < config_n_settings; i++) {
        assert_int_equal(c.origin[i], ORIGIN_DEFAULT);
        /* A numeric default lies within its own bounds. */
        if (is_number(&config_settings[i]) && config_settings[i].def) {
            long v = field_as_long(&c, &config_settings[i]);
            assert_true(v >= config_settings[i].min && v <= config_settings[i].max);
        }
    }
}

/* Every numeric row: min and max are taken, one past either is refused,
 * through the flag and through the variable. */
static void every_number_is_bounded(void **state) {
    (void)state;
    for (size_t i = 0; i < config_n_settings; i++) {
        const config_setting_t *s = &config_settings[i];
        if (!is_number(s)) continue;
        char flag[80], v[32];
        snprintf(flag, sizeof flag, "--%s", s->name);
        const long edges[] = {s->min, s->max};
        for (int e = 0; e < 2; e++) {
            config_t c;
            snprintf(v, sizeof v, "%ld", edges[e]);
            assert_int_equal(load(&c, (const char *[]){flag, v, NULL}), 0);
            assert_int_equal(field_as_long(&c, s), edges[e]);
            assert_int_equal(c.origin[i], ORIGIN_FLAG);
            snprintf(v, sizeof v, "%ld", e ? s->max + 1 : s->min - 1);
            assert_int_equal(load(&c, (const char *[]){flag, v, NULL}), -1);
            if (s->env) {
                setenv(s->env, v, 1);
                assert_int_equal(load(&c, (const char *[]){NULL}), -1);
                snprintf(v, sizeof v, "%ld", edges[e]);
                setenv(s->env, v, 1);
                assert_int_equal(load(&c, (const char *[]){NULL}), 0);
                assert_int_equal(field_as_long(&c, s), edges[e]);
                assert_int_equal(c.origin[i], ORIGIN_ENV);
                unsetenv(s->env);
            }
        }
        static const char *const junk[] = {"", "x", "12x", "1 ", "0x10", "99999999999999999999999"};
        for (size_t j = 0; j < sizeof junk / sizeof junk[0]; j++) {
            config_t c;
            assert_int_equal(load(&c, (const char *[]){flag, junk[j], NULL}), -1);
        }
    }
}

static void environment_then_flags(void **state) {
    (void)state;
    config_t c;
    setenv("MESSENGER_THREADS", "5", 1);
    setenv("MESSENGER_LOGIN_WINDOW", "77", 1);
    assert_int_equal(load(&c, (const char *[]){"--threads", "3", NULL}), 0);
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.login_window_s, 77);
    assert_int_equal(c.origin[row("threads") - config_settings], ORIGIN_FLAG);
    assert_int_equal(c.origin[row("login-window") - config_settings], ORIGIN_ENV);
    /* An empty variable is unset, not an invalid value. */
    setenv("MESSENGER_THREADS", "", 1);
    assert_int_equal(load(&c, (const char *[]){NULL}), 0);
    assert_int_equal(c.origin[row("threads") - config_settings], ORIGIN_DEFAULT);
    clean_env(NULL);
}

static void value_forms(void **state) {
    (void)state;
    config_t c;
    assert_int_equal(load(&c, (const char *[]){"--listen=[::1]:9001", NULL}), 0);
    assert_string_equal(c.host, "::1");
    assert_int_equal(c.port, 9001);
    assert_int_equal(load(&c, (const char *[]){"--listen", ":9002", NULL}), 0);
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 9002);
    assert_int_equal(load(&c, (const char *[]){"--listen", "9003", NULL}), 0);
    assert_int_equal(c.port, 9003);
    assert_int_equal(load(&c, (const char *[]){"--listen", "host:65536", NULL}), -1);
    assert_int_equal(load(&c, (const char *[]){"--store", "cassandra", "--log-level", "WARNING", NULL}), 0);
    assert_string_equal(c.store, "cassandra");
    assert_int_equal(c.log_level, LOG_WARN);
    assert_int_equal(load(&c, (const char *[]){"--store", "Cassandra", NULL}), -1);
    assert_int_equal(load(&c, (const char *[]){"--cassandra-consistency", "ONE", "--auth", "false", NULL}), 0);
    assert_int_equal(c.cass_consistency, 1);
    assert_false(c.auth);
    assert_int_equal(load(&c, (const char *[]){"--auth", "maybe", NULL}), -1);
    assert_int_equal(load(&c, (const char *[]){"--broker", "http://x:1", NULL}), -1);
    /* The negation takes no value; the setting it negates takes one. */
    assert_int_equal(load(&c, (const char *[]){"--no-schema", NULL}), 0);
    assert_false(c.cass_schema);
    assert_int_equal(load(&c, (const char *[]){"--no-schema=1", NULL}), -1);
    assert_int_equal(load(&c, (const char *[]){"--cassandra-schema", "off", NULL}), 0);
    assert_false(c.cass_schema);
}

static void bad_command_lines(void **state) {
    (void)state;
    config_t c;
    const char *const *cases[] = {
        (const char *[]){"--listen", NULL},          /* missing value */
        (const char *[]){"--bogus", "1", NULL},      /* unknown flag */
        (const char *[]){"--data", "x", NULL},       /* no prefix matching */
        (const char *[]){"-x", NULL},
        (const char *[]){"frobnicate", NULL},        /* unknown command */
        (const char *[]){"serve", "seed", NULL},     /* a second command */
        (const char *[]){"--cassandra-host", "h", NULL}, /* an alias is environment only */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(load(&c, cases[i]), -1);
    assert_int_equal(load(&c, (const char *[]){"config", "--help", NULL}), 0);
    assert_int_equal(c.command, CMD_HELP);
    assert_int_equal(load(&c, (const char *[]){"seed", "--users", "5", NULL}), 0);
    assert_int_equal(c.command, CMD_SEED);
    assert_int_equal(c.seed_users, 5);
}

static void cassandra_hosts_and_the_fastapi_variables(void **state) {
    (void)state;
    config_t c;
    setenv("CASSANDRA_HOST", "10.0.0.7", 1);
    setenv("CASSANDRA_PORT", "9999", 1);
    assert_int_equal(load(&c, (const char *[]){NULL}), 0);
    assert_int_equal(c.n_cass_hosts, 1);
    assert_string_equal(c.cass_hosts[0], "10.0.0.7:9999");
    assert_int_equal(c.origin[row("cassandra-hosts") - config_settings], ORIGIN_ENV);
    setenv("CASSANDRA_HOSTS", "a:1, b:2,c", 1); /* wins over the pair */
    assert_int_equal(load(&c, (const char *[]){NULL}), 0);
    assert_int_equal(c.n_cass_hosts, 3);
    assert_string_equal(c.cass_hosts[1], "b:2");
    clean_env(NULL);
    char many[200] = "";
    for (int i = 0; i <= CONFIG_MAX_HOSTS; i++) strcat(many, "h,");
    assert_int_equal(load(&c, (const char *[]){"--cassandra-hosts", many, NULL}), -1);
    assert_int_equal(load(&c, (const char *[]){"--cassandra-hosts", ",", NULL}), -1);
}

/* The dump names every row once, in order, and never shows a password. */
static void dump(void **state) {
    (void)state;
    config_t c;
    assert_int_equal(load(&c, (const char *[]){"--broker", "redis://u:hunter2@127.0.0.1:6379", NULL}), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_dump(f, &c);
    fclose(f);
    assert_null(strstr(text, "hunter2"));
    assert_non_null(strstr(text, "\nbroker\tredis://***@127.0.0.1:6379\tflag\tMESSENGER_BROKER\tnone\n"));
    assert_non_null(strstr(text, "\nthreads\t"));
    assert_null(strstr(text, "cassandra-host\t")); /* an alias has no line of its own */
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_are_what_the_table_says, clean_env),
        cmocka_unit_test_setup(every_number_is_bounded, clean_env),
        cmocka_unit_test_setup(environment_then_flags, clean_env),
        cmocka_unit_test_setup(value_forms, clean_env),
        cmocka_unit_test_setup(bad_command_lines, clean_env),
        cmocka_unit_test_setup(cassandra_hosts_and_the_fastapi_variables, clean_env),
        cmocka_unit_test_setup(dump, clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
