/* The BLAS and LAPACK entry points MLX's CPU backend calls, forwarded to the
 * OpenBLAS of the PyPI wheel scipy-openblas32, whose symbols all carry a
 * `scipy_` prefix (so that it never clashes with another BLAS in a process).
 *
 * model/blas.py loads libscipy_openblas with RTLD_GLOBAL, then this library
 * with RTLD_GLOBAL, both before the first `import mlx`. The dynamic linker
 * searches the global scope before a library's own dependencies, so libmlx's
 * `cblas_sgemm` binds here instead of to the reference BLAS its wheel bundles.
 * The `scipy_` symbols stay undefined at link time and are resolved when this
 * library loads, so building it needs a C compiler and nothing else.
 *
 * The list is what libmlx.so (mlx 0.32) leaves undefined, from
 * `nm -D --undefined-only libmlx.so`; tests/test_blas.py checks it still is.
 */
#include <stddef.h>

/* scipy-openblas32 is the LP64 build: 32-bit integers, as MLX expects.
 * CBLAS enums are passed as ints. */
typedef int blasint;

void scipy_cblas_sgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, float alpha,
                       const float *a, blasint lda, const float *b, blasint ldb, float beta, float *c, blasint ldc);
void scipy_cblas_dgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, double alpha,
                       const double *a, blasint lda, const double *b, blasint ldb, double beta, double *c,
                       blasint ldc);
void scipy_cblas_cgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, const void *alpha,
                       const void *a, blasint lda, const void *b, blasint ldb, const void *beta, void *c,
                       blasint ldc);

void cblas_sgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, float alpha, const float *a,
                 blasint lda, const float *b, blasint ldb, float beta, float *c, blasint ldc) {
    scipy_cblas_sgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, double alpha, const double *a,
                 blasint lda, const double *b, blasint ldb, double beta, double *c, blasint ldc) {
    scipy_cblas_dgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int transa, int transb, blasint m, blasint n, blasint k, const void *alpha,
                 const void *a, blasint lda, const void *b, blasint ldb, const void *beta, void *c, blasint ldc) {
    scipy_cblas_cgemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* LAPACK's Fortran interface passes every argument by reference, and each
 * CHARACTER argument adds one hidden length (size_t) after the others. So a
 * forwarder needs only the two counts: Pn/An are n pointer parameters and
 * arguments, Ln/Sn the hidden lengths (counts from OpenBLAS's lapack.h). */
#define P1 void *a1
#define P2 P1, void *a2
#define P3 P2, void *a3
#define P4 P3, void *a4
#define P5 P4, void *a5
#define P6 P5, void *a6
#define P7 P6, void *a7
#define P8 P7, void *a8
#define P9 P8, void *a9
#define P10 P9, void *a10
#define P11 P10, void *a11
#define P12 P11, void *a12
#define P13 P12, void *a13
#define P14 P13, void *a14
#define P15 P14, void *a15
#define A1 a1
#define A2 A1, a2
#define A3 A2, a3
#define A4 A3, a4
#define A5 A4, a5
#define A6 A5, a6
#define A7 A6, a7
#define A8 A7, a8
#define A9 A8, a9
#define A10 A9, a10
#define A11 A10, a11
#define A12 A11, a12
#define A13 A12, a13
#define A14 A13, a14
#define A15 A14, a15
#define L1 , size_t s1
#define L2 L1, size_t s2
#define S1 , s1
#define S2 S1, s2

#define LAPACK(name, params, args)   \
    void scipy_##name##_(params);    \
    void name##_(params) { scipy_##name##_(args); }

/* LU, inverse, QR, Cholesky and triangular inverse. */
LAPACK(sgetrf, P6, A6)
LAPACK(dgetrf, P6, A6)
LAPACK(sgetri, P7, A7)
LAPACK(dgetri, P7, A7)
LAPACK(sgeqrf, P8, A8)
LAPACK(dgeqrf, P8, A8)
LAPACK(sorgqr, P9, A9)
LAPACK(dorgqr, P9, A9)
LAPACK(spotrf, P5 L1, A5 S1)
LAPACK(dpotrf, P5 L1, A5 S1)
LAPACK(strtri, P6 L2, A6 S2)
LAPACK(dtrtri, P6 L2, A6 S2)
/* Singular values and eigenvalues. */
LAPACK(sgesdd, P14 L1, A14 S1)
LAPACK(dgesdd, P14 L1, A14 S1)
LAPACK(cgesdd, P15 L1, A15 S1)
LAPACK(ssyevd, P11 L2, A11 S2)
LAPACK(dsyevd, P11 L2, A11 S2)
LAPACK(cheevd, P13 L2, A13 S2)
LAPACK(sgeev, P14 L2, A14 S2)
LAPACK(dgeev, P14 L2, A14 S2)
LAPACK(cgeev, P14 L2, A14 S2)
