/*
 * Ed25519 batch verification core for rlhf-verify (docs/verifier.md, "Signatures").
 *
 * One function, check(), decides whether
 *
 *     [8] ( [b]B  -  sum_i [s_i] P_i )  ==  identity
 *
 * for the base point B, given scalars and 32-byte point encodings. The caller (ed25519.py)
 * builds the RFC 8032 section 5.1.7 cofactored equation of many signatures as one such sum
 * with random 128-bit weights (Bernstein et al., "High-speed high-security signatures",
 * section 5): P_i are the signatures' R and the producers' keys A; hashing and scalar
 * arithmetic mod L stay in Python. Here: field arithmetic mod 2^255-19 in radix 2^51, points
 * in extended twisted Edwards coordinates (Hisil-Wong-Carter-Dawson 2008, a = -1), strict
 * decoding (RFC 8032 5.1.3 plus canonical y and no "-0"), a small-order check, and an
 * interleaved width-5 wNAF multi-scalar multiplication (Straus). Variable time is fine:
 * everything here is public (signatures, keys, random weights chosen by the verifier).
 *
 * Written from the RFC and the papers; tested against libsodium (tests/verifier/test_ed25519_batch.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__SIZEOF_INT128__)
#error "needs a compiler with unsigned __int128 (the verifier falls back to libsodium without it)"
#endif

typedef unsigned __int128 u128;
typedef uint64_t fe[5];
#define M51 ((uint64_t)0x7ffffffffffffULL)

static const fe FE_D = {929955233495203ULL, 466365720129213ULL, 1662059464998953ULL, 2033849074728123ULL, 1442794654840575ULL};
static const fe FE_D2 = {1859910466990425ULL, 932731440258426ULL, 1072319116312658ULL, 1815898335770999ULL, 633789495995903ULL};
static const fe FE_SQRTM1 = {1718705420411056ULL, 234908883556509ULL, 2233514472574048ULL, 2117202627021982ULL, 765476049583133ULL};

/* ---- field elements: limbs kept below about 2^52 between operations ---- */

static inline void fe_carry(fe h) {
    uint64_t c;
    c = h[0] >> 51; h[0] &= M51; h[1] += c;
    c = h[1] >> 51; h[1] &= M51; h[2] += c;
    c = h[2] >> 51; h[2] &= M51; h[3] += c;
    c = h[3] >> 51; h[3] &= M51; h[4] += c;
    c = h[4] >> 51; h[4] &= M51; h[0] += 19 * c;
}

static inline void fe_copy(fe h, const fe f) { memcpy(h, f, sizeof(fe)); }
static inline void fe_0(fe h) { memset(h, 0, sizeof(fe)); }
static inline void fe_1(fe h) { fe_0(h); h[0] = 1; }

static inline void fe_add(fe h, const fe f, const fe g) {
    for (int i = 0; i < 5; i++) h[i] = f[i] + g[i];
    fe_carry(h);
}

/* f - g + 4p: never negative for limbs of g below 2^53 */
static inline void fe_sub(fe h, const fe f, const fe g) {
    h[0] = f[0] + 0x1fffffffffffb4ULL - g[0];
    h[1] = f[1] + 0x1ffffffffffffcULL - g[1];
    h[2] = f[2] + 0x1ffffffffffffcULL - g[2];
    h[3] = f[3] + 0x1ffffffffffffcULL - g[3];
    h[4] = f[4] + 0x1ffffffffffffcULL - g[4];
    fe_carry(h);
}

static inline void fe_neg(fe h, const fe f) {
    fe z;
    fe_0(z);
    fe_sub(h, z, f);
}

static inline void fe_mul(fe h, const fe f, const fe g) {
    uint64_t f0 = f[0], f1 = f[1], f2 = f[2], f3 = f[3], f4 = f[4];
    uint64_t g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4];
    uint64_t g1_19 = 19 * g1, g2_19 = 19 * g2, g3_19 = 19 * g3, g4_19 = 19 * g4;
    u128 r0 = (u128)f0 * g0 + (u128)f1 * g4_19 + (u128)f2 * g3_19 + (u128)f3 * g2_19 + (u128)f4 * g1_19;
    u128 r1 = (u128)f0 * g1 + (u128)f1 * g0 + (u128)f2 * g4_19 + (u128)f3 * g3_19 + (u128)f4 * g2_19;
    u128 r2 = (u128)f0 * g2 + (u128)f1 * g1 + (u128)f2 * g0 + (u128)f3 * g4_19 + (u128)f4 * g3_19;
    u128 r3 = (u128)f0 * g3 + (u128)f1 * g2 + (u128)f2 * g1 + (u128)f3 * g0 + (u128)f4 * g4_19;
    u128 r4 = (u128)f0 * g4 + (u128)f1 * g3 + (u128)f2 * g2 + (u128)f3 * g1 + (u128)f4 * g0;
    uint64_t c;
    c = (uint64_t)(r0 >> 51); h[0] = (uint64_t)r0 & M51; r1 += c;
    c = (uint64_t)(r1 >> 51); h[1] = (uint64_t)r1 & M51; r2 += c;
    c = (uint64_t)(r2 >> 51); h[2] = (uint64_t)r2 & M51; r3 += c;
    c = (uint64_t)(r3 >> 51); h[3] = (uint64_t)r3 & M51; r4 += c;
    c = (uint64_t)(r4 >> 51); h[4] = (uint64_t)r4 & M51;
    h[0] += 19 * c;
    c = h[0] >> 51; h[0] &= M51; h[1] += c;
}

static inline void fe_sq(fe h, const fe f) { fe_mul(h, f, f); }

static void fe_sqn(fe h, const fe f, int n) {
    fe_sq(h, f);
    for (int i = 1; i < n; i++) fe_sq(h, h);
}

/* Little-endian 32 bytes, bit 255 ignored. */
static void fe_frombytes(fe h, const unsigned char *s) {
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        uint64_t x = 0;
        for (int j = 7; j >= 0; j--) x = (x << 8) | s[8 * i + j];
        w[i] = x;
    }
    h[0] = w[0] & M51;
    h[1] = ((w[0] >> 51) | (w[1] << 13)) & M51;
    h[2] = ((w[1] >> 38) | (w[2] << 26)) & M51;
    h[3] = ((w[2] >> 25) | (w[3] << 39)) & M51;
    h[4] = (w[3] >> 12) & M51;
}

/* The unique representative in [0, p), as 32 little-endian bytes. */
static void fe_tobytes(unsigned char *s, const fe f) {
    fe t;
    fe_copy(t, f);
    fe_carry(t);
    fe_carry(t);
    /* t < 2^255 + small, limbs carried. Compute q = 1 iff t >= p, via t + 19 >= 2^255. */
    uint64_t q = (t[0] + 19) >> 51;
    q = (t[1] + q) >> 51;
    q = (t[2] + q) >> 51;
    q = (t[3] + q) >> 51;
    q = (t[4] + q) >> 51;
    t[0] += 19 * q;
    uint64_t c;
    c = t[0] >> 51; t[0] &= M51; t[1] += c;
    c = t[1] >> 51; t[1] &= M51; t[2] += c;
    c = t[2] >> 51; t[2] &= M51; t[3] += c;
    c = t[3] >> 51; t[3] &= M51; t[4] += c;
    t[4] &= M51; /* drops the 2^255 that q accounted for */
    uint64_t w[4];
    w[0] = t[0] | (t[1] << 51);
    w[1] = (t[1] >> 13) | (t[2] << 38);
    w[2] = (t[2] >> 26) | (t[3] << 25);
    w[3] = (t[3] >> 39) | (t[4] << 12);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) s[8 * i + j] = (unsigned char)(w[i] >> (8 * j));
}

static int fe_iszero(const fe f) {
    unsigned char s[32];
    fe_tobytes(s, f);
    unsigned char acc = 0;
    for (int i = 0; i < 32; i++) acc |= s[i];
    return acc == 0;
}

static int fe_eq(const fe f, const fe g) {
    fe d;
    fe_sub(d, f, g);
    return fe_iszero(d);
}

static int fe_isodd(const fe f) {
    unsigned char s[32];
    fe_tobytes(s, f);
    return s[0] & 1;
}

/* z^(2^252 - 3) = z^((p-5)/8) */
static void fe_pow22523(fe out, const fe z) {
    fe t0, t1, t2;
    fe_sq(t0, z);                /* 2 */
    fe_sqn(t1, t0, 2);           /* 8 */
    fe_mul(t1, z, t1);           /* 9 */
    fe_mul(t0, t0, t1);          /* 11 */
    fe_sq(t0, t0);               /* 22 */
    fe_mul(t0, t1, t0);          /* 31 = 2^5 - 1 */
    fe_sqn(t1, t0, 5);
    fe_mul(t0, t1, t0);          /* 2^10 - 1 */
    fe_sqn(t1, t0, 10);
    fe_mul(t1, t1, t0);          /* 2^20 - 1 */
    fe_sqn(t2, t1, 20);
    fe_mul(t1, t2, t1);          /* 2^40 - 1 */
    fe_sqn(t1, t1, 10);
    fe_mul(t0, t1, t0);          /* 2^50 - 1 */
    fe_sqn(t1, t0, 50);
    fe_mul(t1, t1, t0);          /* 2^100 - 1 */
    fe_sqn(t2, t1, 100);
    fe_mul(t1, t2, t1);          /* 2^200 - 1 */
    fe_sqn(t1, t1, 50);
    fe_mul(t0, t1, t0);          /* 2^250 - 1 */
    fe_sqn(t0, t0, 2);           /* 2^252 - 4 */
    fe_mul(out, t0, z);          /* 2^252 - 3 */
}

/* ---- points ---- */

typedef struct { fe X, Y, Z, T; } ge;            /* extended: x = X/Z, y = Y/Z, xy = T/Z */
typedef struct { fe YpX, YmX, Z2, T2d; } ge_cached;

static void ge_identity(ge *p) { fe_0(p->X); fe_1(p->Y); fe_1(p->Z); fe_0(p->T); }

/* RFC 8032 5.1.3, strict: y < p, and x = 0 with the sign bit set is refused. 0 on failure. */
static int ge_decode(ge *p, const unsigned char *s) {
    unsigned char t[32];
    fe y, u, v, v3, x, vxx, chk;
    fe_frombytes(y, s);
    fe_tobytes(t, y);
    for (int i = 0; i < 31; i++) if (t[i] != s[i]) return 0;
    if (t[31] != (s[31] & 0x7f)) return 0;        /* y >= p: not canonical */
    int sign = s[31] >> 7;
    fe one;
    fe_1(one);
    fe_sq(u, y);
    fe_mul(v, u, FE_D);
    fe_sub(u, u, one);                             /* u = y^2 - 1 */
    fe_add(v, v, one);                             /* v = d y^2 + 1 */
    fe_sq(v3, v);
    fe_mul(v3, v3, v);                             /* v^3 */
    fe_sq(x, v3);
    fe_mul(x, x, v);
    fe_mul(x, x, u);                               /* u v^7 */
    fe_pow22523(x, x);
    fe_mul(x, x, v3);
    fe_mul(x, x, u);                               /* u v^3 (u v^7)^((p-5)/8) */
    fe_sq(vxx, x);
    fe_mul(vxx, vxx, v);
    if (!fe_eq(vxx, u)) {
        fe_neg(chk, u);
        if (!fe_eq(vxx, chk)) return 0;           /* no square root: not a point */
        fe_mul(x, x, FE_SQRTM1);
    }
    if (fe_iszero(x) && sign) return 0;
    if (fe_isodd(x) != sign) fe_neg(x, x);
    fe_copy(p->X, x);
    fe_copy(p->Y, y);
    fe_1(p->Z);
    fe_mul(p->T, x, y);
    return 1;
}

static void ge_neg(ge *r, const ge *p) {
    fe_neg(r->X, p->X);
    fe_copy(r->Y, p->Y);
    fe_copy(r->Z, p->Z);
    fe_neg(r->T, p->T);
}

static void ge_to_cached(ge_cached *c, const ge *p) {
    fe_add(c->YpX, p->Y, p->X);
    fe_sub(c->YmX, p->Y, p->X);
    fe_add(c->Z2, p->Z, p->Z);
    fe_mul(c->T2d, p->T, FE_D2);
}

/* r = p + q for q = (Y+X, Y-X, 2Z, 2dT) given as parts; add-2008-hwcd-3 for a = -1. -q is
 * (Y-X, Y+X, 2Z, -2dT): ge_sub passes the first two swapped and `neg` flips the T term's sign,
 * which swaps F and G. Inlined into both callers, so `neg` costs no branch in the hot loop.
 * r may alias p. */
static inline void ge_add_parts(ge *r, const ge *p, const fe ypx, const fe ymx, const fe z2, const fe t2d, int neg) {
    fe a, b, c, d, e, f, g, h;
    fe_sub(a, p->Y, p->X);
    fe_mul(a, a, ymx);
    fe_add(b, p->Y, p->X);
    fe_mul(b, b, ypx);
    fe_mul(c, p->T, t2d);
    fe_mul(d, p->Z, z2);
    fe_sub(e, b, a);
    if (neg) {
        fe_add(f, d, c);
        fe_sub(g, d, c);
    } else {
        fe_sub(f, d, c);
        fe_add(g, d, c);
    }
    fe_add(h, b, a);
    fe_mul(r->X, e, f);
    fe_mul(r->Y, g, h);
    fe_mul(r->T, e, h);
    fe_mul(r->Z, f, g);
}

static void ge_add(ge *r, const ge *p, const ge_cached *q) { ge_add_parts(r, p, q->YpX, q->YmX, q->Z2, q->T2d, 0); }

static void ge_sub(ge *r, const ge *p, const ge_cached *q) { ge_add_parts(r, p, q->YmX, q->YpX, q->Z2, q->T2d, 1); }

/* r = 2p; dbl-2008-hwcd with a = -1 (D = -A). With h = A+B, e = h-(X+Y)^2, g = A-B, f = C+g
 * the formula's E, G, F, H are -e, -g, -f, -h, and each output is a product of two of them,
 * so the signs cancel. r may alias p. */
static void ge_dbl(ge *r, const ge *p) {
    fe a, b, c, e, f, g, h, t;
    fe_sq(a, p->X);
    fe_sq(b, p->Y);
    fe_sq(c, p->Z);
    fe_add(c, c, c);
    fe_add(t, p->X, p->Y);
    fe_sq(t, t);
    fe_add(h, a, b);
    fe_sub(e, h, t);
    fe_sub(g, a, b);
    fe_add(f, c, g);
    fe_mul(r->X, e, f);
    fe_mul(r->Y, g, h);
    fe_mul(r->T, e, h);
    fe_mul(r->Z, f, g);
}

static int ge_is_identity(const ge *p) {
    return fe_iszero(p->X) && fe_eq(p->Y, p->Z);
}

static int ge_has_small_order(const ge *p) {
    ge t;
    ge_dbl(&t, p);
    ge_dbl(&t, &t);
    ge_dbl(&t, &t);
    return ge_is_identity(&t);
}

/* ---- scalars: width-5 NAF of a 256-bit little-endian scalar ---- */

static void slide5(signed char *r, const unsigned char *a) {
    for (int i = 0; i < 256; i++) r[i] = 1 & (a[i >> 3] >> (i & 7));
    for (int i = 0; i < 256; i++) {
        if (!r[i]) continue;
        for (int b = 1; b <= 6 && i + b < 256; b++) {
            if (!r[i + b]) continue;
            if (r[i] + (r[i + b] << b) <= 15) {
                r[i] += r[i + b] << b;
                r[i + b] = 0;
            } else if (r[i] - (r[i + b] << b) >= -15) {
                r[i] -= r[i + b] << b;
                for (int k = i + b; k < 256; k++) {
                    if (!r[k]) { r[k] = 1; break; }
                    r[k] = 0;
                }
            } else {
                break;
            }
        }
    }
}

/* Odd multiples P, 3P, ..., 15P in cached form. */
static void table8(ge_cached *tab, const ge *p) {
    ge p2, cur;
    ge_dbl(&p2, p);
    ge_cached p2c;
    ge_to_cached(&p2c, &p2);
    cur = *p;
    ge_to_cached(&tab[0], &cur);
    for (int i = 1; i < 8; i++) {
        ge_add(&cur, &cur, &p2c);
        ge_to_cached(&tab[i], &cur);
    }
}

static const unsigned char B_ENC[32] = {
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
static ge_cached B_TAB[8];

/*
 * check(b, points, scalars) -> int
 *   b: 32-byte scalar for the base point; points: n * 32 bytes; scalars: n * 32 bytes
 *   (little-endian, each below 2^253).
 *   Returns 1 if [8]([b]B - sum [s_i]P_i) is the identity, 0 if not, and -(i+1) if point i
 *   does not decode strictly or has small order (its signature or key is refused as such).
 */
static PyObject *py_check(PyObject *self, PyObject *args) {
    Py_buffer bb, pts, sc;
    if (!PyArg_ParseTuple(args, "y*y*y*", &bb, &pts, &sc)) return NULL;
    PyObject *ret = NULL;
    ge *P = NULL;
    ge_cached *tab = NULL;
    signed char *naf = NULL;
    if (bb.len != 32 || pts.len % 32 != 0 || pts.len != sc.len) {
        PyErr_SetString(PyExc_ValueError, "check(b, points, scalars): b is 32 bytes; points and scalars n*32 bytes each");
        goto done;
    }
    Py_ssize_t n = pts.len / 32;
    const unsigned char *pb = pts.buf, *sb = sc.buf;
    /* below 2^253 (reduced mod L or 128-bit weights), so the NAF never carries past bit 255 */
    if (((const unsigned char *)bb.buf)[31] & 0xe0) goto bad_scalar;
    for (Py_ssize_t i = 0; i < n; i++) if (sb[32 * i + 31] & 0xe0) goto bad_scalar;
    P = PyMem_Malloc(sizeof(ge) * (n ? n : 1));
    tab = PyMem_Malloc(sizeof(ge_cached) * 8 * (n ? n : 1));
    naf = PyMem_Malloc(256 * (n + 1));
    if (!P || !tab || !naf) { PyErr_NoMemory(); goto done; }
    long long bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        if (!ge_decode(&P[i], pb + 32 * i) || ge_has_small_order(&P[i])) { bad = -(long long)(i + 1); break; }
        ge_neg(&P[i], &P[i]);
        table8(&tab[8 * i], &P[i]);
        slide5(naf + 256 * (i + 1), sb + 32 * i);
    }
    if (!bad) {
        slide5(naf, bb.buf);
        int top = 255;
        while (top >= 0) {
            int any = naf[top] != 0;
            for (Py_ssize_t i = 0; i < n && !any; i++) any = naf[256 * (i + 1) + top] != 0;
            if (any) break;
            top--;
        }
        ge acc;
        ge_identity(&acc);
        for (int k = top; k >= 0; k--) {
            ge_dbl(&acc, &acc);
            signed char d = naf[k];
            if (d > 0) ge_add(&acc, &acc, &B_TAB[d / 2]);
            else if (d < 0) ge_sub(&acc, &acc, &B_TAB[(-d) / 2]);
            for (Py_ssize_t i = 0; i < n; i++) {
                d = naf[256 * (i + 1) + k];
                if (d > 0) ge_add(&acc, &acc, &tab[8 * i + d / 2]);
                else if (d < 0) ge_sub(&acc, &acc, &tab[8 * i + (-d) / 2]);
            }
        }
        ge_dbl(&acc, &acc);
        ge_dbl(&acc, &acc);
        ge_dbl(&acc, &acc);
        bad = ge_is_identity(&acc) ? 1 : 0;
    }
    Py_END_ALLOW_THREADS
    ret = PyLong_FromLongLong(bad);
    goto done;
bad_scalar:
    PyErr_SetString(PyExc_ValueError, "scalars must be below 2^253");
done:
    PyMem_Free(P);
    PyMem_Free(tab);
    PyMem_Free(naf);
    PyBuffer_Release(&bb);
    PyBuffer_Release(&pts);
    PyBuffer_Release(&sc);
    return ret;
}

static PyMethodDef methods[] = {
    {"check", py_check, METH_VARARGS, "check(b, points, scalars) -> 1 | 0 | -(i+1): is [8]([b]B - sum [s_i]P_i) the identity"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ed25519_batch", "Ed25519 batch-verification core (multi-scalar check)", -1, methods};

PyMODINIT_FUNC PyInit__ed25519_batch(void) {
    ge b;
    if (!ge_decode(&b, B_ENC)) {
        PyErr_SetString(PyExc_ImportError, "_ed25519_batch: base point does not decode (miscompiled)");
        return NULL;
    }
    table8(B_TAB, &b);
    return PyModule_Create(&module);
}
