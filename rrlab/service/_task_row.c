/* The task_runs_v2 row (and raw_task_runs_payload_v1 row) of a change in C: the consumer
 * builds one per replicated row.
 *
 * In Python (one flat list display of ~60 dict gets, 10 datetime → epoch ms conversions and
 * `or ""` defaults) it cost ~19% of the consumer's CPU. This is the same function statement
 * by statement, in the same evaluation order, so that its values and its errors are the
 * Python body's for every input: the fast paths (exact dicts, exact UTC datetimes, exact
 * strs) compute what Python would without running Python code, and anything else goes
 * through the Python protocol (PyNumber_Subtract, PyObject_GetItem, rich comparisons,
 * PyObject_IsTrue) or the Python helpers that transform hands over once with bind().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>

/* The operands of `(value - epoch) // one_ms`, made at import. */
static PyObject *epoch;  /* datetime(1970, 1, 1, tzinfo=UTC) */
static PyObject *one_ms; /* timedelta(milliseconds=1) */

/* What bind() received from rrlab.service.transform (strong references, kept for life). */
static PyObject *json_column;            /* json_values.json_column(text, content_type) */
static PyObject *run_error_fingerprint;  /* fingerprint.run_error_fingerprint(status, error) */
static PyObject *fingerprinted_statuses; /* fingerprint.FINGERPRINTED_STATUSES (frozenset) */
static PyObject *annotation_sources;     /* transform._annotation_sources(annotations) */
static PyObject *external_deployment_id; /* transform._external_deployment_id(reason, ann.) */

/* Interned strings: dict keys (their hash is cached), attribute names, constants. */
static PyObject *s_empty, *s_run, *s_get, *s_version, *s_kind, *s_delete, *s_colon,
    *s_partition, *s_data, *s_pending, *s_event, *s_fingerprinting;
static PyObject *k_queue_timestamp, *k_completed_at, *k_started_at, *k_executed_at,
    *k_delay_until, *k_queued_at, *k_expired_at, *k_attempt_number, *k_usage_duration_ms,
    *k_cost_in_cents, *k_base_cost_in_cents, *k_status, *k_error, *k_output, *k_run_tags,
    *k_depth, *k_idempotency_key_options, *k_key, *k_scope, *k_bulk_action_group_ids,
    *k_master_queue, *k_annotations, *k_status_reason, *k_is_warm_start,
    *k_runtime_environment_id, *k_organization_id, *k_project_id, *k_id, *k_updated_at,
    *k_created_at, *k_environment_type, *k_friendly_id, *k_engine, *k_task_identifier,
    *k_queue, *k_schedule_id, *k_batch_id, *k_output_type, *k_task_version, *k_sdk_version,
    *k_cli_version, *k_machine_preset, *k_root_task_run_id, *k_parent_task_run_id,
    *k_span_id, *k_trace_id, *k_idempotency_key, *k_ttl, *k_is_test, *k_concurrency_key,
    *k_region, *k_plan_type, *k_max_duration_in_seconds, *k_trigger_source,
    *k_trigger_action, *k_root_trigger_source, *k_task_kind, *k_external_deployment_id,
    *k_payload, *k_payload_type;
static PyObject *zero, *one; /* the small ints 0 and 1 */

#define TASK_RUN_COLUMN_COUNT 56

/* The run mapping: an exact dict is read directly (what dict.get and dict[key] do, without
 * a method call); anything else through its own get and __getitem__. Every value read is
 * held as a new reference: Python code run later (a value's __bool__, json_column) cannot
 * free it. */
typedef struct {
    PyObject *run;
    PyObject *get; /* run.get, NULL for an exact dict (and where only run[key] is read) */
} source;

/* run.get(key): a new reference (None when absent), NULL with an error set. */
static PyObject *run_get(const source *src, PyObject *key) {
    if (src->get == NULL) {
        PyObject *value = PyDict_GetItemWithError(src->run, key);
        if (value == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        return Py_NewRef(value);
    }
    return PyObject_CallOneArg(src->get, key);
}

/* run[key]: a new reference, NULL with an error set (KeyError(key) for an absent key). */
static PyObject *run_item(const source *src, PyObject *key) {
    if (PyDict_CheckExact(src->run)) {
        PyObject *value = PyDict_GetItemWithError(src->run, key);
        if (value == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        return Py_NewRef(value);
    }
    return PyObject_GetItem(src->run, key);
}

/* dict.get(key, default) of an exact dict: a new reference, NULL with an error set. */
static PyObject *dict_get(PyObject *dict, PyObject *key, PyObject *default_value) {
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(default_value);
    return Py_NewRef(value);
}

/* Days from 1970-01-01 to the proleptic Gregorian date (exact for years 1 to 9999). */
static int64_t days_from_civil(int64_t year, int64_t month, int64_t day) {
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

/* (value - epoch) // one_ms: a new reference, NULL with an error set. An exact datetime
 * whose tzinfo is the timezone.utc singleton (what the decoder makes) is subtracted from
 * the epoch as naive times (same tzinfo object), computed here; anything else (other
 * zones, naive datetimes, subclasses, non-datetimes) takes the Python operators, so the
 * result or the error is theirs. */
static PyObject *epoch_ms(PyObject *value) {
    if (PyDateTime_CheckExact(value) &&
        PyDateTime_DATE_GET_TZINFO(value) == PyDateTime_TimeZone_UTC) {
        int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                       PyDateTime_GET_DAY(value));
        int64_t seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(value) * 3600 +
                          PyDateTime_DATE_GET_MINUTE(value) * 60 +
                          PyDateTime_DATE_GET_SECOND(value);
        int64_t microseconds = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(value);
        /* floor division, as timedelta // timedelta: before 1970 rounds toward -inf */
        int64_t ms = microseconds / 1000;
        if (microseconds % 1000 < 0) ms -= 1;
        return PyLong_FromLongLong(ms);
    }
    PyObject *delta = PyNumber_Subtract(value, epoch);
    if (delta == NULL) return NULL;
    PyObject *ms = PyNumber_FloorDivide(delta, one_ms);
    Py_DECREF(delta);
    return ms;
}

/* None if value is None else epoch_ms(value) */
static PyObject *optional_epoch_ms(PyObject *value) {
    return value == Py_None ? Py_NewRef(Py_None) : epoch_ms(value);
}

/* default if value is None else value */
static PyObject *if_none(PyObject *value, PyObject *default_value) {
    return Py_NewRef(value == Py_None ? default_value : value);
}

/* value or fallback: a new reference, NULL with the error of bool(value). Steals value. */
static PyObject *or_else(PyObject *value, PyObject *fallback) {
    if (value == NULL) return NULL;
    int truth = PyObject_IsTrue(value);
    if (truth < 0) {
        Py_DECREF(value);
        return NULL;
    }
    if (truth) return value;
    Py_DECREF(value);
    return Py_NewRef(fallback);
}

/* get(key) or "" */
static PyObject *get_or_empty(const source *src, PyObject *key) {
    return or_else(run_get(src, key), s_empty);
}

/* The annotation cells: (trigger_source, root_trigger_source, task_kind) and
 * external_deployment_id, set to new references. The statements of task_run_row's
 * `if annotations is not None:` block: _annotation_sources, then get("statusReason"), then
 * _external_deployment_id. Both helpers are inlined for an exact dict (the jsonb object
 * the decoder makes) and called for anything else. 0, or -1 with an error set. */
static int annotation_cells(const source *src, PyObject *annotations, PyObject *cells[4]) {
    PyObject *status_reason = NULL;
    int status = -1;
    if (!PyDict_CheckExact(annotations)) {
        PyObject *sources = PyObject_CallOneArg(annotation_sources, annotations);
        if (sources == NULL) return -1;
        if (!PyTuple_CheckExact(sources) || PyTuple_GET_SIZE(sources) != 3) {
            Py_DECREF(sources);
            PyErr_SetString(PyExc_TypeError, "_annotation_sources must return a 3-tuple");
            return -1;
        }
        for (int i = 0; i < 3; i++) cells[i] = Py_NewRef(PyTuple_GET_ITEM(sources, i));
        Py_DECREF(sources);
        status_reason = run_get(src, k_status_reason);
        if (status_reason == NULL) return -1;
        cells[3] = PyObject_CallFunctionObjArgs(external_deployment_id, status_reason,
                                                annotations, NULL);
        Py_DECREF(status_reason);
        return cells[3] == NULL ? -1 : 0;
    }
    /* _annotation_sources: three required strs and an optional str, by exact type; the
     * lookups in its order (triggerAction only once triggerSource is a str). */
    PyObject *trigger = NULL, *action = NULL, *root = NULL, *kind = NULL;
    if ((trigger = dict_get(annotations, k_trigger_source, Py_None)) == NULL) goto done;
    if ((root = dict_get(annotations, k_root_trigger_source, Py_None)) == NULL) goto done;
    if ((kind = dict_get(annotations, k_task_kind, s_empty)) == NULL) goto done;
    int valid = PyUnicode_CheckExact(trigger);
    if (valid) {
        if ((action = dict_get(annotations, k_trigger_action, Py_None)) == NULL) goto done;
        valid = PyUnicode_CheckExact(action) && PyUnicode_CheckExact(root) &&
                PyUnicode_CheckExact(kind);
    }
    cells[0] = Py_NewRef(valid ? trigger : s_empty);
    cells[1] = Py_NewRef(valid ? root : s_empty);
    cells[2] = Py_NewRef(valid ? kind : s_empty);
    /* _external_deployment_id: `status_reason != "EXTERNAL_DEPLOYMENT_PENDING"` is
     * Python's != (any type may answer it), then the id when it is an exact str. */
    if ((status_reason = run_get(src, k_status_reason)) == NULL) goto done;
    PyObject *differs = PyObject_RichCompare(status_reason, s_pending, Py_NE);
    if (differs == NULL) goto done;
    int other_reason = PyObject_IsTrue(differs);
    Py_DECREF(differs);
    if (other_reason < 0) goto done;
    if (other_reason) {
        cells[3] = Py_NewRef(s_empty);
    } else {
        PyObject *deployment = dict_get(annotations, k_external_deployment_id, Py_None);
        if (deployment == NULL) goto done;
        cells[3] = Py_NewRef(PyUnicode_CheckExact(deployment) ? deployment : s_empty);
        Py_DECREF(deployment);
    }
    status = 0;
done:
    Py_XDECREF(trigger);
    Py_XDECREF(action);
    Py_XDECREF(root);
    Py_XDECREF(kind);
    Py_XDECREF(status_reason);
    return status;
}

/* "" if master_queue is None else master_queue.partition(":")[0] */
static PyObject *worker_queue(PyObject *master_queue) {
    if (master_queue == Py_None) return Py_NewRef(s_empty);
    if (PyUnicode_CheckExact(master_queue)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(master_queue);
        Py_ssize_t colon = PyUnicode_FindChar(master_queue, ':', 0, length, 1);
        if (colon == -2) return NULL;
        return colon < 0 ? Py_NewRef(master_queue)
                         : PyUnicode_Substring(master_queue, 0, colon);
    }
    PyObject *parts = PyObject_CallMethodOneArg(master_queue, s_partition, s_colon);
    if (parts == NULL) return NULL;
    PyObject *head = PyObject_GetItem(parts, zero);
    Py_DECREF(parts);
    return head;
}

/* run_error_fingerprint(status, error) if fingerprinting else "". For an exact str status
 * outside FINGERPRINTED_STATUSES (most runs) the function's answer, "", is known without
 * calling it; its membership test runs no Python code for an exact str. */
static PyObject *fingerprint_cell(PyObject *fingerprinting, PyObject *status, PyObject *error) {
    int on = PyObject_IsTrue(fingerprinting);
    if (on < 0) return NULL;
    if (!on) return Py_NewRef(s_empty);
    if (PyUnicode_CheckExact(status)) {
        int failed = PySet_Contains(fingerprinted_statuses, status);
        if (failed < 0) return NULL;
        if (!failed) return Py_NewRef(s_empty);
    }
    return PyObject_CallFunctionObjArgs(run_error_fingerprint, status, error, NULL);
}

/* json_column(output, get("outputType")) if output else {} */
static PyObject *output_cell(const source *src, PyObject *output) {
    int truth = PyObject_IsTrue(output);
    if (truth < 0) return NULL;
    if (!truth) return PyDict_New();
    PyObject *output_type = run_get(src, k_output_type);
    if (output_type == NULL) return NULL;
    PyObject *cell = PyObject_CallFunctionObjArgs(json_column, output, output_type, NULL);
    Py_DECREF(output_type);
    return cell;
}

/* {"data": error} */
static PyObject *data_cell(PyObject *error) {
    PyObject *cell = PyDict_New();
    if (cell != NULL && PyDict_SetItem(cell, s_data, error) < 0) Py_CLEAR(cell);
    return cell;
}

/* 1 if value else 0 */
static PyObject *flag(PyObject *value) {
    if (value == NULL) return NULL;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    if (truth < 0) return NULL;
    return Py_NewRef(truth ? one : zero);
}

/* 1 if kind == "delete" else 0 (Python's ==, whatever kind is) */
static PyObject *deleted(PyObject *kind) {
    if (kind == NULL) return NULL;
    PyObject *equal = PyObject_RichCompare(kind, s_delete, Py_EQ);
    Py_DECREF(kind);
    return flag(equal);
}

/* task_run_row of event, its fingerprinting flag as given (only its truth is read). */
static PyObject *build_row(PyObject *event, PyObject *fingerprinting) {
    /* the values the Python body binds to names before its list display, in its order */
    enum {
        QUEUE_TIMESTAMP, COMPLETED_AT, STARTED_AT, EXECUTED_AT, DELAY_UNTIL, QUEUED_AT,
        EXPIRED_AT, ATTEMPT, USAGE_DURATION_MS, COST_IN_CENTS, BASE_COST_IN_CENTS, STATUS,
        ERROR, OUTPUT, TAGS, DEPTH, KEY_OPTIONS, KEY_USER, KEY_SCOPE, BULK_ACTION_GROUP_IDS,
        MASTER_QUEUE, ANNOTATIONS, TRIGGER_SOURCE, ROOT_TRIGGER_SOURCE, TASK_KIND,
        EXTERNAL_DEPLOYMENT_ID, IS_WARM_START, BOUND_COUNT
    };
    PyObject *bound[BOUND_COUNT] = {NULL};
    source src = {NULL, NULL};
    PyObject *row = NULL;

    if ((src.run = PyObject_GetAttr(event, s_run)) == NULL) goto error;
    if (!PyDict_CheckExact(src.run) && (src.get = PyObject_GetAttr(src.run, s_get)) == NULL) {
        goto error;
    }
    static PyObject **const first_gets[] = {
        &k_queue_timestamp, &k_completed_at, &k_started_at, &k_executed_at,
        &k_delay_until, &k_queued_at, &k_expired_at, &k_attempt_number,
        &k_usage_duration_ms, &k_cost_in_cents, &k_base_cost_in_cents,
    };
    for (int i = QUEUE_TIMESTAMP; i <= BASE_COST_IN_CENTS; i++) {
        if ((bound[i] = run_get(&src, *first_gets[i])) == NULL) goto error;
    }
    if ((bound[STATUS] = run_item(&src, k_status)) == NULL) goto error;
    if ((bound[ERROR] = run_get(&src, k_error)) == NULL) goto error;
    if ((bound[OUTPUT] = run_get(&src, k_output)) == NULL) goto error;
    if ((bound[TAGS] = run_get(&src, k_run_tags)) == NULL) goto error;
    if ((bound[DEPTH] = run_get(&src, k_depth)) == NULL) goto error;
    if ((bound[KEY_OPTIONS] = run_get(&src, k_idempotency_key_options)) == NULL) goto error;
    PyObject *key_options = bound[KEY_OPTIONS];
    if (PyDict_CheckExact(key_options)) { /* `type(key_options) is dict` */
        PyObject *user = dict_get(key_options, k_key, Py_None);
        if (user == NULL) goto error;
        bound[KEY_USER] = if_none(user, s_empty);
        Py_DECREF(user);
        PyObject *scope = dict_get(key_options, k_scope, Py_None);
        if (scope == NULL) goto error;
        bound[KEY_SCOPE] = if_none(scope, s_empty);
        Py_DECREF(scope);
    } else {
        bound[KEY_USER] = Py_NewRef(s_empty);
        bound[KEY_SCOPE] = Py_NewRef(s_empty);
    }
    if ((bound[BULK_ACTION_GROUP_IDS] = run_get(&src, k_bulk_action_group_ids)) == NULL) {
        goto error;
    }
    if ((bound[MASTER_QUEUE] = run_get(&src, k_master_queue)) == NULL) goto error;
    if ((bound[ANNOTATIONS] = run_get(&src, k_annotations)) == NULL) goto error;
    if (bound[ANNOTATIONS] == Py_None) {
        for (int i = TRIGGER_SOURCE; i <= EXTERNAL_DEPLOYMENT_ID; i++) {
            bound[i] = Py_NewRef(s_empty);
        }
    } else if (annotation_cells(&src, bound[ANNOTATIONS], &bound[TRIGGER_SOURCE]) < 0) {
        goto error;
    }
    if ((bound[IS_WARM_START] = run_get(&src, k_is_warm_start)) == NULL) goto error;

    /* The list display, element by element in column order (TASK_RUN_COLUMNS). */
    row = PyList_New(TASK_RUN_COLUMN_COUNT);
    if (row == NULL) goto error;
    Py_ssize_t n = 0;
#define PUT(expression)                                  \
    do {                                                 \
        PyObject *cell_ = (expression);                  \
        if (cell_ == NULL) goto error;                   \
        PyList_SET_ITEM(row, n++, cell_);                \
    } while (0)
#define PUT_EPOCH_MS(key)                                \
    do {                                                 \
        PyObject *moment_ = run_item(&src, key);         \
        if (moment_ == NULL) goto error;                 \
        PyObject *ms_ = epoch_ms(moment_);               \
        Py_DECREF(moment_);                              \
        PUT(ms_);                                        \
    } while (0)
    PUT(run_item(&src, k_runtime_environment_id));
    PUT(run_item(&src, k_organization_id));
    PUT(run_item(&src, k_project_id));
    PUT(run_item(&src, k_id));
    PUT_EPOCH_MS(k_updated_at);
    PUT_EPOCH_MS(k_created_at);
    PUT(optional_epoch_ms(bound[QUEUE_TIMESTAMP]));
    PUT(Py_NewRef(bound[STATUS]));
    PUT(run_item(&src, k_environment_type));
    PUT(run_item(&src, k_friendly_id));
    PUT(if_none(bound[ATTEMPT], one));
    PUT(run_item(&src, k_engine));
    PUT(run_item(&src, k_task_identifier));
    PUT(run_item(&src, k_queue));
    PUT(get_or_empty(&src, k_schedule_id));
    PUT(get_or_empty(&src, k_batch_id));
    for (int i = COMPLETED_AT; i <= EXPIRED_AT; i++) PUT(optional_epoch_ms(bound[i]));
    PUT(if_none(bound[USAGE_DURATION_MS], zero));
    PUT(if_none(bound[COST_IN_CENTS], zero));
    PUT(if_none(bound[BASE_COST_IN_CENTS], zero));
    PUT(output_cell(&src, bound[OUTPUT]));
    PUT(data_cell(bound[ERROR]));
    PUT(fingerprint_cell(fingerprinting, bound[STATUS], bound[ERROR]));
    PUT(bound[TAGS] == Py_None ? PyList_New(0) : Py_NewRef(bound[TAGS]));
    PUT(get_or_empty(&src, k_task_version));
    PUT(get_or_empty(&src, k_sdk_version));
    PUT(get_or_empty(&src, k_cli_version));
    PUT(get_or_empty(&src, k_machine_preset));
    PUT(get_or_empty(&src, k_root_task_run_id));
    PUT(get_or_empty(&src, k_parent_task_run_id));
    PUT(if_none(bound[DEPTH], zero));
    PUT(run_item(&src, k_span_id));
    PUT(run_item(&src, k_trace_id));
    PUT(get_or_empty(&src, k_idempotency_key));
    PUT(Py_NewRef(bound[KEY_USER]));
    PUT(Py_NewRef(bound[KEY_SCOPE]));
    PUT(get_or_empty(&src, k_ttl));
    PUT(flag(run_get(&src, k_is_test)));
    PUT(PyObject_GetAttr(event, s_version));
    PUT(deleted(PyObject_GetAttr(event, s_kind)));
    PUT(get_or_empty(&src, k_concurrency_key));
    PUT(bound[BULK_ACTION_GROUP_IDS] == Py_None ? PyList_New(0)
                                                : Py_NewRef(bound[BULK_ACTION_GROUP_IDS]));
    PUT(worker_queue(bound[MASTER_QUEUE]));
    PUT(get_or_empty(&src, k_region));
    PUT(get_or_empty(&src, k_plan_type));
    PUT(run_get(&src, k_max_duration_in_seconds));
    PUT(Py_NewRef(bound[TRIGGER_SOURCE]));
    PUT(Py_NewRef(bound[ROOT_TRIGGER_SOURCE]));
    PUT(Py_NewRef(bound[TASK_KIND]));
    PUT(bound[IS_WARM_START] == Py_None ? Py_NewRef(Py_None)
                                        : flag(Py_NewRef(bound[IS_WARM_START])));
    PUT(Py_NewRef(bound[EXTERNAL_DEPLOYMENT_ID]));
#undef PUT_EPOCH_MS
#undef PUT
    goto done;
error:
    Py_CLEAR(row); /* a list's unset items are NULL, which its dealloc skips */
done:
    for (int i = 0; i < BOUND_COUNT; i++) Py_XDECREF(bound[i]);
    Py_XDECREF(src.get);
    Py_XDECREF(src.run);
    return row;
}

/* The arguments of `name(event)` or, when fingerprinting is not NULL,
 * `name(event, *, fingerprinting=True)`, checked as Python checks a call of that def.
 * 0, or -1 with the TypeError Python would raise. */
static int event_arguments(const char *name, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames, PyObject **event, PyObject **fingerprinting) {
    if (json_column == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s() before bind()", name);
        return -1;
    }
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes 1 positional argument but %zd were given",
                     name, nargs);
        return -1;
    }
    *event = nargs == 1 ? args[0] : NULL;
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < keywords; i++) {
        PyObject *keyword = PyTuple_GET_ITEM(kwnames, i);
        if (fingerprinting != NULL && PyUnicode_Compare(keyword, s_fingerprinting) == 0) {
            *fingerprinting = args[nargs + i];
        } else if (PyUnicode_Compare(keyword, s_event) != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", name,
                         keyword);
            return -1;
        } else if (*event != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument 'event'", name);
            return -1;
        } else {
            *event = args[nargs + i];
        }
    }
    if (*event == NULL) {
        PyErr_Format(PyExc_TypeError, "%s() missing 1 required positional argument: 'event'",
                     name);
        return -1;
    }
    return 0;
}

/* task_run_row(event, *, fingerprinting=True) -> list: transform.task_run_row. */
static PyObject *task_run_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    PyObject *event, *fingerprinting = Py_True;
    if (event_arguments("task_run_row", args, nargs, kwnames, &event, &fingerprinting) < 0) {
        return NULL;
    }
    return build_row(event, fingerprinting);
}

/* payload_row(event) -> list: transform.payload_row,
 * [run["id"], (run["createdAt"] - epoch) // one_ms, json_column(run["payload"],
 * run["payloadType"])], evaluated in that order (run.get is never read). */
static PyObject *payload_row(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    PyObject *event;
    if (event_arguments("payload_row", args, nargs, kwnames, &event, NULL) < 0) return NULL;
    source src = {PyObject_GetAttr(event, s_run), NULL};
    if (src.run == NULL) return NULL;
    PyObject *row = NULL, *run_id = NULL, *created_at = NULL, *payload = NULL,
             *payload_type = NULL, *created_ms = NULL;
    if ((run_id = run_item(&src, k_id)) == NULL) goto done;
    if ((created_at = run_item(&src, k_created_at)) == NULL) goto done;
    if ((created_ms = epoch_ms(created_at)) == NULL) goto done;
    if ((payload = run_item(&src, k_payload)) == NULL) goto done;
    if ((payload_type = run_item(&src, k_payload_type)) == NULL) goto done;
    PyObject *cell = PyObject_CallFunctionObjArgs(json_column, payload, payload_type, NULL);
    if (cell == NULL) goto done;
    row = PyList_New(3);
    if (row == NULL) {
        Py_DECREF(cell);
        goto done;
    }
    PyList_SET_ITEM(row, 0, Py_NewRef(run_id));
    PyList_SET_ITEM(row, 1, Py_NewRef(created_ms));
    PyList_SET_ITEM(row, 2, cell);
done:
    Py_XDECREF(run_id);
    Py_XDECREF(created_at);
    Py_XDECREF(created_ms);
    Py_XDECREF(payload);
    Py_XDECREF(payload_type);
    Py_DECREF(src.run);
    return row;
}

/* bind(json_column, run_error_fingerprint, fingerprinted_statuses, annotation_sources,
 *      external_deployment_id) -> None */
static PyObject *bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(json_column, run_error_fingerprint, fingerprinted_statuses, "
                        "annotation_sources, external_deployment_id) takes 5 arguments");
        return NULL;
    }
    if (!PyFrozenSet_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "fingerprinted_statuses must be a frozenset");
        return NULL;
    }
    PyObject **const slots[] = {&json_column, &run_error_fingerprint, &fingerprinted_statuses,
                                &annotation_sources, &external_deployment_id};
    for (int i = 0; i < 5; i++) Py_XSETREF(*slots[i], Py_NewRef(args[i]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"task_run_row", (PyCFunction)(void (*)(void))task_run_row,
     METH_FASTCALL | METH_KEYWORDS,
     "task_run_row(event, *, fingerprinting=True) -> list: the task_runs_v2 row of an event, "
     "in TASK_RUN_COLUMNS order"},
    {"payload_row", (PyCFunction)(void (*)(void))payload_row, METH_FASTCALL | METH_KEYWORDS,
     "payload_row(event) -> list: the raw_task_runs_payload_v1 row of an insert event, in "
     "PAYLOAD_COLUMNS order"},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(json_column, run_error_fingerprint, fingerprinted_statuses, annotation_sources, "
     "external_deployment_id): the Python values task_run_row uses"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_task_row", "The ClickHouse rows of a change (C).", -1, methods,
};

static int intern_all(void) {
    static const struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_empty, ""}, {&s_run, "run"}, {&s_get, "get"}, {&s_version, "version"},
        {&s_kind, "kind"}, {&s_delete, "delete"}, {&s_colon, ":"},
        {&s_partition, "partition"}, {&s_data, "data"},
        {&s_pending, "EXTERNAL_DEPLOYMENT_PENDING"}, {&s_event, "event"},
        {&s_fingerprinting, "fingerprinting"},
        {&k_queue_timestamp, "queueTimestamp"}, {&k_completed_at, "completedAt"},
        {&k_started_at, "startedAt"}, {&k_executed_at, "executedAt"},
        {&k_delay_until, "delayUntil"}, {&k_queued_at, "queuedAt"},
        {&k_expired_at, "expiredAt"}, {&k_attempt_number, "attemptNumber"},
        {&k_usage_duration_ms, "usageDurationMs"}, {&k_cost_in_cents, "costInCents"},
        {&k_base_cost_in_cents, "baseCostInCents"}, {&k_status, "status"},
        {&k_error, "error"}, {&k_output, "output"}, {&k_run_tags, "runTags"},
        {&k_depth, "depth"}, {&k_idempotency_key_options, "idempotencyKeyOptions"},
        {&k_key, "key"}, {&k_scope, "scope"},
        {&k_bulk_action_group_ids, "bulkActionGroupIds"}, {&k_master_queue, "masterQueue"},
        {&k_annotations, "annotations"}, {&k_status_reason, "statusReason"},
        {&k_is_warm_start, "isWarmStart"},
        {&k_runtime_environment_id, "runtimeEnvironmentId"},
        {&k_organization_id, "organizationId"}, {&k_project_id, "projectId"}, {&k_id, "id"},
        {&k_updated_at, "updatedAt"}, {&k_created_at, "createdAt"},
        {&k_environment_type, "environmentType"}, {&k_friendly_id, "friendlyId"},
        {&k_engine, "engine"}, {&k_task_identifier, "taskIdentifier"}, {&k_queue, "queue"},
        {&k_schedule_id, "scheduleId"}, {&k_batch_id, "batchId"},
        {&k_output_type, "outputType"}, {&k_task_version, "taskVersion"},
        {&k_sdk_version, "sdkVersion"}, {&k_cli_version, "cliVersion"},
        {&k_machine_preset, "machinePreset"}, {&k_root_task_run_id, "rootTaskRunId"},
        {&k_parent_task_run_id, "parentTaskRunId"}, {&k_span_id, "spanId"},
        {&k_trace_id, "traceId"}, {&k_idempotency_key, "idempotencyKey"}, {&k_ttl, "ttl"},
        {&k_is_test, "isTest"}, {&k_concurrency_key, "concurrencyKey"},
        {&k_region, "region"}, {&k_plan_type, "planType"},
        {&k_max_duration_in_seconds, "maxDurationInSeconds"},
        {&k_trigger_source, "triggerSource"}, {&k_trigger_action, "triggerAction"},
        {&k_root_trigger_source, "rootTriggerSource"}, {&k_task_kind, "taskKind"},
        {&k_external_deployment_id, "externalDeploymentId"}, {&k_payload, "payload"},
        {&k_payload_type, "payloadType"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) return -1;
    }
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    epoch = PyDateTimeAPI->DateTime_FromDateAndTime(1970, 1, 1, 0, 0, 0, 0,
                                                    PyDateTime_TimeZone_UTC,
                                                    PyDateTimeAPI->DateTimeType);
    one_ms = PyDelta_FromDSU(0, 0, 1000);
    return zero == NULL || one == NULL || epoch == NULL || one_ms == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__task_row(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || intern_all() < 0) return NULL;
    return PyModule_Create(&module);
}
