/* The pgoutput TupleData decoder in C: the consumer's hottest loop.
 *
 * A TupleData is Int16 ncols, then per column a kind byte: 'n' (null), 'u' (unchanged
 * TOAST), 't' (Int32 length + text bytes), 'b' (binary, which rrlab never requests).
 * In Python this walk cost ~115 ns per column (83 columns per TaskRun row), and typing
 * the kept values through psycopg's Transformer plus building the row dict another
 * ~25% of the consumer's CPU; here both take one call. Text in the canonical form
 * PostgreSQL writes for str, int, bool, float, timestamp and text[] columns is typed here;
 * any other text, and every other type, goes to the column's psycopg loader, so values and
 * errors are the loaders' own. Errors are ValueError(code, *detail) for the Python caller
 * to word: ("count", ncols), ("kind", kind byte), ("truncated", position),
 * ("value", value index, text bytes, the loader's exception).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

/* How load_tuple types a column (plan.kinds); exported as the module's KIND_* constants,
 * which rrlab/replication/values.py assigns to column types. */
enum {
    KIND_SKIP = 0,
    KIND_STR,
    KIND_INT,
    KIND_BOOL,
    KIND_FLOAT,
    KIND_TIMESTAMP,
    KIND_TIMESTAMPTZ,
    KIND_PYTHON,
    KIND_TEXT_ARRAY,
};

/* The fields of a plan tuple (pgoutput.TuplePlan). */
enum {
    PLAN_KINDS,
    PLAN_NAMES,
    PLAN_TEMPLATE,
    PLAN_LOADERS,
    PLAN_TIMESTAMP_TZ,
    PLAN_TIMESTAMPTZ_TZ,
    PLAN_UNCHANGED,
    PLAN_SIZE,
};

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

/* Steps over the value at *pos: its kind byte ('t', 'n' or 'u') in *kind and, for 't', its
 * text in *text and *length. -1 with the walker's ValueError set when the data is malformed. */
static int next_value(const unsigned char *data, Py_ssize_t size, Py_ssize_t *pos,
                      unsigned char *kind, const char **text, Py_ssize_t *length) {
    Py_ssize_t at = *pos;
    if (at >= size) {
        tuple_error("truncated", PyLong_FromSsize_t(at));
        return -1;
    }
    *kind = data[at];
    if (*kind == 't') {
        if (at + 5 > size) {
            tuple_error("truncated", PyLong_FromSsize_t(at));
            return -1;
        }
        Py_ssize_t n = (Py_ssize_t)(int32_t)read_u32(data + at + 1);
        if (n < 0 || at + 5 + n > size) {
            tuple_error("truncated", PyLong_FromSsize_t(at));
            return -1;
        }
        *text = (const char *)data + at + 5;
        *length = n;
        *pos = at + 5 + n;
        return 0;
    }
    if (*kind == 'n' || *kind == 'u') {
        *pos = at + 1;
        return 0;
    }
    tuple_error("kind", PyLong_FromLong(*kind));
    return -1;
}

/* The typers below return 1 with *out set, 0 when the text is not in the canonical form
 * they read (the column's loader then decides), -1 on error (memory). */

static int type_str(const char *text, Py_ssize_t length, PyObject **out) {
    *out = PyUnicode_DecodeUTF8(text, length, NULL);
    if (*out != NULL) return 1;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
    PyErr_Clear();
    return 0;
}

/* [-]digits, at most 19 of them, within int64: PostgreSQL's int2/int4/int8 output. */
static int type_int(const char *text, Py_ssize_t length, PyObject **out) {
    int negative = length > 0 && text[0] == '-';
    Py_ssize_t i = negative;
    if (i == length || length - i > 19) return 0;
    uint64_t magnitude = 0;
    for (; i < length; i++) {
        unsigned digit = (unsigned char)text[i] - '0';
        if (digit > 9) return 0;
        magnitude = magnitude * 10 + digit; /* 19 digits fit in uint64 */
    }
    if (magnitude > (uint64_t)INT64_MAX + (uint64_t)negative) return 0;
    if (negative) {
        *out = magnitude == (uint64_t)INT64_MAX + 1 ? PyLong_FromLongLong(INT64_MIN)
                                                    : PyLong_FromLongLong(-(int64_t)magnitude);
    } else {
        *out = PyLong_FromLongLong((int64_t)magnitude);
    }
    return *out != NULL ? 1 : -1;
}

static int type_bool(const char *text, Py_ssize_t length, PyObject **out) {
    if (length != 1 || (text[0] != 't' && text[0] != 'f')) return 0;
    *out = Py_NewRef(text[0] == 't' ? Py_True : Py_False);
    return 1;
}

static int all_digits(const char *text, Py_ssize_t from, Py_ssize_t to) {
    if (from >= to) return 0;
    for (Py_ssize_t i = from; i < to; i++) {
        if (text[i] < '0' || text[i] > '9') return 0;
    }
    return 1;
}

/* NaN, Infinity, -Infinity or [-]digits[.digits][e(+|-)digits]: PostgreSQL's float4/float8
 * output. Read by PyOS_string_to_double, the function psycopg's float loader calls. */
static int type_float(const char *text, Py_ssize_t length, PyObject **out) {
    char buf[64];
    if (length == 0 || length >= (Py_ssize_t)sizeof buf) return 0;
    if (!((length == 3 && memcmp(text, "NaN", 3) == 0) ||
          (length == 8 && memcmp(text, "Infinity", 8) == 0) ||
          (length == 9 && memcmp(text, "-Infinity", 9) == 0))) {
        Py_ssize_t i = text[0] == '-', start = i;
        while (i < length && text[i] >= '0' && text[i] <= '9') i++;
        if (i == start) return 0;
        if (i < length && text[i] == '.') {
            start = ++i;
            while (i < length && text[i] >= '0' && text[i] <= '9') i++;
            if (i == start) return 0;
        }
        if (i < length && text[i] == 'e') {
            i++;
            if (i < length && (text[i] == '+' || text[i] == '-')) i++;
            if (!all_digits(text, i, length)) return 0;
            i = length;
        }
        if (i != length) return 0;
    }
    memcpy(buf, text, length);
    buf[length] = '\0';
    char *end;
    double value = PyOS_string_to_double(buf, &end, PyExc_OverflowError);
    if (value == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return 0;
    }
    if (end != buf + length) return 0;
    *out = PyFloat_FromDouble(value);
    return *out != NULL ? 1 : -1;
}

/* The value of count digits at text, or -1 when one is not a digit. */
static int digits(const char *text, int count) {
    int value = 0;
    for (int i = 0; i < count; i++) {
        unsigned digit = (unsigned char)text[i] - '0';
        if (digit > 9) return -1;
        value = value * 10 + (int)digit;
    }
    return value;
}

static int days_in_month(int year, int month) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

/* YYYY-MM-DD HH:MM:SS[.1-6 digits], and for timestamptz [(+|-)HH[:MM[:SS]]]: PostgreSQL's
 * ISO output for years 1-9999 (later years have more digits, earlier ones end in BC,
 * 'infinity' has no digits: all left to psycopg). The instant in UTC, with tzinfo tz. */
static int type_timestamp(const char *text, Py_ssize_t length, int with_offset, PyObject *tz,
                          PyObject **out) {
    if (length < 19 || text[4] != '-' || text[7] != '-' || text[10] != ' ' || text[13] != ':' ||
        text[16] != ':') {
        return 0;
    }
    int year = digits(text, 4), month = digits(text + 5, 2), day = digits(text + 8, 2);
    int hour = digits(text + 11, 2), minute = digits(text + 14, 2);
    int second = digits(text + 17, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 ||
        minute < 0 || minute > 59 || second < 0 || second > 59 ||
        day > days_in_month(year, month)) {
        return 0;
    }
    Py_ssize_t pos = 19;
    int micros = 0;
    if (pos < length && text[pos] == '.') {
        Py_ssize_t start = ++pos;
        while (pos < length && pos - start < 6 && text[pos] >= '0' && text[pos] <= '9') {
            micros = micros * 10 + (text[pos++] - '0');
        }
        if (pos == start) return 0;
        for (Py_ssize_t scale = pos - start; scale < 6; scale++) micros *= 10;
    }
    int offset = 0;
    if (with_offset && pos < length && (text[pos] == '+' || text[pos] == '-')) {
        int sign = text[pos] == '-' ? -1 : 1;
        int part[3] = {0, 0, 0};
        for (int i = 0; i < 3; i++) {
            if (i > 0 && (pos >= length || text[pos] != ':')) break;
            if (pos + 3 > length || (part[i] = digits(text + pos + 1, 2)) < 0) return 0;
            pos += 3;
        }
        if (part[0] > 23 || part[1] > 59 || part[2] > 59) return 0;
        offset = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
    }
    if (pos != length) return 0;
    if (offset != 0) {
        /* |offset| < 24 h: the instant in UTC is on the day before, the same or the next */
        int seconds = hour * 3600 + minute * 60 + second - offset;
        if (seconds < 0) {
            seconds += 86400;
            if (--day == 0) {
                if (--month == 0) {
                    month = 12;
                    if (--year == 0) return 0;
                }
                day = days_in_month(year, month);
            }
        } else if (seconds >= 86400) {
            seconds -= 86400;
            if (++day > days_in_month(year, month)) {
                day = 1;
                if (++month == 13) {
                    month = 1;
                    if (++year == 10000) return 0;
                }
            }
        }
        hour = seconds / 3600;
        minute = seconds / 60 % 60;
        second = seconds % 60;
    }
    *out = PyDateTimeAPI->DateTime_FromDateAndTime(year, month, day, hour, minute, second, micros,
                                                   tz, PyDateTimeAPI->DateTimeType);
    return *out != NULL ? 1 : -1;
}

/* Whitespace to PostgreSQL's array_out, which quotes the elements holding it. */
static int array_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The element at text[*pos] (before end), as str or None, and *pos after it; 0 when it is
 * not as array_out writes it, -1 on error (memory). *buffer: room for unescaped text,
 * allocated on first need (capacity bytes) and freed by the caller. */
static int array_element(const char *text, Py_ssize_t end, Py_ssize_t *pos, char **buffer,
                         Py_ssize_t capacity, PyObject **out) {
    Py_ssize_t at = *pos, start, length;
    if (text[at] != '"') {
        /* unquoted: no empty, blank, null-like or special element is written so */
        for (start = at; at < end && text[at] != ','; at++) {
            char c = text[at];
            if (c == '{' || c == '}' || c == '"' || c == '\\' || array_space(c)) return 0;
        }
        length = at - start;
        *pos = at;
        if (length == 4 && memcmp(text + start, "NULL", 4) == 0) {
            *out = Py_NewRef(Py_None);
            return 1;
        }
        if (length == 0 || (length == 4 && PyOS_strnicmp(text + start, "NULL", 4) == 0)) {
            return 0;
        }
        return type_str(text + start, length, out);
    }
    /* quoted: array_out escapes only '"' and '\' */
    int escaped = 0;
    for (start = ++at; at < end && text[at] != '"'; at++) {
        if (text[at] == '\\') {
            if (at + 1 >= end || (text[at + 1] != '"' && text[at + 1] != '\\')) return 0;
            escaped = 1;
            at++;
        }
    }
    if (at >= end) return 0;
    length = at - start;
    *pos = at + 1;
    if (!escaped) return type_str(text + start, length, out);
    if (*buffer == NULL && (*buffer = PyMem_Malloc(capacity)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t i = start; i < start + length; i++) {
        if (text[i] == '\\') i++;
        (*buffer)[n++] = text[i];
    }
    return type_str(*buffer, n, out);
}

/* {} or {element,...}: PostgreSQL's text[]/varchar[] output for one dimension with lower
 * bound 1. Nested arrays, a [lo:hi]= prefix and anything array_out does not write are left
 * to psycopg's loader, whose quirks (e.g. {a,,b} is two elements) stay its own. */
static int type_text_array(const char *text, Py_ssize_t length, PyObject **out) {
    if (length < 2 || text[0] != '{' || text[length - 1] != '}') return 0;
    PyObject *list = PyList_New(0);
    if (list == NULL) return -1;
    char *buffer = NULL;
    Py_ssize_t pos = 1, end = length - 1;
    int typed = 1;
    while (pos < end) {
        PyObject *item;
        typed = array_element(text, end, &pos, &buffer, length, &item);
        if (typed <= 0) break;
        int failed = PyList_Append(list, item);
        Py_DECREF(item);
        if (failed) {
            typed = -1;
            break;
        }
        if (pos < end && (text[pos] != ',' || ++pos == end)) {
            typed = 0; /* no ',' after the element, or a trailing one */
            break;
        }
    }
    PyMem_Free(buffer);
    if (typed > 0) {
        *out = list;
    } else {
        Py_DECREF(list);
    }
    return typed;
}

/* The value of a 't' column of the given kind; a new reference, or NULL with an exception
 * set (the walker's ValueError "value" when the column's loader refuses the text). */
static PyObject *type_value(int kind, const char *text, Py_ssize_t length, PyObject *loader,
                            PyObject *const *plan, Py_ssize_t index) {
    PyObject *value = NULL;
    int typed = 0;
    switch (kind) {
    case KIND_STR: typed = type_str(text, length, &value); break;
    case KIND_INT: typed = type_int(text, length, &value); break;
    case KIND_BOOL: typed = type_bool(text, length, &value); break;
    case KIND_FLOAT: typed = type_float(text, length, &value); break;
    case KIND_TEXT_ARRAY: typed = type_text_array(text, length, &value); break;
    case KIND_TIMESTAMP:
        typed = type_timestamp(text, length, 0, plan[PLAN_TIMESTAMP_TZ], &value);
        break;
    case KIND_TIMESTAMPTZ:
        typed = type_timestamp(text, length, 1, plan[PLAN_TIMESTAMPTZ_TZ], &value);
        break;
    }
    if (typed != 0) return typed > 0 ? value : NULL;
    PyObject *raw = PyBytes_FromStringAndSize(text, length);
    if (raw == NULL) return NULL;
    value = PyObject_CallOneArg(loader, raw);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        /* loaders raise psycopg.DataError, ValueError, JSONDecodeError...: the caller names
         * the column; anything else (KeyboardInterrupt, MemoryError) goes up as it is */
        PyObject *type, *exc, *traceback;
        PyErr_Fetch(&type, &exc, &traceback);
        PyErr_NormalizeException(&type, &exc, &traceback);
        PyObject *args = Py_BuildValue("(snOO)", "value", index, raw, exc);
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(traceback);
        if (args != NULL) {
            PyErr_SetObject(PyExc_ValueError, args);
            Py_DECREF(args);
        }
    }
    Py_DECREF(raw);
    return value;
}

/* load_tuple(data, pos, plan) -> (row, end)
 *
 * plan: a pgoutput.TuplePlan, (kinds, names, template, loaders, timestamp_tz,
 * timestamptz_tz, unchanged). kinds: bytes, one KIND_* per column, KIND_SKIP for columns
 * not to decode; names, loaders: per decoded column, its name and the psycopg loader's
 * load (for kinds it cannot type here, and text it does not read); template: names → None.
 * row: a copy of template with the decoded values; unchanged TOAST values are `unchanged`.
 */
static PyObject *load_tuple(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "load_tuple(data, pos, plan) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (!PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != PLAN_SIZE) {
        PyErr_SetString(PyExc_TypeError, "plan must be a TuplePlan");
        return NULL;
    }
    PyObject *const *plan = ((PyTupleObject *)args[2])->ob_item;
    PyObject *names = plan[PLAN_NAMES], *loaders = plan[PLAN_LOADERS];
    if (!PyBytes_Check(plan[PLAN_KINDS]) || !PyTuple_Check(names) ||
        !PyDict_Check(plan[PLAN_TEMPLATE]) || !PyTuple_Check(loaders) ||
        PyTuple_GET_SIZE(loaders) != PyTuple_GET_SIZE(names)) {
        PyErr_SetString(PyExc_TypeError, "plan must be a TuplePlan");
        return NULL;
    }
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(plan[PLAN_KINDS]);
    Py_ssize_t ncols_expected = PyBytes_GET_SIZE(plan[PLAN_KINDS]);
    Py_ssize_t nkept = PyTuple_GET_SIZE(names);

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    PyObject *row = NULL, *result = NULL;

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
    /* the template holds every name, None: setting a value replaces, never resizes */
    row = PyDict_Copy(plan[PLAN_TEMPLATE]);
    if (row == NULL) goto done;
    Py_ssize_t out = 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        unsigned char kind;
        const char *text = NULL;
        Py_ssize_t length = 0;
        if (next_value(data, size, &pos, &kind, &text, &length) < 0) goto done;
        if (kinds[i] == KIND_SKIP) continue;
        if (out == nkept) {
            PyErr_SetString(PyExc_TypeError, "plan must be a TuplePlan");
            goto done;
        }
        PyObject *value = NULL;
        if (kind == 't') {
            value = type_value(kinds[i], text, length, PyTuple_GET_ITEM(loaders, out), plan, out);
            if (value == NULL) goto done;
        } else if (kind == 'u') {
            value = Py_NewRef(plan[PLAN_UNCHANGED]);
        }
        if (value != NULL) {
            int failed = PyDict_SetItem(row, PyTuple_GET_ITEM(names, out), value);
            Py_DECREF(value);
            if (failed) goto done;
        }
        out++;
    }
    result = Py_BuildValue("(On)", row, pos);

done:
    Py_XDECREF(row);
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
        unsigned char kind;
        const char *text;
        Py_ssize_t length;
        if (next_value(data, size, &pos, &kind, &text, &length) < 0) goto done;
    }
    result = PyLong_FromSsize_t(pos);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"load_tuple", (PyCFunction)(void (*)(void))load_tuple, METH_FASTCALL,
     "load_tuple(data, pos, plan) -> (row, end)"},
    {"skip_tuple", (PyCFunction)(void (*)(void))skip_tuple, METH_FASTCALL,
     "skip_tuple(data, pos) -> end"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tuples", "pgoutput TupleData decoder (C).", -1, methods,
};

PyMODINIT_FUNC PyInit__tuples(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    static const struct {
        const char *name;
        int value;
    } kinds[] = {
        {"KIND_STR", KIND_STR},           {"KIND_INT", KIND_INT},
        {"KIND_BOOL", KIND_BOOL},         {"KIND_FLOAT", KIND_FLOAT},
        {"KIND_TIMESTAMP", KIND_TIMESTAMP}, {"KIND_TIMESTAMPTZ", KIND_TIMESTAMPTZ},
        {"KIND_PYTHON", KIND_PYTHON},     {"KIND_TEXT_ARRAY", KIND_TEXT_ARRAY},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (PyModule_AddIntConstant(m, kinds[i].name, kinds[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
