/*
 * tg_hash.h - key hashing of the tollgate proxy.
 *
 * One hash for everything that must agree on where a client key goes: the proxy's limiter
 * shards (src/shard.rs calls tg_shard_of through FFI), the edge load balancer's key
 * affinity (built from the same file), and the agent that tags log batches.
 */
#ifndef TG_HASH_H
#define TG_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 64-bit FNV-1a parameters. */
#define TG_FNV_OFFSET 0xcbf29ce484222325ULL
#define TG_FNV_PRIME 0x100000001b3ULL

/*
 * Mixed into every hash so that tollgate's shard of a key cannot be predicted from plain
 * FNV-1a (a client could otherwise pick keys that all land in one shard).
 */
#define TG_HASH_SEED 0x5eed7011u

/* Keys longer than this are hashed on their first TG_MAX_KEY_LEN bytes only. */
#define TG_MAX_KEY_LEN 200

/* The hash of the len bytes at key (at most TG_MAX_KEY_LEN of them are read). */
uint64_t tg_hash64(const char *key, size_t len);

/*
 * The shard of a key among n_shards, by jump consistent hashing: when n_shards grows by one,
 * only about 1/n of the keys move. Returns 0 when n_shards is 0.
 */
uint32_t tg_shard_of(const char *key, size_t len, uint32_t n_shards);

/*
 * Writes the hash as 16 lower-case hex digits and a NUL into out (at least 17 bytes);
 * returns out. Used in log lines so that keys are not logged in the clear.
 */
char *tg_hash_hex(const char *key, size_t len, char *out);

/* Whether a key is acceptable: 1 to TG_MAX_KEY_LEN bytes of printable ASCII without spaces. */
int tg_key_valid(const char *key, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* TG_HASH_H */
