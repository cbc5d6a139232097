/* The pgoutput TupleData walker in C: the consumer's hottest loop.
 *
 * A TupleData is Int16 ncols, then per column a kind byte: 'n' (null), 'u' (unchanged
 * TOAST), 't' (Int32 length + text bytes), 'b' (binary, which rrlab never requests).
 * In Python this walk cost ~115 ns per column (83 columns per TaskRun row); here it is a
 * few ns. Errors are ValueError(code, detail) for the Python caller to word:
 * ("count", ncols), ("kind", kind byte), ("truncated", position).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint32_t read_u32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static PyObject *tuple_error(const char *code, PyObject *detail) {
    if (detail != NULL) {
        PyObject *args = Py_BuildValue("(sN)", code, detail);
        if (args != NULL) {
            PyErr_SetObject(PyExc_ValueError, args);
            Py_DECREF(args);
        }
    }
    return NULL;
}

/* walk_tuple(data, pos, keep) -> (values, unchanged, end)
 *
 * keep: bytes, one per column, non-zero for the columns to return. values: list of the
 * kept columns' text as bytes, None for null and unchanged TOAST; unchanged: list of the
 * indexes (into values) of unchanged TOAST values, or None when there are none.
 */
static PyObject *walk_tuple(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "walk_tuple(data, pos, keep) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (!PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "keep must be bytes");
        return NULL;
    }
    const unsigned char *keep = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    Py_ssize_t ncols_expected = PyBytes_GET_SIZE(args[2]);

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *values = NULL, *unchanged = NULL, *result = NULL;
    Py_ssize_t kept = 0;

    if (pos < 0 || pos + 2 > size) {
        tuple_error("truncated", PyLong_FromSsize_t(pos));
        goto done;
    }
    Py_ssize_t ncols = ((Py_ssize_t)data[pos] << 8) | data[pos + 1];
    if (ncols != ncols_expected) {
        tuple_error("count", PyLong_FromSsize_t(ncols));
        goto done;
    }
    pos += 2;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (keep[i]) kept++;
    }
    values = PyList_New(kept);
    if (values == NULL) goto done;
    Py_ssize_t out = 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= size) {
            tuple_error("truncated", PyLong_FromSsize_t(pos));
            goto done;
        }
        unsigned char kind = data[pos];
        PyObject *value = NULL;
        if (kind == 't') {
            if (pos + 5 > size) {
                tuple_error("truncated", PyLong_FromSsize_t(pos));
                goto done;
            }
            Py_ssize_t length = (Py_ssize_t)(int32_t)read_u32(data + pos + 1);
            if (length < 0 || pos + 5 + length > size) {
                tuple_error("truncated", PyLong_FromSsize_t(pos));
                goto done;
            }
            if (keep[i]) {
                value = PyBytes_FromStringAndSize((const char *)data + pos + 5, length);
                if (value == NULL) goto done;
            }
            pos += 5 + length;
        } else if (kind == 'n' || kind == 'u') {
            if (keep[i]) {
                if (kind == 'u') {
                    if (unchanged == NULL && (unchanged = PyList_New(0)) == NULL) goto done;
                    PyObject *index = PyLong_FromSsize_t(out);
                    if (index == NULL || PyList_Append(unchanged, index) < 0) {
                        Py_XDECREF(index);
                        goto done;
                    }
                    Py_DECREF(index);
                }
                value = Py_NewRef(Py_None);
            }
            pos += 1;
        } else {
            tuple_error("kind", PyLong_FromLong(kind));
            goto done;
        }
        if (value != NULL) PyList_SET_ITEM(values, out++, value);
    }
    result = Py_BuildValue("(OOn)", values, unchanged ? unchanged : Py_None, pos);

done:
    Py_XDECREF(values);
    Py_XDECREF(unchanged);
    PyBuffer_Release(&view);
    return result;
}

/* skip_tuple(data, pos) -> end: the position after the TupleData, converting nothing. */
static PyObject *skip_tuple(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "skip_tuple(data, pos) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *result = NULL;
    if (pos < 0 || pos + 2 > size) {
        tuple_error("truncated", PyLong_FromSsize_t(pos));
        goto done;
    }
    Py_ssize_t ncols = ((Py_ssize_t)data[pos] << 8) | data[pos + 1];
    pos += 2;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= size) {
            tuple_error("truncated", PyLong_FromSsize_t(pos));
            goto done;
        }
        unsigned char kind = data[pos];
        if (kind == 't') {
            if (pos + 5 > size) {
                tuple_error("truncated", PyLong_FromSsize_t(pos));
                goto done;
            }
            Py_ssize_t length = (Py_ssize_t)(int32_t)read_u32(data + pos + 1);
            if (length < 0 || pos + 5 + length > size) {
                tuple_error("truncated", PyLong_FromSsize_t(pos));
                goto done;
            }
            pos += 5 + length;
        } else if (kind == 'n' || kind == 'u') {
            pos += 1;
        } else {
            tuple_error("kind", PyLong_FromLong(kind));
            goto done;
        }
    }
    result = PyLong_FromSsize_t(pos);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"walk_tuple", (PyCFunction)(void (*)(void))walk_tuple, METH_FASTCALL,
     "walk_tuple(data, pos, keep) -> (values, unchanged, end)"},
    {"skip_tuple", (PyCFunction)(void (*)(void))skip_tuple, METH_FASTCALL,
     "skip_tuple(data, pos) -> end"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tuples", "pgoutput TupleData walker (C).", -1, methods,
};

PyMODINIT_FUNC PyInit__tuples(void) { return PyModule_Create(&module); }
