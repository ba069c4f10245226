/* config.c - reads the table of settings (config_table.c): defaults, the
 * environment, flags; --help and `messenger config` from the same rows. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "version.h"

/* ---- one value ---- */

int config_parse_long(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* "on"/"off", "1"/"0", "true"/"false". */
static int parse_bool(const char *s, bool *out) {
    if (strcmp(s, "0") == 0 || strcasecmp(s, "off") == 0 || strcasecmp(s, "false") == 0) *out = false;
    else if (strcmp(s, "1") == 0 || strcasecmp(s, "on") == 0 || strcasecmp(s, "true") == 0) *out = true;
    else return -1;
    return 0;
}

/* The word of the NULL-terminated list that equals v, or NULL. Returned
 * from the table, so the value outlives argv and the environment. */
static const char *choose(const char *const *choices, const char *v) {
    for (size_t i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0) return choices[i];
    return NULL;
}

/* Stores v into the row's field of target. The value must outlive the
 * configuration: argv, environ and the table all do. */
static int set_value(const config_setting_t *s, void *target, const char *v) {
    void *field = (char *)target + s->offset;
    long n;
    switch (s->type) {
    case SET_STRING: *(const char **)field = v; return 0;
    case SET_BOOL: return parse_bool(v, field);
    case SET_FUNC: return s->parse(target, v);
    case SET_CHOICE: {
        const char *w = choose(s->choices, v);
        if (!w) return -1;
        *(const char **)field = w;
        return 0;
    }
    default: break;
    }
    if (config_parse_long(v, s->min, s->max, &n)) return -1;
    switch (s->type) {
    case SET_UNSIGNED: *(unsigned *)field = (unsigned)n; return 0;
    case SET_SIZE: *(size_t *)field = (size_t)n; return 0;
    case SET_LONG: *(long *)field = n; return 0;
    case SET_INT: *(int *)field = (int)n; return 0;
    default: return -1;
    }
}

/* The value as `messenger config` shows it. */
static void show_value(const config_setting_t *s, const void *target, char *out, size_t size) {
    const void *field = (const char *)target + s->offset;
    const char *str;
    switch (s->type) {
    case SET_STRING:
    case SET_CHOICE:
        str = *(const char *const *)field;
        snprintf(out, size, "%s", str ? str : "none");
        return;
    case SET_BOOL: snprintf(out, size, "%s", *(const bool *)field ? "on" : "off"); return;
    case SET_UNSIGNED: snprintf(out, size, "%u", *(const unsigned *)field); return;
    case SET_SIZE: snprintf(out, size, "%zu", *(const size_t *)field); return;
    case SET_LONG: snprintf(out, size, "%ld", *(const long *)field); return;
    case SET_INT: snprintf(out, size, "%d", *(const int *)field); return;
    case SET_FUNC: s->show(target, out, size); return;
    }
}

static int apply(const config_setting_t *s, void *target, const char *v, const char *name) {
    if (set_value(s, target, v) == 0) return 0;
    fprintf(stderr, "messenger: %s: invalid value '%s' (", name, v);
    for (size_t i = 0; s->type == SET_CHOICE && s->choices[i]; i++)
        fprintf(stderr, "%s%s", s->choices[i], s->choices[i + 1] ? " or " : "; ");
    fprintf(stderr, "see --help)\n");
    return -1;
}

/* ---- the three sources, in order ---- */

/* A default that does not parse is a bug in the table: the test suite
 * starts the server with every default, so it cannot ship. */
static void apply_table_defaults(const config_setting_t *t, size_t n, void *target) {
    for (size_t i = 0; i < n; i++)
        if (t[i].def && set_value(&t[i], target, t[i].def) != 0) {
            fprintf(stderr, "messenger: the default of %s does not parse: %s\n", t[i].name, t[i].def);
            abort();
        }
}

static void apply_defaults(config_t *c, const config_extra_t *extra) {
    memset(c, 0, sizeof *c);
    c->command = CMD_SERVE;
    c->shutdown_grace_ms = 10000;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = cpus > 0 && cpus <= 256 ? (unsigned)cpus : 1; /* "CPU count" */
    apply_table_defaults(config_settings, config_n_settings, c);
    if (extra) apply_table_defaults(extra->settings, extra->n, extra->target);
}

static int apply_env(config_t *c) {
    for (size_t i = 0; i < config_n_settings; i++) {
        const config_setting_t *s = &config_settings[i];
        const char *v = s->env ? getenv(s->env) : NULL;
        if (!v || !*v) continue;
        if (apply(s, c, v, s->env)) return -1;
        size_t fed = i; /* an alias feeds the next row (config_table.c) */
        while (config_settings[fed].env_only && fed + 1 < config_n_settings) fed++;
        c->origin[fed] = ORIGIN_ENV;
    }
    return 0;
}

/* The row a flag names: its own, or its negation (*negated). */
static const config_setting_t *find_row(const config_setting_t *t, size_t n, const char *name, size_t len,
                                        bool *negated) {
    for (size_t i = 0; i < n; i++) {
        if (t[i].env_only) continue;
        if (strlen(t[i].name) == len && strncmp(t[i].name, name, len) == 0) { *negated = false; return &t[i]; }
        if (t[i].negation && strlen(t[i].negation) == len && strncmp(t[i].negation, name, len) == 0) {
            *negated = true;
            return &t[i];
        }
    }
    return NULL;
}

/* Applies one "--name[=value]" (value from argv[*i + 1] when no "=");
 * returns 0, or -1 with the problem printed. */
static int apply_flag(config_t *c, const config_extra_t *extra, int argc, char **argv, int *i) {
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    bool negated = false;
    void *target = c;
    const config_setting_t *s = find_row(config_settings, config_n_settings, arg, len, &negated);
    if (!s && extra && (s = find_row(extra->settings, extra->n, arg, len, &negated))) target = extra->target;
    const char *v = eq ? eq + 1 : NULL;
    if (s && negated) {
        if (v) s = NULL; /* a negation takes no value */
        v = "off";
    } else if (s && !v && *i + 1 < argc) {
        v = argv[++*i];
    }
    if (!s || !v) {
        fprintf(stderr, "messenger: unknown option or missing value: %s (see --help)\n", argv[*i]);
        return -1;
    }
    if (apply(s, target, v, s->name)) return -1;
    if (target == c) c->origin[s - config_settings] = ORIGIN_FLAG;
    return 0;
}

static int apply_args(config_t *c, const config_extra_t *extra, int argc, char **argv, int first) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { c->command = CMD_HELP; return 0; }
        if (strcmp(a, "--version") == 0) { c->command = CMD_VERSION; return 0; }
        if (strncmp(a, "--", 2) == 0 && a[2]) {
            if (apply_flag(c, extra, argc, argv, &i)) return -1;
            continue;
        }
        if (a[0] == '-')
            fprintf(stderr, "messenger: unknown option or missing value: %s (see --help)\n", a);
        else
            fprintf(stderr, "messenger: unexpected argument '%s' (see --help)\n", a);
        return -1;
    }
    return 0;
}

static const struct { const char *word; command_t command; } COMMANDS[] = {
    {"serve", CMD_SERVE}, {"seed", CMD_SEED}, {"schema", CMD_SCHEMA}, {"config", CMD_CONFIG},
};

int config_load(config_t *c, int argc, char **argv) {
    apply_defaults(c, NULL);
    if (apply_env(c)) return -1;
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        size_t i = 0, n = sizeof COMMANDS / sizeof COMMANDS[0];
        while (i < n && strcmp(argv[1], COMMANDS[i].word) != 0) i++;
        if (i == n) {
            fprintf(stderr, "messenger: unknown command '%s' (see --help)\n", argv[1]);
            return -1;
        }
        c->command = COMMANDS[i].command;
        first = 2;
    }
    return apply_args(c, NULL, argc, argv, first);
}

int config_load_tool(config_t *c, const config_extra_t *extra, int argc, char **argv) {
    apply_defaults(c, extra);
    if (apply_env(c)) return -1;
    return apply_args(c, extra, argc, argv, 1);
}

/* ---- what the table says to a reader ---- */

/* Prints words of text from column `col` on, wrapping before column 100. */
static void print_wrapped(FILE *out, const char *text, int col) {
    int at = col;
    for (const char *w = text; *w;) {
        while (*w == ' ') w++;
        int len = (int)strcspn(w, " ");
        if (!len) break;
        if (at > col && at + 1 + len > 100) {
            fprintf(out, "\n%*s", col, "");
            at = col;
        }
        at += fprintf(out, "%s%.*s", at > col ? " " : "", len, w);
        w += len;
    }
    fputc('\n', out);
}

static void print_row(FILE *out, const config_setting_t *s) {
    char left[96], text[512];
    snprintf(left, sizeof left, "--%s %s", s->name, s->metavar);
    const char *def = s->def ? s->def : s->def_note;
    int n = snprintf(text, sizeof text, "%s", s->help);
    if (s->env && n >= 0 && (size_t)n < sizeof text)
        n += snprintf(text + n, sizeof text - (size_t)n, " [%s]", s->env);
    if (def && n >= 0 && (size_t)n < sizeof text)
        snprintf(text + n, sizeof text - (size_t)n, " (%s)", def);
    if (strlen(left) <= 24) {
        fprintf(out, "  %-26s", left);
    } else {
        fprintf(out, "  %s\n%28s", left, "");
    }
    print_wrapped(out, text, 28);
}

void config_print_options(FILE *out, const config_setting_t *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!t[i].env_only) print_row(out, &t[i]);
}

void config_print_help(const char *prog) {
    printf("messenger %s - a fast, dependable messaging backend\n\n"
           "Usage:\n"
           "  %s [serve] [options]      serve the HTTP/JSON API (the default)\n"
           "  %s seed [options]         write the test data set into the store\n"
           "  %s schema [options]       create the Cassandra keyspace and tables, and index\n"
           "                            an existing (FastAPI) keyspace's data\n"
           "  %s config [options]       print every setting: its value, where the value came\n"
           "                            from (default, environment, flag), its environment\n"
           "                            variable and its default (tab-separated)\n"
           "  %s --help | --version\n",
           MESSENGER_VERSION, prog, prog, prog, prog, prog);
    size_t n_sections = 0;
    while (config_sections[n_sections]) n_sections++;
    for (size_t sec = 0; sec < n_sections; sec++) {
        printf("\n%s\n", config_sections[sec]);
        for (size_t i = 0; i < config_n_settings; i++)
            if (config_settings[i].section == (int)sec) config_print_options(stdout, &config_settings[i], 1);
    }
    printf("\nSIGINT or SIGTERM stops the server gracefully: requests in flight finish and\n"
           "pending commits are flushed.\n");
}

void config_dump(FILE *out, const config_t *c) {
    static const char *const ORIGINS[] = {"default", "environment", "flag"};
    fprintf(out, "setting\tvalue\torigin\tenvironment\tdefault\n");
    for (size_t i = 0; i < config_n_settings; i++) {
        const config_setting_t *s = &config_settings[i];
        if (s->env_only) continue;
        char value[1100];
        show_value(s, c, value, sizeof value);
        const char *def = s->def ? s->def : s->def_note;
        fprintf(out, "%s\t%s\t%s\t%s\t%s\n", s->name, value, ORIGINS[c->origin[i]], s->env ? s->env : "-",
                def ? def : "-");
    }
}
