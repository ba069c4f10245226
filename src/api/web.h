/* web.h - the web client's static files (web/), read into memory once at
 * start-up: serving them touches no disk, and no request path ever reaches
 * the file system (only names found in the folder at start-up exist). */
#ifndef MESSENGER_API_WEB_H
#define MESSENGER_API_WEB_H

#include <stddef.h>

typedef struct web_file web_file_t;

/* Loads the regular files of dir whose names are [A-Za-z0-9._-]+ with a
 * known extension; NULL (logged) when there are none. */
web_file_t *web_load(const char *dir);
void web_free(web_file_t *files);
/* The file named name[0..len), or NULL. */
const web_file_t *web_find(const web_file_t *files, const char *name, size_t len);
const char *web_file_data(const web_file_t *f, size_t *len);
const char *web_file_type(const web_file_t *f);

#endif
