/*
 * verify_many(fn, keys, messages, signatures) -> bytes of 0/1 verdicts.
 *
 * Calls libsodium's crypto_sign_verify_detached (the copy PyNaCl bundles; `fn` is its address,
 * found by ledger/sigverify.py) once per signature in a C loop with the GIL released for the
 * whole batch. That is what lets signature checks run in threads beside the thread that
 * parses and commits: a Python-level loop would take the GIL back after every signature and
 * wait for the busy thread to hand it over. Same function, same verdicts as
 * nacl.bindings.crypto_sign_open.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef int (*verify_fn)(const unsigned char *sig, const unsigned char *m, unsigned long long mlen,
                         const unsigned char *pk);

static PyObject *verify_many(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long addr;
    PyObject *keys_in, *msgs_in, *sigs_in;
    if (!PyArg_ParseTuple(args, "KOOO", &addr, &keys_in, &msgs_in, &sigs_in))
        return NULL;
    /* Tuples of the items: they hold every bytes object while the GIL is released, whatever
     * another thread does to the caller's sequences. */
    PyObject *keys = PySequence_Tuple(keys_in), *msgs = keys ? PySequence_Tuple(msgs_in) : NULL,
             *sigs = msgs ? PySequence_Tuple(sigs_in) : NULL;
    PyObject *out = NULL;
    const unsigned char **k = NULL;
    Py_ssize_t *mlen = NULL;
    if (!sigs)
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(msgs);
    if (!addr || PyTuple_GET_SIZE(keys) != n || PyTuple_GET_SIZE(sigs) != n) {
        PyErr_SetString(PyExc_ValueError, "verify_many(fn, keys, messages, signatures): sequences of equal length");
        goto done;
    }
    verify_fn fn = (verify_fn)(uintptr_t)addr;
    k = PyMem_Malloc(sizeof(char *) * 3 * (n ? n : 1));
    mlen = PyMem_Malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    out = PyBytes_FromStringAndSize(NULL, n);
    if (!k || !mlen || !out) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char **m = k + n, **s = k + 2 * n;
    char *res = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pk = PyTuple_GET_ITEM(keys, i), *msg = PyTuple_GET_ITEM(msgs, i), *sig = PyTuple_GET_ITEM(sigs, i);
        if (!PyBytes_Check(pk) || !PyBytes_Check(msg) || !PyBytes_Check(sig)) {
            PyErr_Format(PyExc_TypeError, "item %zd: keys, messages and signatures must be bytes", i);
            Py_CLEAR(out);
            goto done;
        }
        /* wrong lengths are a refusal, not an error (as crypto_sign_open's checks) */
        int ok_len = PyBytes_GET_SIZE(pk) == 32 && PyBytes_GET_SIZE(sig) == 64;
        k[i] = ok_len ? (const unsigned char *)PyBytes_AS_STRING(pk) : NULL;
        m[i] = (const unsigned char *)PyBytes_AS_STRING(msg);
        s[i] = (const unsigned char *)PyBytes_AS_STRING(sig);
        mlen[i] = PyBytes_GET_SIZE(msg);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        res[i] = k[i] != NULL && fn(s[i], m[i], (unsigned long long)mlen[i], k[i]) == 0;
    Py_END_ALLOW_THREADS
done:
    Py_XDECREF(keys);
    Py_XDECREF(msgs);
    Py_XDECREF(sigs);
    PyMem_Free(k);
    PyMem_Free(mlen);
    return out;
}

static PyMethodDef methods[] = {
    {"verify_many", verify_many, METH_VARARGS, "verify_many(fn_address, keys, messages, signatures) -> bytes of 0/1"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sigloop", "libsodium signature checks in a GIL-free loop", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sigloop(void) { return PyModule_Create(&module); }
