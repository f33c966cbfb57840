// std::vector whose storage starts on a 64-byte boundary (a cache line, one AVX-512 vector, one
// AMX tile row). The amx path's tile products run 2-2.8x slower when their rows straddle two
// cache lines (benchmarks/amx_gemm: 8.1-10.0 ns per TDPBF16PS on cache lines, 18-24 ns 16 bytes
// off them, on this project's AMX VM), and malloc only promises 16 bytes.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace pasa {

constexpr std::size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  explicit CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{kCacheLine})); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t{kCacheLine}); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace pasa
