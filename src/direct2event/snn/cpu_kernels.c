/* CPU kernels of direct2event.snn: the multi-step LIF neuron with reset by subtraction (forward
 * and BPTT backward) and 2x2 max-pooling with stride 2 (forward and backward).
 *
 * Compiled on first use by direct2event.snn.kernels (twice: -DREAL=float and -DREAL=double) and
 * called through ctypes on contiguous [T, N] buffers. Each neuron's time loop runs in L1 over a
 * block of BLK neurons, so every tensor is read or written exactly once per pass: the eager
 * PyTorch version needs several passes per step over tensors that do not fit in cache. Blocks
 * are shared out with OpenMP; inside a PyTorch process the loader binds this library to the
 * libgomp that PyTorch already loaded, so the kernel runs on PyTorch's own worker threads
 * (a second pool would compete with PyTorch's spinning workers for the cores).
 *
 * Channel of neuron i: (i / inner) % channels; thr holds one threshold per channel.
 * Definitions (z_t = h_t - theta, a_t the output, delta = dL/dx) as in neurons.py:
 *   h_t = beta * u_{t-1} + x_t,  u_t = h_t - theta * a_t
 *   delta_t = s'(z_t) * (g_t - beta * theta * delta_{t+1}) + beta * delta_{t+1}
 *   (the theta term is dropped when the reset is detached).
 * Build with -fno-trapping-math, without which GCC does not vectorise the comparisons. */
#include <stdint.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif
typedef REAL real;
#define BLK 512

/* First channel and position inside the channel of neuron b0, then one threshold per neuron. */
static long fill_thresholds(real *th, const real *thr, real scale, long b0, long m,
                            long channels, long inner) {
    long pos = b0 % inner, c = (b0 / inner) % channels;
    for (long j = 0; j < m; j++) {
        th[j] = scale * thr[c];
        if (++pos == inner) {
            pos = 0;
            if (++c == channels) c = 0;
        }
    }
    return m;
}

/* out[t] = a_t; keeps z_t in z_keep (atan surrogate) or the box |z_t| < w/2 in box_keep (pwl
 * surrogate, and the graded activation's own derivative); both NULL for inference. */
void lif_forward(const real *restrict x_, real *restrict out_, real *restrict z_keep,
                 uint8_t *restrict box_keep, const real *restrict thr, long steps, long n,
                 long channels, long inner, double beta_, double width_, int graded,
                 int threads) {
    const real beta = (real)beta_, inv_w = (real)(1.0 / width_), half_w = (real)(0.5 * width_);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long b0 = 0; b0 < n; b0 += BLK) {
        real u[BLK], th[BLK], zb[BLK];
        const long m = fill_thresholds(th, thr, 1, b0, n - b0 < BLK ? n - b0 : BLK, channels,
                                       inner);
        for (long j = 0; j < m; j++) u[j] = 0;
        for (long t = 0; t < steps; t++) {
            const real *restrict x = x_ + t * n + b0;
            real *restrict out = out_ + t * n + b0;
            real *restrict zk = z_keep ? z_keep + t * n + b0 : 0;
            uint8_t *restrict box = box_keep ? box_keep + t * n + b0 : 0;
            /* one loop per case keeps each loop branch-free, so that it vectorises */
            if (graded) {
                for (long j = 0; j < m; j++) {
                    real h = beta * u[j] + x[j], z = h - th[j];
                    real a = z * inv_w + (real)0.5;
                    zb[j] = z;
                    a = a < (real)0 ? (real)0 : a;
                    a = a > (real)1 ? (real)1 : a;
                    out[j] = a;
                    u[j] = h - th[j] * a;
                }
            } else {
                for (long j = 0; j < m; j++) {
                    real h = beta * u[j] + x[j], z = h - th[j];
                    real a = (real)(z >= (real)0);
                    zb[j] = z;
                    out[j] = a;
                    u[j] = h - th[j] * a;
                }
            }
            /* what the backward pass needs, from z_t still in L1 */
            if (zk)
                for (long j = 0; j < m; j++) zk[j] = zb[j];
            if (box)
                for (long j = 0; j < m; j++) box[j] = (uint8_t)((zb[j] < half_w) & (zb[j] > -half_w));
        }
    }
}

/* grad_x from grad_out and what the forward kept (exactly one of z_keep, box_keep). grad_x may
 * be the z_keep buffer itself: each z_t is read before grad_x[t] overwrites it. */
void lif_backward(const real *restrict g_, real *grad_x, const real *z_keep,
                  const uint8_t *restrict box_keep, const real *restrict thr, long steps, long n,
                  long channels, long inner, double beta_, double width_, int detach_reset,
                  int threads) {
    const real beta = (real)beta_, inv_w = (real)(1.0 / width_);
    const real k = (real)(3.14159265358979323846 / width_); /* atan: pi/2 * alpha, alpha = 2/w */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long b0 = 0; b0 < n; b0 += BLK) {
        real d[BLK], bth[BLK];
        const long m = fill_thresholds(bth, thr, detach_reset ? (real)0 : beta, b0,
                                       n - b0 < BLK ? n - b0 : BLK, channels, inner);
        for (long j = 0; j < m; j++) d[j] = 0;
        for (long t = steps - 1; t >= 0; t--) {
            const real *restrict g = g_ + t * n + b0;
            real *gx = grad_x + t * n + b0;
            if (box_keep) {
                const uint8_t *restrict box = box_keep + t * n + b0;
                for (long j = 0; j < m; j++) {
                    real fp = (real)box[j] * inv_w;
                    real v = fp * (g[j] - bth[j] * d[j]) + beta * d[j];
                    gx[j] = v;
                    d[j] = v;
                }
            } else {
                const real *zk = z_keep + t * n + b0;
                for (long j = 0; j < m; j++) {
                    real kz = k * zk[j];
                    real fp = inv_w / ((real)1 + kz * kz);
                    real v = fp * (g[j] - bth[j] * d[j]) + beta * d[j];
                    gx[j] = v;
                    d[j] = v;
                }
            }
        }
    }
}

/* 2x2 max-pooling, stride 2, no padding, floor mode, over planes of h x w (N*C planes). The
 * winner of each window is kept as one byte (0..3, row-major in the window) instead of
 * PyTorch's int64 index; ties and NaN resolve as in PyTorch's CPU kernel (the first maximum
 * in scan order wins; a NaN replaces the maximum), so gradients match it exactly. */
#define SCR 4096 /* scratch elements per thread: a block of whole rows, in L1/L2 */

/* Rows too long for the scratch: one window at a time. */
static void maxpool2_forward_rows(const real *restrict x, real *restrict out,
                                  uint8_t *restrict idx, long p, long h, long w) {
    const long oh = h / 2, ow = w / 2;
    for (long i = 0; i < oh; i++) {
        const real *restrict r0 = x + (p * h + 2 * i) * w;
        const real *restrict r1 = r0 + w;
        real *restrict o = out + (p * oh + i) * ow;
        uint8_t *restrict k = idx ? idx + (p * oh + i) * ow : 0;
        for (long j = 0; j < ow; j++) {
            const long c = 2 * j;
            real best = r0[c], v = r0[c + 1];
            int win = 0, take = (v > best) | (v != v);
            best = take ? v : best;
            win = take ? 1 : win;
            v = r1[c];
            take = (v > best) | (v != v);
            best = take ? v : best;
            win = take ? 2 : win;
            v = r1[c + 1];
            take = (v > best) | (v != v);
            best = take ? v : best;
            win = take ? 3 : win;
            o[j] = best;
            if (k) k[j] = (uint8_t)win;
        }
    }
}

/* Rows of at most 16 windows and even width (MNIST's layers: 14 and 7 windows) are too short
 * for a loop per row to vectorise, so they go in two stages over a block of R row pairs held
 * in scratch, each one long branch-free loop: (1) the two columns of every window in every row,
 * one stride-2 loop over the block (its rows are contiguous); (2) the two rows, one loop where
 * position e is compared with e + ow (the second half of each row pair's range reads the next
 * pair: computed and dropped). 2-3x faster on MNIST's layers; longer or odd rows (simulated
 * N-MNIST's 34 and 17 px) are as fast or faster one row at a time (docs/archive/diary.md).
 * Stage 2 takes the second row's winner only when it is greater or NaN, which with stage 1's
 * rule gives PyTorch's window order (the first maximum; the last NaN). */
void maxpool2_forward(const real *restrict x, real *restrict out, uint8_t *restrict idx,
                      long planes, long h, long w, int threads) {
    const long oh = h / 2, ow = w / 2;
    const long rows = ow > 0 ? SCR / (2 * ow) : 0;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long p = 0; p < planes; p++) {
        if (rows < 1 || w != 2 * ow || ow > 16) {
            maxpool2_forward_rows(x, out, idx, p, h, w);
            continue;
        }
        real hm[SCR], vm[SCR];
        uint8_t hi[SCR], vi[SCR];
        for (long q0 = 0; q0 < oh; q0 += rows) {
            const long R = oh - q0 < rows ? oh - q0 : rows, n = 2 * R * ow;
            const real *restrict xb = x + (p * h + 2 * q0) * w;
            for (long e = 0; e < n; e++) {
                const real a = xb[2 * e], b = xb[2 * e + 1];
                const int t = (b > a) | (b != b);
                hm[e] = t ? b : a;
                hi[e] = (uint8_t)t;
            }
            for (long e = 0; e < n - ow; e++) {
                const real a = hm[e], b = hm[e + ow];
                const int t = (b > a) | (b != b);
                const uint8_t mt = (uint8_t)-t, i0 = hi[e], i1 = (uint8_t)(hi[e + ow] + 2);
                vm[e] = t ? b : a;
                vi[e] = (uint8_t)((i1 & mt) | (i0 & (uint8_t)~mt));
            }
            real *restrict o = out + (p * oh + q0) * ow;
            for (long r = 0; r < R; r++) memcpy(o + r * ow, vm + 2 * r * ow, ow * sizeof(real));
            if (idx) {
                uint8_t *restrict k = idx + (p * oh + q0) * ow;
                for (long r = 0; r < R; r++) memcpy(k + r * ow, vi + 2 * r * ow, ow);
            }
        }
    }
}

/* Gradient of the pooling: each input gets its window's gradient if it won, else 0 (the
 * windows do not overlap, so every input is written once and no zero-fill pass is needed).
 * Per block of row pairs: every input row's (gradient, winner - 2 * row in pair) is laid out in
 * scratch with short copies, then one stride-2 loop writes the block's rows. */
void maxpool2_backward(const real *restrict g, const uint8_t *restrict idx, real *restrict gx,
                       long planes, long h, long w, int threads) {
    const long oh = h / 2, ow = w / 2;
    const long rows = ow > 0 ? SCR / (2 * ow) : 0;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long p = 0; p < planes; p++) {
        real val[SCR];
        uint8_t code[SCR];
        const long step = rows < 1 ? 1 : rows;
        for (long q0 = 0; q0 < oh; q0 += step) {
            const long R = oh - q0 < step ? oh - q0 : step;
            const real *restrict gi = g + (p * oh + q0) * ow;
            const uint8_t *restrict k = idx + (p * oh + q0) * ow;
            real *restrict gb = gx + (p * h + 2 * q0) * w;
            if (rows < 1) { /* rows too long for the scratch: one window at a time */
                real *restrict r0 = gb, *restrict r1 = gb + w;
                for (long j = 0; j < ow; j++) {
                    const real v = gi[j];
                    r0[2 * j] = k[j] == 0 ? v : (real)0;
                    r0[2 * j + 1] = k[j] == 1 ? v : (real)0;
                    r1[2 * j] = k[j] == 2 ? v : (real)0;
                    r1[2 * j + 1] = k[j] == 3 ? v : (real)0;
                }
                if (w & 1) r0[w - 1] = r1[w - 1] = 0;
                continue;
            }
            for (long r = 0; r < R; r++) {
                memcpy(val + 2 * r * ow, gi + r * ow, ow * sizeof(real));
                memcpy(val + (2 * r + 1) * ow, gi + r * ow, ow * sizeof(real));
                for (long j = 0; j < ow; j++) {
                    code[2 * r * ow + j] = k[r * ow + j];
                    code[(2 * r + 1) * ow + j] = (uint8_t)(k[r * ow + j] - 2);
                }
            }
            if (w == 2 * ow) {
                for (long e = 0; e < 2 * R * ow; e++) {
                    const real v = val[e];
                    const uint8_t c = code[e];
                    gb[2 * e] = c == 0 ? v : (real)0;
                    gb[2 * e + 1] = c == 1 ? v : (real)0;
                }
            } else {
                for (long r = 0; r < 2 * R; r++) {
                    for (long j = 0; j < ow; j++) {
                        const real v = val[r * ow + j];
                        const uint8_t c = code[r * ow + j];
                        gb[r * w + 2 * j] = c == 0 ? v : (real)0;
                        gb[r * w + 2 * j + 1] = c == 1 ? v : (real)0;
                    }
                    gb[r * w + w - 1] = 0;
                }
            }
        }
        if (h & 1)
            for (long j = 0; j < w; j++) gx[(p * h + h - 1) * w + j] = 0;
    }
}
