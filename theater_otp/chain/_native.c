/* The chain's two hot loops in C: building a stored record and checking a chunk of them.
 *
 * Same bytes and same answers as the pure-Python versions in native.py (which the
 * tests run side by side with these); see docs/chain-format.md for the layout:
 *
 *   record   = u32 len(encoding) || encoding || SHA-256(encoding)
 *   encoding = MAGIC, u16 len(actor_id), actor_id, u64 seq, u32 incarnation,
 *              u8 has_parent [32-byte parent], u16 len(event_type), event_type,
 *              u64 timestamp, u32 len(data), data          (all big-endian)
 *
 * SHA-256 comes from OpenSSL's libcrypto (the library CPython's hashlib uses).
 * `scan` releases the GIL while it hashes.
 */
#define PY_SSIZE_T_CLEAN
/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but EVP costs
 * ~0.3-1 us more per 200-byte event here (provider dispatch, an implicit fetch per init). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define HASH_SIZE 32

static void put_u16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put_u32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void put_u64(unsigned char *p, uint64_t v) { put_u32(p, (uint32_t)(v >> 32)); put_u32(p + 4, (uint32_t)v); }
static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) << 32 | get_u32(p + 4); }

static int digest(const unsigned char *data, size_t n, unsigned char *out) {
    SHA256_CTX ctx;
    return SHA256_Init(&ctx) && SHA256_Update(&ctx, data, n) && SHA256_Final(out, &ctx);
}

/* record(actor_part, seq, incarnation, parent, type_part, timestamp, data) -> (record, hash)
 *
 * actor_part = MAGIC + u16 len + actor id; type_part = u16 len + event type (the cached
 * prefixes EventHasher builds). parent is None or 32 bytes.
 */
/* A Python int in 0..max as uint64, or -1 with ValueError set (TypeError for a non-int),
 * as the pure-Python encoder raises struct.error / ValueError. */
static int to_u64(PyObject *obj, uint64_t max, uint64_t *out) {
    if (!PyLong_CheckExact(obj)) {  /* not bool: True is no incarnation */
        PyErr_SetString(PyExc_TypeError, "an integer field is not an int");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        PyErr_Clear();
    else if (v <= max) {
        *out = v;
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "an integer field is out of the range the layout holds");
    return -1;
}

static PyObject *record(PyObject *self, PyObject *args) {
    Py_buffer actor, type, data;
    PyObject *seq_obj, *inc_obj, *ts_obj, *parent;
    uint64_t seq, inc, ts;
    if (!PyArg_ParseTuple(args, "y*OOOy*Oy*", &actor, &seq_obj, &inc_obj, &parent, &type, &ts_obj, &data))
        return NULL;
    PyObject *result = NULL, *rec = NULL, *hash = NULL;
    const char *parent_bytes = NULL;
    if (to_u64(seq_obj, UINT64_MAX, &seq) < 0 || to_u64(inc_obj, 0xFFFFFFFFULL, &inc) < 0
        || to_u64(ts_obj, UINT64_MAX, &ts) < 0)
        goto done;
    if (parent != Py_None) {
        if (!PyBytes_Check(parent) || PyBytes_GET_SIZE(parent) != HASH_SIZE) {
            PyErr_SetString(PyExc_ValueError, "parent hash must be 32 bytes");
            goto done;
        }
        parent_bytes = PyBytes_AS_STRING(parent);
    }
    if ((uint64_t)data.len > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "data length does not fit in u32");
        goto done;
    }
    Py_ssize_t enc_len = actor.len + 8 + 4 + 1 + (parent_bytes ? HASH_SIZE : 0) + type.len + 8 + 4 + data.len;
    if ((uint64_t)enc_len > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "encoding longer than a u32 length");
        goto done;
    }
    rec = PyBytes_FromStringAndSize(NULL, 4 + enc_len + HASH_SIZE);
    if (rec == NULL)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(rec);
    unsigned char *enc = p + 4;
    put_u32(p, (uint32_t)enc_len);
    p = enc;
    memcpy(p, actor.buf, actor.len); p += actor.len;
    put_u64(p, seq); p += 8;
    put_u32(p, (uint32_t)inc); p += 4;
    if (parent_bytes) {
        *p++ = 1;
        memcpy(p, parent_bytes, HASH_SIZE); p += HASH_SIZE;
    } else {
        *p++ = 0;
    }
    memcpy(p, type.buf, type.len); p += type.len;
    put_u64(p, ts); p += 8;
    put_u32(p, (uint32_t)data.len); p += 4;
    memcpy(p, data.buf, data.len); p += data.len;
    if (!digest(enc, (size_t)enc_len, p)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        Py_CLEAR(rec);
        goto done;
    }
    hash = PyBytes_FromStringAndSize((const char *)p, HASH_SIZE);
    if (hash != NULL)
        result = PyTuple_Pack(2, rec, hash);
done:
    Py_XDECREF(rec);
    Py_XDECREF(hash);
    PyBuffer_Release(&actor);
    PyBuffer_Release(&type);
    PyBuffer_Release(&data);
    return result;
}

/* scan(blob, offset, prefix, expect, prev) -> (offset, expect, prev)
 *
 * Passes the records of `blob` from `offset` while each is whole, starts with `prefix`
 * (MAGIC + u16 len + actor id), carries seq `expect` (then expect+1, ...), has a parent
 * equal to `prev` (the hash before it), lengths that add up, and a stored hash equal to
 * SHA-256 of its encoding. Returns where it stopped (len(blob) when every record passed),
 * the seq expected there and the last good hash. `prev` None stops at once: the first
 * event of a chain goes to the careful path.
 */
static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer blob, prefix;
    Py_ssize_t start;
    unsigned long long expect;
    PyObject *prev;
    if (!PyArg_ParseTuple(args, "y*ny*KO", &blob, &start, &prefix, &expect, &prev))
        return NULL;
    const unsigned char *b = blob.buf, *pre = prefix.buf;
    const size_t end = (size_t)blob.len, pl = (size_t)prefix.len;
    size_t o = start < 0 ? end : (size_t)start, last_hash = 0;
    int have_prev = 0, failed = 0;
    unsigned char prev_hash[HASH_SIZE], h[HASH_SIZE];
    if (prev != Py_None) {
        if (!PyBytes_Check(prev) || PyBytes_GET_SIZE(prev) != HASH_SIZE)
            goto finish;  /* an odd prev: the careful path says what is wrong */
        memcpy(prev_hash, PyBytes_AS_STRING(prev), HASH_SIZE);
        have_prev = 1;
    }
    Py_BEGIN_ALLOW_THREADS
    while (have_prev && o < end) {
        if (end - o < 4) break;
        size_t n = get_u32(b + o);
        size_t s = o + 4;
        if (end - s < n || end - s - n < HASH_SIZE) break;
        const unsigned char *e = b + s;
        /* prefix, seq, incarnation, has_parent, parent, u16 type len, timestamp, u32 data len */
        size_t fixed = pl + 8 + 4 + 1 + HASH_SIZE;
        if (n < fixed + 2) break;
        if (memcmp(e, pre, pl) != 0 || get_u64(e + pl) != expect || e[pl + 12] != 1
            || memcmp(e + pl + 13, prev_hash, HASH_SIZE) != 0)
            break;
        size_t t = fixed;
        size_t tl = get_u16(e + t);
        if (n - t - 2 < tl || n - t - 2 - tl < 12) break;
        size_t d = t + 2 + tl + 8;
        if (get_u32(e + d) != n - d - 4) break;
        if (!digest(e, n, h)) { failed = 1; break; }
        if (memcmp(h, e + n, HASH_SIZE) != 0) break;
        memcpy(prev_hash, h, HASH_SIZE);
        last_hash = 1;
        expect++;
        o = s + n + HASH_SIZE;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyBuffer_Release(&blob);
        PyBuffer_Release(&prefix);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return NULL;
    }
finish:;
    PyObject *out;
    if (last_hash)
        out = Py_BuildValue("(nKy#)", (Py_ssize_t)o, expect, (const char *)prev_hash, (Py_ssize_t)HASH_SIZE);
    else
        out = Py_BuildValue("(nKO)", (Py_ssize_t)o, expect, prev);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&prefix);
    return out;
}

static PyMethodDef methods[] = {
    {"record", record, METH_VARARGS, "record(actor_part, seq, incarnation, parent, type_part, timestamp, data) -> (record, hash)"},
    {"scan", scan, METH_VARARGS, "scan(blob, offset, prefix, expect, prev) -> (offset, expect, prev)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "C hot loops of the chain", -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    return PyModule_Create(&module);
}
