/* Component values between Python and wasmtime's C API, in C: fastabi's hot loops.
 *
 * wasmtime's component calls take and give `wasmtime_component_val_t` trees. fastabi.py builds
 * and reads them with ctypes, which costs about a microsecond per field touched; an HTTP request
 * record is a few hundred touches. This module walks a *plan* (a nested tuple fastabi builds once
 * per function type) and the Python value together and writes or reads the tree directly.
 *
 * Plans (codes are wasmtime's value kinds, plus BYTES for list<u8>):
 *   (kind,)                       bool, s8..u64, f32, f64, char, string
 *   (BYTES,)                      list<u8> <-> bytes
 *   (LIST, plan)   (OPTION, plan) (TUPLE, (plan, ...))
 *   (RECORD, ((name: str, name: bytes, plan), ...))
 *   (RESULT, ok plan | None, err plan | None)        lift only: the payload, untagged
 *
 * Memory: every vector and boxed value is made by wasmtime's own constructors (their addresses
 * are handed to `setup`), so wasmtime frees them. `lower` leaves nothing half-built: on an error
 * the container being filled is released with its unfilled slots marked empty. `lift` only reads;
 * the caller releases the whole tree with wasmtime_component_val_delete.
 *
 * The struct layout below is wasmtime 50's; `layout()` reports it and fastabi.py compares it with
 * wasmtime-py's ctypes declarations before using this module (else it keeps its Python path).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    K_BOOL = 0, K_S8 = 1, K_U8 = 2, K_S16 = 3, K_U16 = 4, K_S32 = 5, K_U32 = 6, K_S64 = 7, K_U64 = 8,
    K_F32 = 9, K_F64 = 10, K_CHAR = 11, K_STRING = 12, K_LIST = 13, K_RECORD = 14, K_TUPLE = 15,
    K_OPTION = 18, K_RESULT = 19, K_BYTES = 100,
};

typedef struct { size_t size; uint8_t *data; } byte_vec;
typedef struct val val;
typedef struct { size_t size; val *data; } val_vec;
typedef struct record_entry record_entry;
typedef struct { size_t size; record_entry *data; } record_vec;

struct val {
    uint8_t kind;
    union {
        bool boolean; int8_t s8; uint8_t u8; int16_t s16; uint16_t u16; int32_t s32; uint32_t u32;
        int64_t s64; uint64_t u64; float f32; double f64; uint32_t character;
        byte_vec string; val_vec list; record_vec record; val_vec tuple; val *option;
        struct { bool is_ok; val *val; } result;
        unsigned char raw[24];
    } of;
};

struct record_entry { byte_vec name; val value; };

/* wasmtime's constructors and destructors, set once by setup() */
static void (*vallist_new_uninit)(val_vec *, size_t);
static void (*valrecord_new_uninit)(record_vec *, size_t);
static void (*valtuple_new_uninit)(val_vec *, size_t);
static void (*byte_vec_new)(byte_vec *, size_t, const char *);
static val *(*val_new)(val *);
static void (*vallist_delete)(val_vec *);
static void (*valrecord_delete)(record_vec *);
static void (*valtuple_delete)(val_vec *);
static PyObject *record_class;  /* wasmtime.component.Record */
static int ready;

static int lower(PyObject *plan, PyObject *value, val *out);

static void forget(val *v) { v->kind = K_BOOL; v->of.boolean = false; }

static int bad(PyObject *exc, const char *what, PyObject *value) {
    PyErr_Format(exc, "expected %s, got %.80s", what, Py_TYPE(value)->tp_name);
    return -1;
}

static int plan_code(PyObject *plan, long *code) {
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) < 1) {
        PyErr_SetString(PyExc_ValueError, "malformed plan");
        return -1;
    }
    *code = PyLong_AsLong(PyTuple_GET_ITEM(plan, 0));
    return (*code == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int lower_int(long code, PyObject *value, val *out) {
    if (!PyLong_Check(value) || PyBool_Check(value))
        return bad(PyExc_TypeError, "an int", value);
    if (code == K_U64) {
        unsigned long long v = PyLong_AsUnsignedLongLong(value);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        out->kind = K_U64; out->of.u64 = v;
        return 0;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    long long lo, hi;
    switch (code) {
    case K_S8: lo = INT8_MIN; hi = INT8_MAX; break;
    case K_U8: lo = 0; hi = UINT8_MAX; break;
    case K_S16: lo = INT16_MIN; hi = INT16_MAX; break;
    case K_U16: lo = 0; hi = UINT16_MAX; break;
    case K_S32: lo = INT32_MIN; hi = INT32_MAX; break;
    case K_U32: lo = 0; hi = UINT32_MAX; break;
    default: lo = INT64_MIN; hi = INT64_MAX; break;
    }
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_OverflowError, "%lld is out of range for this integer type", v);
        return -1;
    }
    out->kind = (uint8_t)code;
    switch (code) {
    case K_S8: out->of.s8 = (int8_t)v; break;
    case K_U8: out->of.u8 = (uint8_t)v; break;
    case K_S16: out->of.s16 = (int16_t)v; break;
    case K_U16: out->of.u16 = (uint16_t)v; break;
    case K_S32: out->of.s32 = (int32_t)v; break;
    case K_U32: out->of.u32 = (uint32_t)v; break;
    default: out->of.s64 = (int64_t)v; break;
    }
    return 0;
}

static int lower_bytes(PyObject *value, val *out) {
    char *data;
    Py_ssize_t n;
    if (PyBytes_Check(value)) {
        data = PyBytes_AS_STRING(value); n = PyBytes_GET_SIZE(value);
    } else if (PyByteArray_Check(value)) {
        data = PyByteArray_AS_STRING(value); n = PyByteArray_GET_SIZE(value);
    } else {
        return bad(PyExc_TypeError, "bytes", value);
    }
    val_vec list;
    vallist_new_uninit(&list, (size_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        list.data[i].kind = K_U8;
        list.data[i].of.u8 = (uint8_t)data[i];
    }
    out->kind = K_LIST;
    out->of.list = list;
    return 0;
}

/* Fill the n slots of `slots` from `items` (a sequence) by `plan_at(i)`; on an error the
 * unfilled slots are marked empty and -1 is returned (the caller deletes the container). */
static int lower_items(PyObject *plan, int per_item, PyObject **items, Py_ssize_t n, val *slots) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = per_item ? PyTuple_GET_ITEM(plan, i) : plan;
        if (lower(p, items[i], &slots[i]) < 0) {
            for (Py_ssize_t j = i; j < n; j++) forget(&slots[j]);
            return -1;
        }
    }
    return 0;
}

static int lower(PyObject *plan, PyObject *value, val *out) {
    long code;
    if (plan_code(plan, &code) < 0) return -1;
    switch (code) {
    case K_BOOL:
        out->kind = K_BOOL; out->of.boolean = PyObject_IsTrue(value) == 1;
        return 0;
    case K_S8: case K_U8: case K_S16: case K_U16: case K_S32: case K_U32: case K_S64: case K_U64:
        return lower_int(code, value, out);
    case K_F32: case K_F64: {
        double d = PyFloat_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) return -1;
        out->kind = (uint8_t)code;
        if (code == K_F32) out->of.f32 = (float)d; else out->of.f64 = d;
        return 0;
    }
    case K_CHAR:
        if (!PyUnicode_Check(value) || PyUnicode_GET_LENGTH(value) != 1)
            return bad(PyExc_TypeError, "a single-character str", value);
        out->kind = K_CHAR; out->of.character = PyUnicode_READ_CHAR(value, 0);
        return 0;
    case K_STRING: {
        if (!PyUnicode_Check(value)) return bad(PyExc_TypeError, "str", value);
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(value, &n);
        if (s == NULL) return -1;
        out->kind = K_STRING;
        byte_vec_new(&out->of.string, (size_t)n, s);
        return 0;
    }
    case K_BYTES:
        return lower_bytes(value, out);
    case K_LIST: {
        if (!PyList_Check(value)) return bad(PyExc_TypeError, "a list", value);
        Py_ssize_t n = PyList_GET_SIZE(value);
        /* a snapshot: converting an item may run Python code (a record's attribute lookup) */
        PyObject *items = PyList_AsTuple(value);
        if (items == NULL) return -1;
        val_vec list;
        vallist_new_uninit(&list, (size_t)n);
        int rc = lower_items(PyTuple_GET_ITEM(plan, 1), 0, &PyTuple_GET_ITEM(items, 0), n, list.data);
        Py_DECREF(items);
        if (rc < 0) { vallist_delete(&list); return -1; }
        out->kind = K_LIST; out->of.list = list;
        return 0;
    }
    case K_TUPLE: {
        PyObject *plans = PyTuple_GET_ITEM(plan, 1);
        Py_ssize_t n = PyTuple_GET_SIZE(plans);
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != n) {
            PyErr_Format(PyExc_TypeError, "expected a tuple of %zd", n);
            return -1;
        }
        val_vec tuple;
        valtuple_new_uninit(&tuple, (size_t)n);
        if (lower_items(plans, 1, &PyTuple_GET_ITEM(value, 0), n, tuple.data) < 0) {
            valtuple_delete(&tuple);
            return -1;
        }
        out->kind = K_TUPLE; out->of.tuple = tuple;
        return 0;
    }
    case K_OPTION:
        out->kind = K_OPTION;
        if (value == Py_None) { out->of.option = NULL; return 0; }
        {
            val inner;
            if (lower(PyTuple_GET_ITEM(plan, 1), value, &inner) < 0) return -1;
            out->of.option = val_new(&inner);
        }
        return 0;
    case K_RECORD: {
        PyObject *fields = PyTuple_GET_ITEM(plan, 1);
        Py_ssize_t n = PyTuple_GET_SIZE(fields);
        record_vec rec;
        valrecord_new_uninit(&rec, (size_t)n);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *field = PyTuple_GET_ITEM(fields, i);
            PyObject *item = PyObject_GetAttr(value, PyTuple_GET_ITEM(field, 0));
            int rc = item == NULL ? -1 : lower(PyTuple_GET_ITEM(field, 2), item, &rec.data[i].value);
            Py_XDECREF(item);
            if (rc < 0) {
                for (Py_ssize_t j = i; j < n; j++) {
                    forget(&rec.data[j].value);
                    byte_vec_new(&rec.data[j].name, 0, "");
                }
                valrecord_delete(&rec);
                return -1;
            }
            PyObject *name = PyTuple_GET_ITEM(field, 1);
            byte_vec_new(&rec.data[i].name, (size_t)PyBytes_GET_SIZE(name), PyBytes_AS_STRING(name));
        }
        out->kind = K_RECORD; out->of.record = rec;
        return 0;
    }
    default:
        PyErr_Format(PyExc_ValueError, "no C lowering for value kind %ld", code);
        return -1;
    }
}

static PyObject *lift(PyObject *plan, const val *v);

static PyObject *lift_vec(PyObject *plan, int per_item, const val *items, size_t n, int as_tuple) {
    PyObject *out = as_tuple ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
    if (out == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *item = lift(per_item ? PyTuple_GET_ITEM(plan, (Py_ssize_t)i) : plan, &items[i]);
        if (item == NULL) { Py_DECREF(out); return NULL; }
        if (as_tuple) PyTuple_SET_ITEM(out, (Py_ssize_t)i, item); else PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    return out;
}

static PyObject *lift(PyObject *plan, const val *v) {
    long code;
    if (plan_code(plan, &code) < 0) return NULL;
    long want = code == K_BYTES ? K_LIST : code;
    if (v->kind != want) {
        PyErr_Format(PyExc_ValueError, "value of kind %d where kind %ld was expected", v->kind, want);
        return NULL;
    }
    switch (code) {
    case K_BOOL: return PyBool_FromLong(v->of.boolean);
    case K_S8: return PyLong_FromLong(v->of.s8);
    case K_U8: return PyLong_FromLong(v->of.u8);
    case K_S16: return PyLong_FromLong(v->of.s16);
    case K_U16: return PyLong_FromLong(v->of.u16);
    case K_S32: return PyLong_FromLong(v->of.s32);
    case K_U32: return PyLong_FromUnsignedLong(v->of.u32);
    case K_S64: return PyLong_FromLongLong(v->of.s64);
    case K_U64: return PyLong_FromUnsignedLongLong(v->of.u64);
    case K_F32: return PyFloat_FromDouble(v->of.f32);
    case K_F64: return PyFloat_FromDouble(v->of.f64);
    case K_CHAR: return PyUnicode_FromOrdinal((int)v->of.character);
    case K_STRING: return PyUnicode_DecodeUTF8((const char *)v->of.string.data, (Py_ssize_t)v->of.string.size, "strict");
    case K_BYTES: {
        size_t n = v->of.list.size;
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (out == NULL) return NULL;
        char *dst = PyBytes_AS_STRING(out);
        for (size_t i = 0; i < n; i++) dst[i] = (char)v->of.list.data[i].of.u8;
        return out;
    }
    case K_LIST: return lift_vec(PyTuple_GET_ITEM(plan, 1), 0, v->of.list.data, v->of.list.size, 0);
    case K_TUPLE: {
        PyObject *plans = PyTuple_GET_ITEM(plan, 1);
        if ((size_t)PyTuple_GET_SIZE(plans) != v->of.tuple.size) {
            PyErr_SetString(PyExc_ValueError, "a tuple of another length than its type");
            return NULL;
        }
        return lift_vec(plans, 1, v->of.tuple.data, v->of.tuple.size, 1);
    }
    case K_OPTION:
        if (v->of.option == NULL) Py_RETURN_NONE;
        return lift(PyTuple_GET_ITEM(plan, 1), v->of.option);
    case K_RESULT: {
        PyObject *inner = PyTuple_GET_ITEM(plan, v->of.result.is_ok ? 1 : 2);
        if (inner == Py_None || v->of.result.val == NULL) Py_RETURN_NONE;
        return lift(inner, v->of.result.val);
    }
    case K_RECORD: {
        PyObject *fields = PyTuple_GET_ITEM(plan, 1);
        Py_ssize_t n = PyTuple_GET_SIZE(fields);
        if ((size_t)n != v->of.record.size) {
            PyErr_SetString(PyExc_ValueError, "a record with other fields than its type");
            return NULL;
        }
        PyObject *out = PyObject_CallNoArgs(record_class);
        if (out == NULL) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *field = PyTuple_GET_ITEM(fields, i);
            PyObject *item = lift(PyTuple_GET_ITEM(field, 2), &v->of.record.data[i].value);
            if (item == NULL || PyObject_SetAttr(out, PyTuple_GET_ITEM(field, 0), item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
        }
        return out;
    }
    default:
        PyErr_Format(PyExc_ValueError, "no C lifting for value kind %ld", code);
        return NULL;
    }
}

static int address(PyObject *obj, void **out) {
    *out = PyLong_AsVoidPtr(obj);
    if (*out == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a null address");
        return -1;
    }
    return 0;
}

/* setup(record_class, vallist_new_uninit, valrecord_new_uninit, valtuple_new_uninit, byte_vec_new,
 *       val_new, vallist_delete, valrecord_delete, valtuple_delete): function addresses as ints */
static PyObject *py_setup(PyObject *self, PyObject *args) {
    PyObject *cls, *a[8];
    if (!PyArg_ParseTuple(args, "OOOOOOOOO", &cls, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6], &a[7]))
        return NULL;
    void *p[8];
    for (int i = 0; i < 8; i++)
        if (address(a[i], &p[i]) < 0) return NULL;
    vallist_new_uninit = (void (*)(val_vec *, size_t))p[0];
    valrecord_new_uninit = (void (*)(record_vec *, size_t))p[1];
    valtuple_new_uninit = (void (*)(val_vec *, size_t))p[2];
    byte_vec_new = (void (*)(byte_vec *, size_t, const char *))p[3];
    val_new = (val * (*)(val *))p[4];
    vallist_delete = (void (*)(val_vec *))p[5];
    valrecord_delete = (void (*)(record_vec *))p[6];
    valtuple_delete = (void (*)(val_vec *))p[7];
    Py_XSETREF(record_class, Py_NewRef(cls));
    ready = 1;
    Py_RETURN_NONE;
}

static PyObject *py_layout(PyObject *self, PyObject *noargs) {
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n}", "val", (Py_ssize_t)sizeof(val),
                         "of", (Py_ssize_t)offsetof(val, of), "entry", (Py_ssize_t)sizeof(record_entry),
                         "entry_val", (Py_ssize_t)offsetof(record_entry, value),
                         "vec", (Py_ssize_t)sizeof(val_vec), "result_val", (Py_ssize_t)offsetof(val, of.result.val));
}

/* lower(plan, value, address of a wasmtime_component_val_t to fill) */
static PyObject *py_lower(PyObject *self, PyObject *args) {
    PyObject *plan, *value, *addr;
    void *out;
    if (!ready) { PyErr_SetString(PyExc_RuntimeError, "setup() first"); return NULL; }
    if (!PyArg_ParseTuple(args, "OOO", &plan, &value, &addr) || address(addr, &out) < 0) return NULL;
    if (lower(plan, value, (val *)out) < 0) return NULL;
    Py_RETURN_NONE;
}

/* lift(plan, address of a wasmtime_component_val_t) -> value (the tree is left for the caller to delete) */
static PyObject *py_lift(PyObject *self, PyObject *args) {
    PyObject *plan, *addr;
    void *in;
    if (!ready) { PyErr_SetString(PyExc_RuntimeError, "setup() first"); return NULL; }
    if (!PyArg_ParseTuple(args, "OO", &plan, &addr) || address(addr, &in) < 0) return NULL;
    return lift(plan, (const val *)in);
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "Hand over wasmtime's constructors and the Record class."},
    {"layout", py_layout, METH_NOARGS, "The struct sizes and offsets this module was built with."},
    {"lower", py_lower, METH_VARARGS, "Write a Python value into a component value by a plan."},
    {"lift", py_lift, METH_VARARGS, "Read a component value into Python by a plan."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_valconv", NULL, -1, methods};

PyMODINIT_FUNC PyInit__valconv(void) { return PyModule_Create(&module); }
