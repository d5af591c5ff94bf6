/* Fused CPU kernels for the moment ReLU, Clark's 2x2 max-pool, and the two in turn (noiselab.moments), float32.

   Each kernel is one pass over memory: it reads its inputs once and writes its outputs once, and the backward
   recomputes what the forward derived instead of reading it back (the torch formulation runs a pass per
   element-wise op). The formulas are the ones noiselab.moments states, in the same order of pairs;
   noiselab/native/__init__.py builds this file with the system's C compiler and falls back to the torch
   formulation when there is none.

   Phi and phi come from one exp: Phi(-|a|) = phi(a) t h(2t - 1) with t = 3 / (3 + |a|), where h is a
   Chebyshev series fitted to the Mills ratio Q(u) / phi(u) divided by t (relative error 1.5e-9 in exact
   arithmetic for every u >= 0; noiselab/native/__init__.py says how the coefficients were made). This keeps the
   lower tail's relative precision as erfc does. exp is Cephes' expf polynomial, written out so that the compiler
   vectorizes it. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define VAR_FLOOR 1e-12f
#define INV_SQRT_2PI 0.398942280401432678f
/* Work is split over OpenMP's threads (torch's own, where torch loaded libgomp: the same runtime, the same thread
   count) in chunks of CHUNK elements or BLOCK pool windows; below PARALLEL_MIN elements it runs on one thread. */
#define CHUNK 4096
#define BLOCK 256
#define PARALLEL_MIN 32768

static const float CHEB[13] = {
    7.02219709111595036e-01f, 4.51965190742205869e-01f, 9.20537974146036359e-02f, 8.30041323006478968e-03f,
    -9.66718476063732363e-04f, -2.84650925789873698e-04f, 1.77134425591754176e-05f, 9.80247969687453166e-06f,
    -8.20208397756608334e-07f, -3.65738407339638119e-07f, 5.78630435562862383e-08f, 1.24294391205218474e-08f,
    -4.28672005803026181e-09f};

static inline float bits_to_float(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* e^x for x <= 0: 0 below -103 (where float32's e^x is 0 or the smallest subnormals). A NaN x is taken as -103
   (the integer conversion below is undefined for a NaN); normal_parts carries the NaN on by its other terms. */
static inline float exp_nonpositive(float x) {
    float xc = x > -103.0f ? x : -103.0f;
    float n = rintf(xc * 1.44269504088896341f);
    float r = fmaf(n, -0.693359375f, xc);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    int32_t k = (int32_t)n; /* in [-149, 0]: 2^k as two factors, so that subnormal results round once */
    int32_t k1 = k / 2, k2 = k - k1;
    float result = p * bits_to_float((k1 + 127) << 23) * bits_to_float((k2 + 127) << 23);
    return x < -103.0f ? 0.0f : result;
}

/* Phi(a), Phi(-a) and phi(a). a^2's rounding error is carried into the exp (its low part, exactly), so that
   phi keeps its relative precision in the tails. */
static inline void normal_parts(float a, float *cdf, float *cdf_neg, float *pdf) {
    float a2 = a * a;
    float low = a2 >= 1e30f ? 0.0f : fmaf(a, a, -a2); /* NaN for a NaN a: phi then NaN too */
    float e = exp_nonpositive(-0.5f * a2);
    float density = INV_SQRT_2PI * fmaf(e, -0.5f * low, e);
    float u = fabsf(a);
    float t = 3.0f / (3.0f + u);
    float y = 2.0f * t - 1.0f, y2 = 2.0f * y;
    /* Clenshaw's recurrence, written out (a loop here would keep the compiler from vectorizing the callers) */
    float b12 = CHEB[12];
    float b11 = fmaf(y2, b12, CHEB[11]);
    float b10 = fmaf(y2, b11, CHEB[10] - b12);
    float b9 = fmaf(y2, b10, CHEB[9] - b11);
    float b8 = fmaf(y2, b9, CHEB[8] - b10);
    float b7 = fmaf(y2, b8, CHEB[7] - b9);
    float b6 = fmaf(y2, b7, CHEB[6] - b8);
    float b5 = fmaf(y2, b6, CHEB[5] - b7);
    float b4 = fmaf(y2, b5, CHEB[4] - b6);
    float b3 = fmaf(y2, b4, CHEB[3] - b5);
    float b2 = fmaf(y2, b3, CHEB[2] - b4);
    float b1 = fmaf(y2, b2, CHEB[1] - b3);
    float h = fmaf(y, b1, CHEB[0] - b2);
    float tail = density * t * h; /* Phi(-|a|) */
    float body = 1.0f - tail;
    *cdf = a >= 0.0f ? body : tail;
    *cdf_neg = a >= 0.0f ? tail : body;
    *pdf = density;
}

/* Phi(a), Phi(-a) and phi(a) for n values (for the tests: the kernels call normal_parts inline) */
void noiselab_normal_parts(const float *a, float *cdf, float *cdf_neg, float *pdf, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
        normal_parts(a[i], &cdf[i], &cdf_neg[i], &pdf[i]);
}

/* ---- the moment ReLU (noiselab.moments._MomentReLU): var_step 0 reads one variance for every element ---- */

/* One element's rule, and what its gradient needs (a Relu), so that the fused ReLU -> pool below shares it. */
typedef struct {
    float inverse_s, a, cdf, q, pdf, e, keep, grows;
} Relu;

static inline Relu relu_moment(float m, float v, float *out_mean, float *out_var) {
    Relu r;
    float vf = v < VAR_FLOOR ? VAR_FLOOR : v;
    float s = sqrtf(vf);
    r.inverse_s = 1.0f / s;
    r.a = m * r.inverse_s;
    normal_parts(r.a, &r.cdf, &r.q, &r.pdf);
    r.e = fmaf(m, r.cdf, s * r.pdf);
    float ratio = (r.q * r.cdf) * (r.a * r.a) + r.cdf - r.pdf * fmaf(r.a, r.cdf - r.q, r.pdf);
    r.keep = (ratio >= 0.0f && v > 0.0f) ? 1.0f : 0.0f;
    r.grows = v > VAR_FLOOR ? 1.0f : 0.0f;
    *out_mean = r.e;
    *out_var = (ratio >= 0.0f && v > 0.0f) ? ratio * vf : 0.0f;
    return r;
}

/* selects where the torch formulation has torch.where (a non-finite gradient where the mask is off gives 0) */
static inline float relu_gradient(Relu r, float gm, float gv, float *d_var) {
    gv = r.keep != 0.0f ? gv : 0.0f;
    float dv = gm * r.pdf * (0.5f * r.inverse_s) + gv * (r.cdf - r.pdf * fmaf(r.a, r.cdf, r.pdf));
    *d_var = r.grows != 0.0f ? dv : 0.0f;
    return fmaf(gm, r.cdf, 2.0f * gv * r.e * r.q);
}

static inline void relu_forward(const float *mean, const float *var, int64_t var_step, float *out_mean,
                                float *out_var, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
        relu_moment(mean[i], var[i * var_step], &out_mean[i], &out_var[i]);
}

void noiselab_relu_forward(const float *mean, const float *var, int64_t var_step, float *out_mean, float *out_var,
                           int64_t n) {
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; ++c) {
        int64_t begin = c * CHUNK, count = n - begin < CHUNK ? n - begin : CHUNK;
        if (var_step == 0) /* one variance: its square root and its floor hoisted out of the loop */
            relu_forward(mean + begin, var, 0, out_mean + begin, out_var + begin, count);
        else
            relu_forward(mean + begin, var + begin, 1, out_mean + begin, out_var + begin, count);
    }
}

static inline void relu_backward(const float *mean, const float *var, int64_t var_step, const float *grad_mean,
                                 const float *grad_var, float *d_mean, float *d_var, int64_t n, int with_var) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float om, ov, dv;
        Relu r = relu_moment(mean[i], var[i * var_step], &om, &ov);
        d_mean[i] = relu_gradient(r, grad_mean[i], grad_var[i], &dv);
        if (with_var)
            d_var[i] = dv;
    }
}

/* d_var NULL: the variance's gradient is not wanted */
void noiselab_relu_backward(const float *mean, const float *var, int64_t var_step, const float *grad_mean,
                            const float *grad_var, float *d_mean, float *d_var, int64_t n) {
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; ++c) {
        int64_t begin = c * CHUNK, count = n - begin < CHUNK ? n - begin : CHUNK;
        const float *v = var + begin * var_step, *gm = grad_mean + begin, *gv = grad_var + begin;
        float *dm = d_mean + begin, *dv = d_var ? d_var + begin : d_var;
        if (var_step == 0 && !d_var) /* where the noise enters, sigma fixed */
            relu_backward(mean + begin, v, 0, gm, gv, dm, dv, count, 0);
        else if (var_step == 0)
            relu_backward(mean + begin, v, 0, gm, gv, dm, dv, count, 1);
        else if (!d_var)
            relu_backward(mean + begin, v, 1, gm, gv, dm, dv, count, 0);
        else
            relu_backward(mean + begin, v, 1, gm, gv, dm, dv, count, 1);
    }
}

/* ---- Clark's max of two (noiselab.moments._max2_forward / _max2_backward): the forward keeps what the backward
   needs in a Max2, so a tree's backward evaluates each pair's Phi once ---- */

typedef struct {
    float inverse_theta, alpha, cdf, cneg, pdf, difference, theta, grows, positive;
} Max2;

static inline Max2 max2_forward(float ma, float va, float mb, float vb, float *om, float *ov) {
    Max2 s;
    float total = va + vb;
    float theta2 = total < VAR_FLOOR ? VAR_FLOOR : total;
    s.theta = sqrtf(theta2);
    s.inverse_theta = 1.0f / s.theta;
    s.alpha = (ma - mb) * s.inverse_theta;
    normal_parts(s.alpha, &s.cdf, &s.cneg, &s.pdf);
    *om = fmaf(s.theta, fmaf(s.alpha, s.cdf, s.pdf), mb);
    float spread = (s.cdf * s.cneg) * (s.alpha * s.alpha) - s.pdf * fmaf(s.alpha, s.cdf - s.cneg, s.pdf);
    s.difference = va - vb;
    float raw = fmaf(theta2, spread, fmaf(s.difference, s.cdf, vb));
    *ov = raw < 0.0f ? 0.0f : raw;
    s.grows = total > VAR_FLOOR ? 1.0f : 0.0f;
    s.positive = raw >= 0.0f ? 1.0f : 0.0f;
    return s;
}

static inline void max2_backward(Max2 s, float gm, float gv, float *dma, float *dva, float *dmb, float *dvb) {
    gv *= s.positive;
    float alpha_term = s.pdf * s.difference * s.inverse_theta;
    float dv_dmean = fmaf(fmaf(s.pdf, s.cneg - s.cdf, 2.0f * s.alpha * (s.cdf * s.cneg)), s.theta, alpha_term);
    *dma = fmaf(gv, dv_dmean, gm * s.cdf);
    *dmb = fmaf(-gv, dv_dmean, gm * s.cneg);
    float half_inverse = 0.5f * s.inverse_theta;
    float through_theta = -s.pdf * fmaf(s.alpha, s.cdf - s.cneg, 2.0f * s.pdf) * 0.5f
                          - s.alpha * alpha_term * half_inverse;
    float common = s.grows * fmaf(gv, through_theta, gm * s.pdf * half_inverse);
    *dva = fmaf(gv, s.cdf, common);
    *dvb = fmaf(gv, s.cneg, common);
}

/* ---- Clark's 2x2 pool with stride 2, over a (planes, H, W) input in the usual layout (unit 1: planes = B * C) or
   a (B, H, W, C) one, channels-last (unit C), H and W even, dense. Output row r (of B * C * H/2 or B * H/2) reads
   input rows 2r and 2r + 1, each of width * unit floats; its outputs are the windows' (column, channel) pairs in
   the order they are stored. Window (top-left, bottom-left, top-right, bottom-right) = (0, 1, 2, 3): left =
   max(0, 1), right = max(2, 3), out = max(left, right), the pairs of noiselab.moments._ClarkPool2x2. The windows
   are gathered into blocks of outputs [start, start + count) so that the arithmetic runs over contiguous arrays.
   ---- */

/* Copies the windows of outputs [begin, begin + count) between x and corners: into corners where to_corners (the
   gather), back into x otherwise (the scatter). to_corners is a constant at every call, so each direction compiles
   to its own loops. unit 1 (the usual layout) walks each output row's windows in one loop over its columns, which
   the compiler vectorizes (the per-element bookkeeping of the general walk cost as much as the pool's arithmetic). */
static inline __attribute__((always_inline)) void move_windows(float *x, int64_t width, int64_t unit, int64_t begin,
                                                               int64_t count, float corners[4][BLOCK],
                                                               int to_corners) {
    int64_t columns = width / 2;
    if (unit == 1) {
        int64_t row = begin / columns, column = begin % columns;
        for (int64_t k = 0; k < count; column = 0, ++row) {
            int64_t n = columns - column < count - k ? columns - column : count - k;
            float *top = x + 2 * row * width + 2 * column, *bottom = top + width;
            float *c0 = corners[0] + k, *c1 = corners[1] + k, *c2 = corners[2] + k, *c3 = corners[3] + k;
            if (to_corners) {
                for (int64_t j = 0; j < n; ++j) {
                    c0[j] = top[2 * j];
                    c1[j] = bottom[2 * j];
                    c2[j] = top[2 * j + 1];
                    c3[j] = bottom[2 * j + 1];
                }
            } else {
                for (int64_t j = 0; j < n; ++j) {
                    top[2 * j] = c0[j];
                    bottom[2 * j] = c1[j];
                    top[2 * j + 1] = c2[j];
                    bottom[2 * j + 1] = c3[j];
                }
            }
            k += n;
        }
        return;
    }
    int64_t row_length = width * unit, per_row = columns * unit;
    int64_t row = begin / per_row, column = begin % per_row / unit, channel = begin % unit;
    for (int64_t k = 0; k < count; ++k) {
        float *corner[4], *top = x + 2 * row * row_length + 2 * column * unit + channel;
        corner[0] = top, corner[1] = top + row_length, corner[2] = top + unit, corner[3] = top + row_length + unit;
        for (int i = 0; i < 4; ++i) {
            if (to_corners)
                corners[i][k] = *corner[i];
            else
                *corner[i] = corners[i][k];
        }
        if (++channel == unit) {
            channel = 0;
            if (++column == columns) {
                column = 0;
                ++row;
            }
        }
    }
}

static void gather(const float *x, int64_t width, int64_t unit, int64_t begin, int64_t count,
                   float corners[4][BLOCK]) {
    move_windows((float *)x, width, unit, begin, count, corners, 1); /* only read: the cast drops no promise */
}

static void scatter(float *x, int64_t width, int64_t unit, int64_t begin, int64_t count, float corners[4][BLOCK]) {
    move_windows(x, width, unit, begin, count, corners, 0);
}

static void pool_forward(const float *mean, const float *var, float *out_mean, float *out_var, int64_t width,
                         int64_t unit, int64_t start, int64_t count) {
    float m[4][BLOCK], v[4][BLOCK];
    gather(mean, width, unit, start, count, m);
    gather(var, width, unit, start, count, v);
    float *om = out_mean + start, *ov = out_var + start;
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) {
        float lm, lv, rm, rv;
        max2_forward(m[0][k], v[0][k], m[1][k], v[1][k], &lm, &lv);
        max2_forward(m[2][k], v[2][k], m[3][k], v[3][k], &rm, &rv);
        max2_forward(lm, lv, rm, rv, &om[k], &ov[k]);
    }
}

static void pool_backward(const float *mean, const float *var, const float *grad_mean, const float *grad_var,
                          float *d_mean, float *d_var, int64_t width, int64_t unit, int64_t start, int64_t count) {
    float m[4][BLOCK], v[4][BLOCK], dm[4][BLOCK], dv[4][BLOCK];
    gather(mean, width, unit, start, count, m);
    gather(var, width, unit, start, count, v);
    const float *gm = grad_mean + start, *gv = grad_var + start;
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) {
        float lm, lv, rm, rv, om, ov, dlm, dlv, drm, drv;
        Max2 left = max2_forward(m[0][k], v[0][k], m[1][k], v[1][k], &lm, &lv);
        Max2 right = max2_forward(m[2][k], v[2][k], m[3][k], v[3][k], &rm, &rv);
        Max2 top = max2_forward(lm, lv, rm, rv, &om, &ov);
        max2_backward(top, gm[k], gv[k], &dlm, &dlv, &drm, &drv);
        max2_backward(left, dlm, dlv, &dm[0][k], &dv[0][k], &dm[1][k], &dv[1][k]);
        max2_backward(right, drm, drv, &dm[2][k], &dv[2][k], &dm[3][k], &dv[3][k]);
    }
    scatter(d_mean, width, unit, start, count, dm);
    scatter(d_var, width, unit, start, count, dv);
}

/* n: the number of outputs (B * C * H/2 * W/2) */
void noiselab_pool_forward(const float *mean, const float *var, float *out_mean, float *out_var, int64_t width,
                           int64_t unit, int64_t n) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN / 4)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * BLOCK;
        pool_forward(mean, var, out_mean, out_var, width, unit, start, n - start < BLOCK ? n - start : BLOCK);
    }
}

void noiselab_pool_backward(const float *mean, const float *var, const float *grad_mean, const float *grad_var,
                            float *d_mean, float *d_var, int64_t width, int64_t unit, int64_t n) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN / 4)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * BLOCK;
        int64_t count = n - start < BLOCK ? n - start : BLOCK;
        pool_backward(mean, var, grad_mean, grad_var, d_mean, d_var, width, unit, start, count);
    }
}

/* ---- the moment ReLU, then Clark's 2x2 pool, in one pass (noiselab.moments.relu_pool_moments): the ReLU's outputs
   and their gradients never go to memory. var_step 0: one variance for every element; d_var NULL: its gradient is
   not wanted. ---- */

static void relu_pool_forward(const float *mean, const float *var, int64_t var_step, float *out_mean,
                              float *out_var, int64_t width, int64_t unit, int64_t start, int64_t count) {
    float m[4][BLOCK], v[4][BLOCK];
    gather(mean, width, unit, start, count, m);
    if (var_step)
        gather(var, width, unit, start, count, v);
    float *om = out_mean + start, *ov = out_var + start;
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) {
        float rm[4], rv[4], lm, lv, qm, qv; /* the four corners written out: a loop here keeps this one scalar */
        relu_moment(m[0][k], var_step ? v[0][k] : var[0], &rm[0], &rv[0]);
        relu_moment(m[1][k], var_step ? v[1][k] : var[0], &rm[1], &rv[1]);
        relu_moment(m[2][k], var_step ? v[2][k] : var[0], &rm[2], &rv[2]);
        relu_moment(m[3][k], var_step ? v[3][k] : var[0], &rm[3], &rv[3]);
        max2_forward(rm[0], rv[0], rm[1], rv[1], &lm, &lv);
        max2_forward(rm[2], rv[2], rm[3], rv[3], &qm, &qv);
        max2_forward(lm, lv, qm, qv, &om[k], &ov[k]);
    }
}

static void relu_pool_backward(const float *mean, const float *var, int64_t var_step, const float *grad_mean,
                               const float *grad_var, float *d_mean, float *d_var, int64_t width, int64_t unit,
                               int64_t start, int64_t count) {
    float m[4][BLOCK], v[4][BLOCK], dm[4][BLOCK], dv[4][BLOCK];
    gather(mean, width, unit, start, count, m);
    if (var_step)
        gather(var, width, unit, start, count, v);
    const float *gm = grad_mean + start, *gv = grad_var + start;
#pragma omp simd
    for (int64_t k = 0; k < count; ++k) {
        float rm[4], rv[4], gm4[4], gv4[4], lm, lv, qm, qv, om, ov;
        Relu r0 = relu_moment(m[0][k], var_step ? v[0][k] : var[0], &rm[0], &rv[0]);
        Relu r1 = relu_moment(m[1][k], var_step ? v[1][k] : var[0], &rm[1], &rv[1]);
        Relu r2 = relu_moment(m[2][k], var_step ? v[2][k] : var[0], &rm[2], &rv[2]);
        Relu r3 = relu_moment(m[3][k], var_step ? v[3][k] : var[0], &rm[3], &rv[3]);
        Max2 left = max2_forward(rm[0], rv[0], rm[1], rv[1], &lm, &lv);
        Max2 right = max2_forward(rm[2], rv[2], rm[3], rv[3], &qm, &qv);
        Max2 top = max2_forward(lm, lv, qm, qv, &om, &ov);
        float dlm, dlv, dqm, dqv;
        max2_backward(top, gm[k], gv[k], &dlm, &dlv, &dqm, &dqv);
        max2_backward(left, dlm, dlv, &gm4[0], &gv4[0], &gm4[1], &gv4[1]);
        max2_backward(right, dqm, dqv, &gm4[2], &gv4[2], &gm4[3], &gv4[3]);
        dm[0][k] = relu_gradient(r0, gm4[0], gv4[0], &dv[0][k]);
        dm[1][k] = relu_gradient(r1, gm4[1], gv4[1], &dv[1][k]);
        dm[2][k] = relu_gradient(r2, gm4[2], gv4[2], &dv[2][k]);
        dm[3][k] = relu_gradient(r3, gm4[3], gv4[3], &dv[3][k]);
    }
    scatter(d_mean, width, unit, start, count, dm);
    if (d_var)
        scatter(d_var, width, unit, start, count, dv);
}

void noiselab_relu_pool_forward(const float *mean, const float *var, int64_t var_step, float *out_mean,
                                float *out_var, int64_t width, int64_t unit, int64_t n) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN / 4)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        if (var_step)
            relu_pool_forward(mean, var, 1, out_mean, out_var, width, unit, start, count);
        else
            relu_pool_forward(mean, var, 0, out_mean, out_var, width, unit, start, count);
    }
}

void noiselab_relu_pool_backward(const float *mean, const float *var, int64_t var_step, const float *grad_mean,
                                 const float *grad_var, float *d_mean, float *d_var, int64_t width, int64_t unit,
                                 int64_t n) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN / 4)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t start = b * BLOCK, count = n - start < BLOCK ? n - start : BLOCK;
        if (var_step)
            relu_pool_backward(mean, var, 1, grad_mean, grad_var, d_mean, d_var, width, unit, start, count);
        else
            relu_pool_backward(mean, var, 0, grad_mean, grad_var, d_mean, d_var, width, unit, start, count);
    }
}
