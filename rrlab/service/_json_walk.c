/* The JSON value walks of the consumer's hot path in C.
 *
 * is_plain decides whether orjson writes a row exactly like the stdlib encoder (sinks);
 * js_numbers applies JavaScript's number rules to a document fresh from orjson.loads
 * (json_values); orjson_reads_alike decides whether orjson read a json/jsonb column as
 * json.loads would (the decoder's loader, rrlab/replication/values.py). In Python they
 * cost ~12%, several % and ~0.5 us per json value of the consumer's CPU. All look at exact
 * types only, so no Python code runs during a walk except, in js_numbers, the hash of a
 * non-str dict key whose float value is rewritten.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* orjson.dumps refuses dicts and lists nested deeper than this (JSONEncodeError "Recursion
 * limit reached"), the outermost array counting as one; the row is that array. Rows deeper
 * than this go to the stdlib encoder, as orjson's error sent them before. orjson 3.13 does
 * not count tuples and corrupts its heap ~3,000 of them deep: tuples count here too. */
#define IS_PLAIN_MAX_DEPTH 254

static PyObject *StdlibOnly;

/* 1 if value, held by a container at nesting level depth, is plain; 0 if not. */
static int plain_value(PyObject *value, int depth);

static int plain_items(PyObject *const *items, Py_ssize_t count, int depth) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!plain_value(items[i], depth)) return 0;
    }
    return 1;
}

static int plain_value(PyObject *value, int depth) {
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type || kind == &PyLong_Type || kind == &PyBool_Type ||
        value == Py_None) {
        return 1;
    }
    if (kind == &PyFloat_Type) return isfinite(PyFloat_AS_DOUBLE(value));
    if (kind != &PyDict_Type && kind != &PyList_Type && kind != &PyTuple_Type) return 0;
    if (depth >= IS_PLAIN_MAX_DEPTH) return 0;
    if (kind == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (!plain_value(item, depth + 1)) return 0;
        }
        return 1;
    }
    if (kind == &PyList_Type) {
        return plain_items(((PyListObject *)value)->ob_item, PyList_GET_SIZE(value), depth + 1);
    }
    return plain_items(((PyTupleObject *)value)->ob_item, PyTuple_GET_SIZE(value), depth + 1);
}

/* is_plain(values) -> bool
 *
 * True when every value is str/int/bool/None, a finite float, or a dict (its values), list
 * or tuple of those, by exact type; subclasses and anything else are not plain. values may
 * be any iterable. Nesting beyond IS_PLAIN_MAX_DEPTH levels (values being level 1) is not
 * plain: an explicit limit, never a RecursionError.
 */
static PyObject *is_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "is_plain(values) takes 1 argument");
        return NULL;
    }
    PyObject *values = args[0];
    if (PyList_CheckExact(values)) {
        return PyBool_FromLong(
            plain_items(((PyListObject *)values)->ob_item, PyList_GET_SIZE(values), 1));
    }
    if (PyTuple_CheckExact(values)) {
        return PyBool_FromLong(
            plain_items(((PyTupleObject *)values)->ob_item, PyTuple_GET_SIZE(values), 1));
    }
    PyObject *iterator = PyObject_GetIter(values);
    if (iterator == NULL) return NULL;
    int plain = 1;
    PyObject *value;
    while (plain && (value = PyIter_Next(iterator)) != NULL) {
        plain = plain_value(value, 1);
        Py_DECREF(value);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred()) return NULL;
    return PyBool_FromLong(plain);
}

/* The limits of js_numbers, passed in by json_values, which defines them. */
typedef struct {
    Py_ssize_t max_depth;
    double max_safe_integer;
    double float_ints;
} js_limits;

/* A new reference: the int an integral float becomes, or number itself; NULL with
 * StdlibOnly set for an integral float orjson may have read from an integer literal. */
static PyObject *js_float(PyObject *number, const js_limits *limits) {
    double x = PyFloat_AS_DOUBLE(number);
    if (isfinite(x) && floor(x) == x) {  /* float.is_integer() */
        if (-limits->max_safe_integer <= x && x <= limits->max_safe_integer) {
            return PyLong_FromDouble(x);
        }
        if (fabs(x) >= limits->float_ints) {
            PyErr_SetNone(StdlibOnly);
            return NULL;
        }
    }
    return Py_NewRef(number);
}

/* Rewrites the floats of item (held at container[key], or at index when key is NULL) and
 * walks it when it is a dict or list at nesting level depth. 0, or -1 with an error set. */
static int js_walk(PyObject *container, PyObject *key, Py_ssize_t index, PyObject *item,
                   Py_ssize_t depth, const js_limits *limits);

static int js_container(PyObject *value, Py_ssize_t depth, const js_limits *limits) {
    if (depth >= limits->max_depth) {
        PyErr_SetNone(StdlibOnly);
        return -1;
    }
    if (Py_EnterRecursiveCall(" in js_numbers")) return -1;
    int status = 0;
    if (PyDict_CheckExact(value)) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (status == 0 && PyDict_Next(value, &pos, &key, &item)) {
            status = js_walk(value, key, 0, item, depth + 1, limits);
        }
    } else {
        for (Py_ssize_t i = 0; status == 0 && i < PyList_GET_SIZE(value); i++) {
            status = js_walk(value, NULL, i, PyList_GET_ITEM(value, i), depth + 1, limits);
        }
    }
    Py_LeaveRecursiveCall();
    return status;
}

static int js_walk(PyObject *container, PyObject *key, Py_ssize_t index, PyObject *item,
                   Py_ssize_t depth, const js_limits *limits) {
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyDict_Type || kind == &PyList_Type) {
        Py_INCREF(item);  /* a key's __hash__ below may drop it from its parent */
        int status = js_container(item, depth, limits);
        Py_DECREF(item);
        return status;
    }
    if (kind != &PyFloat_Type) return 0;
    PyObject *number = js_float(item, limits);
    if (number == NULL) return -1;
    if (number == item) {  /* unchanged: most floats are not integral */
        Py_DECREF(number);
        return 0;
    }
    if (key == NULL) {
        PyList_SET_ITEM(container, index, number);  /* steals number */
        Py_DECREF(item);  /* an exact float: frees without running Python code */
        return 0;
    }
    /* Replacing the value of a present key never resizes the dict, which keeps
     * PyDict_Next's position valid (documented as safe during iteration). */
    Py_INCREF(key);
    int status = PyDict_SetItem(container, key, number);
    Py_DECREF(key);
    Py_DECREF(number);
    return status;
}

/* js_numbers(value, max_depth, max_safe_integer, float_ints) -> value
 *
 * value, fresh from orjson.loads, with every float of its dicts and lists rewritten in
 * place (a float value itself is returned rewritten): integral floats within
 * ±max_safe_integer become int; other floats stay. Raises StdlibOnly for an integral float
 * of abs >= float_ints, or a dict/list at nesting level >= max_depth (the value is level 0):
 * orjson may have read those differently from the stdlib decoder. Only exact dicts, lists
 * and floats are looked at. On StdlibOnly the value is left partly rewritten. Nesting past
 * the interpreter's recursion limit raises RecursionError (Py_EnterRecursiveCall).
 */
static PyObject *js_numbers(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "js_numbers(value, max_depth, max_safe_integer, float_ints) takes 4 "
                        "arguments");
        return NULL;
    }
    js_limits limits;
    limits.max_depth = PyLong_AsSsize_t(args[1]);
    if (limits.max_depth == -1 && PyErr_Occurred()) return NULL;
    limits.max_safe_integer = PyFloat_AsDouble(args[2]);
    if (limits.max_safe_integer == -1.0 && PyErr_Occurred()) return NULL;
    limits.float_ints = PyFloat_AsDouble(args[3]);
    if (limits.float_ints == -1.0 && PyErr_Occurred()) return NULL;

    PyObject *value = args[0];
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyFloat_Type) return js_float(value, &limits);
    if ((kind == &PyDict_Type || kind == &PyList_Type) && js_container(value, 0, &limits) < 0) {
        return NULL;
    }
    return Py_NewRef(value);
}

/* The limits of orjson_reads_alike, passed in by values.py (json_values defines them). */
typedef struct {
    Py_ssize_t max_depth;
    double float_ints;
} alike_limits;

/* 1 if orjson reads value, at nesting level depth, as the stdlib would; 0 if it may not;
 * -1 with RecursionError set. */
static int alike_value(PyObject *value, Py_ssize_t depth, const alike_limits *limits) {
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyFloat_Type) {
        /* an integral float this large may be an integer literal the stdlib keeps exact */
        double x = PyFloat_AS_DOUBLE(value);
        return !(isfinite(x) && floor(x) == x && fabs(x) >= limits->float_ints);
    }
    if (kind != &PyDict_Type && kind != &PyList_Type) return 1;
    if (depth >= limits->max_depth) return 0;
    if (Py_EnterRecursiveCall(" in orjson_reads_alike")) return -1;
    int alike = 1;
    if (kind == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (alike == 1 && PyDict_Next(value, &pos, &key, &item)) {
            alike = alike_value(item, depth + 1, limits);
        }
    } else {
        for (Py_ssize_t i = 0; alike == 1 && i < PyList_GET_SIZE(value); i++) {
            alike = alike_value(PyList_GET_ITEM(value, i), depth + 1, limits);
        }
    }
    Py_LeaveRecursiveCall();
    return alike;
}

/* orjson_reads_alike(value, max_depth, float_ints) -> bool
 *
 * value: a document fresh from orjson.loads. False when orjson may have read it differently
 * from json.loads: it holds an integral float of abs >= float_ints (orjson reads integer
 * literals beyond 64 bits as floats), or a dict/list at nesting level >= max_depth (the
 * value is level 0). Only exact floats, dicts (their values) and lists are looked at.
 * Nesting past the interpreter's recursion limit raises RecursionError.
 */
static PyObject *orjson_reads_alike(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "orjson_reads_alike(value, max_depth, float_ints) takes 3 arguments");
        return NULL;
    }
    alike_limits limits;
    limits.max_depth = PyLong_AsSsize_t(args[1]);
    if (limits.max_depth == -1 && PyErr_Occurred()) return NULL;
    limits.float_ints = PyFloat_AsDouble(args[2]);
    if (limits.float_ints == -1.0 && PyErr_Occurred()) return NULL;
    int alike = alike_value(args[0], 0, &limits);
    return alike < 0 ? NULL : PyBool_FromLong(alike);
}

static PyMethodDef methods[] = {
    {"is_plain", (PyCFunction)(void (*)(void))is_plain, METH_FASTCALL,
     "is_plain(values) -> bool: orjson writes these values exactly like the stdlib encoder"},
    {"js_numbers", (PyCFunction)(void (*)(void))js_numbers, METH_FASTCALL,
     "js_numbers(value, max_depth, max_safe_integer, float_ints) -> value (floats rewritten "
     "in place as JavaScript numbers; raises StdlibOnly)"},
    {"orjson_reads_alike", (PyCFunction)(void (*)(void))orjson_reads_alike, METH_FASTCALL,
     "orjson_reads_alike(value, max_depth, float_ints) -> bool: orjson read this document as "
     "json.loads would"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_json_walk", "JSON value walks of the consumer's hot path (C).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__json_walk(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    StdlibOnly = PyErr_NewExceptionWithDoc(
        "rrlab.service._json_walk.StdlibOnly",
        "orjson's value may differ from the stdlib decoder's: decode with the stdlib.", NULL,
        NULL);
    if (StdlibOnly == NULL || PyModule_AddObjectRef(m, "StdlibOnly", StdlibOnly) < 0 ||
        PyModule_AddIntConstant(m, "IS_PLAIN_MAX_DEPTH", IS_PLAIN_MAX_DEPTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
