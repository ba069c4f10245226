/* ratelimit.c - see ratelimit.h. */
#include "auth/ratelimit.h"

#include <arpa/inet.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define SETS 4096
#define WAYS 4

typedef struct entry {
    uint64_t key;       /* 0: free */
    int64_t window_start_ms;
    unsigned attempts;
} entry_t;

struct ratelimit {
    pthread_mutex_t mu;
    unsigned limit;
    int64_t window_ms;
    uint8_t secret[32];
    entry_t table[SETS][WAYS];
};

ratelimit_t *ratelimit_new(unsigned limit, unsigned window_s) {
    ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    if (getrandom(rl->secret, sizeof rl->secret, 0) != (ssize_t)sizeof rl->secret) {
        free(rl);
        return NULL;
    }
    pthread_mutex_init(&rl->mu, NULL);
    rl->limit = limit;
    rl->window_ms = (int64_t)window_s * 1000;
    return rl;
}

void ratelimit_free(ratelimit_t *rl) {
    if (!rl) return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static uint64_t key_of(const ratelimit_t *rl, const char *key, size_t len) {
    uint8_t mac[SHA256_DIGEST_LENGTH];
    unsigned mac_len = sizeof mac;
    HMAC(EVP_sha256(), rl->secret, sizeof rl->secret, (const unsigned char *)key, len, mac, &mac_len);
    uint64_t k;
    memcpy(&k, mac, sizeof k);
    return k ? k : 1;
}

/* The entry for k, or NULL; with `make`, a fresh one (replacing an expired
 * or the oldest entry of its set). Called with rl->mu held. */
static entry_t *find(ratelimit_t *rl, uint64_t k, int64_t now, int make) {
    entry_t *set = rl->table[k % SETS], *victim = &set[0];
    for (int i = 0; i < WAYS; i++) {
        if (set[i].key == k) {
            if (now - set[i].window_start_ms >= rl->window_ms) { /* window over: start afresh */
                set[i].window_start_ms = now;
                set[i].attempts = 0;
            }
            return &set[i];
        }
        if (set[i].key == 0 || now - set[i].window_start_ms >= rl->window_ms) victim = &set[i];
        else if (victim->key != 0 && now - victim->window_start_ms < rl->window_ms &&
                 set[i].window_start_ms < victim->window_start_ms)
            victim = &set[i];
    }
    if (!make) return NULL;
    victim->key = k;
    victim->window_start_ms = now;
    victim->attempts = 0;
    return victim;
}

unsigned ratelimit_take(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms) {
    uint64_t k = key_of(rl, key, len);
    pthread_mutex_lock(&rl->mu);
    entry_t *e = find(rl, k, now_ms, 1);
    unsigned wait = 0;
    if (e->attempts >= rl->limit) {
        int64_t left = e->window_start_ms + rl->window_ms - now_ms;
        wait = left > 0 ? (unsigned)((left + 999) / 1000) : 1;
    } else {
        e->attempts++;
    }
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

void ratelimit_give_back(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms) {
    uint64_t k = key_of(rl, key, len);
    pthread_mutex_lock(&rl->mu);
    entry_t *e = find(rl, k, now_ms, 0);
    if (e && e->attempts > 0) e->attempts--;
    pthread_mutex_unlock(&rl->mu);
}

void ratelimit_addr_key(const char *peer, char out[RATELIMIT_ADDR_KEY_MAX]) {
    struct in6_addr a6;
    if (!strchr(peer, ':') || inet_pton(AF_INET6, peer, &a6) != 1) {
        snprintf(out, RATELIMIT_ADDR_KEY_MAX, "a4:%s", peer);
        return;
    }
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        char v4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a6.s6_addr[12], v4, sizeof v4);
        snprintf(out, RATELIMIT_ADDR_KEY_MAX, "a4:%s", v4);
        return;
    }
    memset(&a6.s6_addr[8], 0, 8);
    char v6[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, v6, sizeof v6);
    snprintf(out, RATELIMIT_ADDR_KEY_MAX, "a6:%s/64", v6);
}

void ratelimit_clear(ratelimit_t *rl, const char *key, size_t len) {
    uint64_t k = key_of(rl, key, len);
    pthread_mutex_lock(&rl->mu);
    entry_t *set = rl->table[k % SETS];
    for (int i = 0; i < WAYS; i++)
        if (set[i].key == k) memset(&set[i], 0, sizeof set[i]);
    pthread_mutex_unlock(&rl->mu);
}
