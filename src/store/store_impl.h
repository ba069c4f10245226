/* store_impl.h - what a storage backend implements (backends only).
 *
 * A backend embeds `store_t` as the first member of its own struct and fills
 * `ops`; store.c dispatches through it. Each op has the contract documented
 * on its public wrapper in store.h.
 */
#ifndef MESSENGER_STORE_IMPL_H
#define MESSENGER_STORE_IMPL_H

#include "store/store.h"

typedef struct store_ops {
    const char *name;
    void (*user_create)(store_t *, const user_t *, store_user_cb, void *);
    void (*user_get)(store_t *, const uuid_t *, store_user_cb, void *);
    void (*user_find)(store_t *, const char *, size_t, store_user_cb, void *);
    void (*token_put)(store_t *, const store_token_t *, store_token_cb, void *);
    void (*token_get)(store_t *, const uint8_t *, store_token_cb, void *);
    void (*token_delete)(store_t *, const uint8_t *, store_token_cb, void *);
    void (*message_send)(store_t *, const store_send_t *, store_send_cb, void *);
    void (*messages_list)(store_t *, const store_msg_query_t *, store_msg_page_cb, void *);
    void (*conversations_list)(store_t *, const store_conv_query_t *, store_conv_page_cb, void *);
    void (*conversation_get)(store_t *, const uuid_t *, store_conv_cb, void *);
    void (*conversation_open)(store_t *, const uuid_t *, const uuid_t *, int64_t, store_conv_cb, void *);
    void (*health)(store_t *, store_health_cb, void *);
    const char *(*degraded)(store_t *); /* optional: NULL means never degraded */
    void (*close)(store_t *);
} store_ops_t;

struct store {
    const store_ops_t *ops;
};

#endif
