/* web.c - GET / (the web client, for browsers) and GET /static/{name}. */
#include "api/web.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/handlers.h"
#include "util/log.h"

#define WEB_FILE_MAX (4u << 20)

struct web_file {
    web_file_t *next;
    char *name;
    const char *type;
    char *data;
    size_t len;
};

static const struct { const char *ext, *type; } TYPES[] = {
    {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"}, {".png", "image/png"}, {".ico", "image/x-icon"},
    {".json", "application/json"}, {".webmanifest", "application/manifest+json"},
};

static const char *type_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strcmp(dot, TYPES[i].ext) == 0) return TYPES[i].type;
    return NULL;
}

static bool plain_name(const char *s, size_t len) {
    if (len == 0 || len > 128 || s[0] == '.') return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct stat st;
    char *data = NULL;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size <= WEB_FILE_MAX &&
        (data = malloc((size_t)st.st_size + 1)) && fread(data, 1, (size_t)st.st_size, f) == (size_t)st.st_size) {
        *len = (size_t)st.st_size;
    } else {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

web_file_t *web_load(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        log_warn("web", "no web client: cannot open %s (GET / answers JSON only)", dir ? dir : "(none)");
        return NULL;
    }
    web_file_t *files = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *type = type_of(e->d_name);
        if (!type || !plain_name(e->d_name, strlen(e->d_name))) continue;
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
        web_file_t *f = calloc(1, sizeof *f);
        if (!f || !(f->name = strdup(e->d_name)) || !(f->data = read_file(path, &f->len))) {
            if (f) free(f->name);
            free(f);
            log_warn("web", "cannot load %s", path);
            continue;
        }
        f->type = type;
        f->next = files;
        files = f;
        n++;
    }
    closedir(d);
    if (files) log_info("web", "web client: %zu files from %s", n, dir);
    else log_warn("web", "no web client files in %s", dir);
    return files;
}

void web_free(web_file_t *files) {
    while (files) {
        web_file_t *next = files->next;
        free(files->name);
        free(files->data);
        free(files);
        files = next;
    }
}

const web_file_t *web_find(const web_file_t *files, const char *name, size_t len) {
    for (const web_file_t *f = files; f; f = f->next)
        if (strlen(f->name) == len && memcmp(f->name, name, len) == 0) return f;
    return NULL;
}

const char *web_file_data(const web_file_t *f, size_t *len) {
    *len = f->len;
    return f->data;
}

const char *web_file_type(const web_file_t *f) { return f->type; }

static void respond_file(http_request_t *req, const web_file_t *f) {
    http_respond_header(req, "Cache-Control", "no-cache");
    http_respond_header(req, "X-Content-Type-Options", "nosniff");
    http_respond_static(req, 200, f->type, f->data, f->len);
}

bool web_index(http_request_t *req, const api_t *api) {
    const char *accept = http_request_header(req, "Accept");
    const web_file_t *f = web_find(api->web, "index.html", 10);
    if (!f || !accept || !strstr(accept, "text/html")) return false;
    http_respond_header(req, "Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                        "connect-src 'self'; frame-ancestors 'none'");
    respond_file(req, f);
    return true;
}

void handle_static(http_request_t *req, void *app, const http_params_t *p) {
    const api_t *api = app;
    const web_file_t *f = plain_name(p->val[0], p->len[0]) ? web_find(api->web, p->val[0], p->len[0]) : NULL;
    if (!f) {
        http_respond_error(req, 404, "Not Found");
        return;
    }
    respond_file(req, f);
}
