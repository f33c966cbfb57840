// The machine's fp32 multiply-add ceiling with 1..N busy cores: each thread runs independent
// AVX-512 (or AVX2) FMA chains on registers only (no memory traffic), so the per-thread rate
// tracks the core clock under that load. Built and run by benchmarks/fma_ceiling.py.
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define STORE _mm512_storeu_ps
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define STORE _mm256_storeu_ps
#endif

static long iters;
static pthread_barrier_t barrier;
static double seconds[1024];
static float sink[1024];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Twelve independent chains in named variables (an array would be kept in memory).
#define CHAINS 12
#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(i) vec acc##i = SET1(1.0f + (float)(i));
#define STEP(i) acc##i = FMA(acc##i, a, b);
#define KEEP(i) __asm__ volatile("" : "+v"(acc##i));
#define FOLD(i) total = FMA(total, a, acc##i);

static void* worker(void* arg) {
  const long id = (long)arg;
  EACH(DECL)
  const vec a = SET1(0.999999f), b = SET1(1e-7f);
  pthread_barrier_wait(&barrier);
  const double t0 = now();
  for (long i = 0; i < iters; ++i) {
    EACH(STEP)
    EACH(KEEP)  // no folding of the chains across iterations
  }
  seconds[id] = now() - t0;
  vec total = SET1(0.0f);
  EACH(FOLD)
  float out[LANES];
  STORE(out, total);
  sink[id] = out[0];
  return NULL;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  iters = argc > 2 ? atol(argv[2]) : 200000000L;
  if (threads < 1 || threads > 1024) return 2;
  pthread_t tid[1024];
  pthread_barrier_init(&barrier, NULL, (unsigned)threads);
  for (long t = 0; t < threads; ++t) pthread_create(&tid[t], NULL, worker, (void*)t);
  double total = 0.0, slowest = 0.0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    total += seconds[t];
    if (seconds[t] > slowest) slowest = seconds[t];
  }
  const double flops = 2.0 * LANES * CHAINS * (double)iters;
  printf("%d %.2f %.2f %d\n", threads, flops / (total / threads) / 1e9, flops * threads / slowest / 1e9, LANES);
  return 0;
}
