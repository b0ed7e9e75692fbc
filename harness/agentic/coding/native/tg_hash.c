/*
 * tg_hash.c - key hashing of the tollgate proxy (see tg_hash.h).
 *
 * Built into the proxy by build.rs (cc crate) and into the load balancer's key-affinity
 * module; both must hash exactly alike, so change nothing here without changing both.
 */
#include "tg_hash.h"

#include <ctype.h>
#include <string.h>

/* Multiplier of the linear congruential step in jump consistent hashing. */
#define TG_JUMP_MULTIPLIER 2862933555777941757ULL

/* Bits of the LCG state that feed the jump (the state's top 31 bits after the shift). */
#define TG_JUMP_SHIFT 33

static const char HEX_DIGITS[] = "0123456789abcdef";

/* The seed, spread over all 64 bits before the first byte is mixed in. */
static uint64_t seeded_offset(void)
{
    uint64_t h = TG_FNV_OFFSET;
    uint32_t seed = TG_HASH_SEED;
    for (int i = 0; i < 4; i++) {
        h ^= (uint64_t)(seed & 0xffu);
        h *= TG_FNV_PRIME;
        seed >>= 8;
    }
    return h;
}

uint64_t tg_hash64(const char *key, size_t len)
{
    uint64_t h = seeded_offset();
    if (len > TG_MAX_KEY_LEN) {
        len = TG_MAX_KEY_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        h ^= (uint64_t)(unsigned char)key[i];
        h *= TG_FNV_PRIME;
    }
    return h;
}

/* Jump consistent hash (Lamping and Veach, 2014): the bucket of h among n. */
static uint32_t jump_bucket(uint64_t h, uint32_t n)
{
    int64_t b = -1;
    int64_t j = 0;
    while (j < (int64_t)n) {
        b = j;
        h = h * TG_JUMP_MULTIPLIER + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((h >> TG_JUMP_SHIFT) + 1)));
    }
    return (uint32_t)b;
}

uint32_t tg_shard_of(const char *key, size_t len, uint32_t n_shards)
{
    if (n_shards == 0) {
        return 0;
    }
    return jump_bucket(tg_hash64(key, len), n_shards);
}

char *tg_hash_hex(const char *key, size_t len, char *out)
{
    uint64_t h = tg_hash64(key, len);
    for (int i = 15; i >= 0; i--) {
        out[i] = HEX_DIGITS[h & 0xfu];
        h >>= 4;
    }
    out[16] = '\0';
    return out;
}

int tg_key_valid(const char *key, size_t len)
{
    if (key == NULL || len == 0 || len > TG_MAX_KEY_LEN) {
        return 0;
    }
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (!isgraph(c)) {
            return 0;
        }
    }
    return 1;
}

#ifdef TG_HASH_SELFTEST
#include <stdio.h>

/* cc -DTG_HASH_SELFTEST -o tg_hash_selftest tg_hash.c && ./tg_hash_selftest */
int main(void)
{
    static const char *keys[] = {"anonymous", "customer-8812", "k", "partner/eu-west"};
    char hex[17];
    int failures = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        size_t len = strlen(keys[k]);
        uint32_t prev = 0;
        for (uint32_t n = 1; n <= 64; n++) {
            uint32_t s = tg_shard_of(keys[k], len, n);
            /* Growing by one shard either keeps the key or moves it to the new shard. */
            if (n > 1 && s != prev && s != n - 1) {
                printf("FAIL %s: shard %u at n=%u after %u\n", keys[k], s, n, prev);
                failures++;
            }
            prev = s;
        }
        printf("%-16s %s shard(61)=%u\n", keys[k], tg_hash_hex(keys[k], len, hex),
               tg_shard_of(keys[k], len, 61));
    }
    if (tg_key_valid("has space", 9) || !tg_key_valid("customer-8812", 13)) {
        printf("FAIL tg_key_valid\n");
        failures++;
    }
    return failures == 0 ? 0 : 1;
}
#endif
